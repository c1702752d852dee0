//! Learning a WordPiece vocabulary by byte-pair-encoding merges, deterministically.
//!
//! Sennrich et al., "Neural Machine Translation of Rare Words with Subword Units",
//! arXiv:1508.07909; the way Hugging Face `tokenizers` trains WordPiece (BPE merges with a
//! `##` continuation prefix). Every word of the corpus starts as its characters, the first
//! bare and the rest as `##c`. Repeatedly, the adjacent pair of symbols with the largest
//! count (Σ over words of the word's frequency × the pair's occurrences in it) is merged into
//! one symbol, `a` + `##b` → `ab`, `##a` + `##b` → `##ab`, which joins the vocabulary; until
//! the vocabulary holds `vocab_size` entries or no pair occurs `min_frequency` times.
//!
//! Deviation: ties between pairs of equal count go to the pair whose two symbols come first
//! in string order, so the vocabulary depends only on the text (the `tokenizers` trainer
//! breaks ties by hash-map order: two trainings on the same text gave different vocabularies).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

/// A pair of symbol ids.
type Pair = (u32, u32);

/// The vocabulary, in id order: `specials`, the alphabet (word-initial characters and `##`
/// continuations, in string order), then the merged symbols in the order they were learned.
/// Fewer than `vocab_size` entries when merging stops first; more only when the specials and
/// the alphabet alone exceed it (the caller decides whether that is an error).
pub fn learn_vocab(
    words: &BTreeMap<String, u64>,
    specials: &[&str],
    vocab_size: usize,
    min_frequency: u64,
) -> Vec<String> {
    let mut alphabet = BTreeSet::new();
    for w in words.keys() {
        for (i, c) in w.chars().enumerate() {
            alphabet.insert(piece(i, c));
        }
    }
    let mut symbols: Vec<String> = specials.iter().map(|s| s.to_string()).collect();
    symbols.extend(alphabet);
    let mut ids: HashMap<String, u32> = symbols
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), i as u32))
        .collect();
    let mut seqs: Vec<Vec<u32>> = words
        .keys()
        .map(|w| {
            w.chars()
                .enumerate()
                .map(|(i, c)| ids[&piece(i, c)])
                .collect()
        })
        .collect();
    let freq: Vec<i64> = words.values().map(|&c| c as i64).collect();

    let mut counts: HashMap<Pair, i64> = HashMap::new();
    let mut where_: HashMap<Pair, BTreeSet<usize>> = HashMap::new();
    for (w, seq) in seqs.iter().enumerate() {
        for p in seq.windows(2) {
            *counts.entry((p[0], p[1])).or_default() += freq[w];
            where_.entry((p[0], p[1])).or_default().insert(w);
        }
    }
    // Max-heap on (count, then the smaller pair of strings): entries go stale when a count
    // changes and are skipped when popped.
    let key = |symbols: &[String], p: Pair, n: i64| {
        (
            n,
            Reverse((symbols[p.0 as usize].clone(), symbols[p.1 as usize].clone())),
            p,
        )
    };
    let mut heap: BinaryHeap<_> = counts.iter().map(|(&p, &n)| key(&symbols, p, n)).collect();
    let floor = min_frequency.max(1) as i64;
    while symbols.len() < vocab_size {
        let Some((n, _, pair)) = heap.pop() else {
            break;
        };
        if counts.get(&pair) != Some(&n) {
            continue; // stale
        }
        if n < floor {
            break;
        }
        let merged = format!(
            "{}{}",
            symbols[pair.0 as usize],
            symbols[pair.1 as usize].trim_start_matches("##")
        );
        let new_id = match ids.get(&merged) {
            Some(&id) => id,
            None => {
                let id = symbols.len() as u32;
                ids.insert(merged.clone(), id);
                symbols.push(merged);
                id
            }
        };
        let touched: Vec<usize> = where_.remove(&pair).into_iter().flatten().collect();
        let mut changed: BTreeSet<Pair> = BTreeSet::new();
        for w in touched {
            let old = std::mem::take(&mut seqs[w]);
            let mut new = Vec::with_capacity(old.len());
            let mut i = 0;
            while i < old.len() {
                if i + 1 < old.len() && (old[i], old[i + 1]) == pair {
                    new.push(new_id);
                    i += 2;
                } else {
                    new.push(old[i]);
                    i += 1;
                }
            }
            for p in old.windows(2) {
                let p = (p[0], p[1]);
                *counts.entry(p).or_default() -= freq[w];
                changed.insert(p);
            }
            for p in old.windows(2) {
                if let Some(set) = where_.get_mut(&(p[0], p[1])) {
                    set.remove(&w);
                }
            }
            for p in new.windows(2) {
                let p = (p[0], p[1]);
                *counts.entry(p).or_default() += freq[w];
                where_.entry(p).or_default().insert(w);
                changed.insert(p);
            }
            seqs[w] = new;
        }
        for p in changed {
            let n = counts.get(&p).copied().unwrap_or(0);
            if n <= 0 {
                counts.remove(&p);
                where_.remove(&p);
            } else {
                heap.push(key(&symbols, p, n));
            }
        }
    }
    symbols
}

fn piece(i: usize, c: char) -> String {
    if i == 0 {
        c.to_string()
    } else {
        format!("##{c}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[(&str, u64)]) -> BTreeMap<String, u64> {
        list.iter().map(|(w, c)| (w.to_string(), *c)).collect()
    }

    #[test]
    fn merges_the_most_frequent_pair_first_and_ties_by_string_order() {
        // Counts: h+##u 5, ##u+##g 7 (hug 5 + mug 2), m+##u 2, f+##u 3, ##u+##n 3.
        // 1. ##u+##g (7) → ##ug; 2. h+##ug (5) → hug; 3. a tie at 3 between f+##u and
        // ##u+##n goes to ("##u", "##n"), smaller in string order than ("f", "##u") → ##un;
        // 4. f+##un (3) → fun; 5. m+##ug (2) → mug.
        let v = learn_vocab(
            &words(&[("hug", 5), ("mug", 2), ("fun", 3)]),
            &["[UNK]"],
            100,
            1,
        );
        let alphabet = ["##g", "##n", "##u", "f", "h", "m"];
        assert_eq!(
            &v[..7],
            ["[UNK]"]
                .iter()
                .chain(&alphabet)
                .copied()
                .collect::<Vec<_>>()
        );
        assert_eq!(&v[7..], ["##ug", "hug", "##un", "fun", "mug"]);
    }

    #[test]
    fn stops_at_the_size_or_the_minimum_frequency() {
        let w = words(&[("hug", 5), ("mug", 2), ("fun", 3)]);
        assert_eq!(learn_vocab(&w, &[], 8, 1).len(), 8);
        // Only ##u+##g (7) and h+##ug (5) reach 4.
        assert_eq!(&learn_vocab(&w, &[], 100, 4)[6..], ["##ug", "hug"]);
    }

    #[test]
    fn entries_are_unique_and_frequent_words_become_whole() {
        let v = learn_vocab(&words(&[("abc", 3), ("abd", 3), ("bc", 1)]), &[], 100, 1);
        let set: BTreeSet<&String> = v.iter().collect();
        assert_eq!(set.len(), v.len());
        assert!(v.contains(&"abc".to_string()) && v.contains(&"abd".to_string()));
    }
}
