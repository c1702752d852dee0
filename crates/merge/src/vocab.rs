//! The output vocabulary of a merge (`tokenizer:` / `tokenizer_source:`), as mergekit 0.1.5
//! builds it (`tokenizer/build.py`, `tokenizer/embed.py`).
//!
//! The output vocabulary V is the source's tokenizer (`base`, or a model of the merge; `union`
//! only where every model has the same vocabulary, which makes it the base's). Every model's
//! vocabulary tensors (outside the numbered stacks, leading dimension = its `vocab_size`) are
//! re-indexed to V before the merge: row v of model m is m's row of the same token. Where some
//! model lacks token v, its row v is a default: the one model that has it, else the base's
//! row if the base has it, else the mean of the rows of the models that have it (a token no
//! model has: zeros). With `pad_to_multiple_of: k`, |V| rows are padded up to a multiple of k
//! with the mean of each model's |V| real rows. Then every model's tensor has |V| (padded)
//! rows, and the merge method runs on them; `vocab_size` in `config.json` becomes that.
//!
//! A vocabulary is `tokenizer.json`'s model vocabulary plus its added tokens (what
//! `get_vocab()` gives); a model without `tokenizer.json` is taken to have the base's, as
//! mergekit does. Token ids at or past a model's `vocab_size` are not rows of its tensors.
//!
//! Deviations: the tokenizer files are copied from the source model, not re-serialised
//! (mergekit writes `save_pretrained`'s output); averages are computed in float64 and rounded
//! to the input dtype; `tokens:` (per-token embedding sources) is not supported.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mmerge_core::writer::{CheckpointWriter, OutputTensor};
use mmerge_core::{Checkpoint, CoreError, Dtype, keys};

use crate::config::TokenizerSpec;
use crate::error::{MergeError, Result};

/// A token → id map.
pub type Vocab = HashMap<String, usize>;

/// Reads the vocabulary of a model folder's `tokenizer.json` (`None` when it has none).
pub fn read_vocab(dir: &Path) -> Result<Option<Vocab>> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| CoreError::io(&path, e))?;
    let bad = |message: String| MergeError::Config {
        path: path.clone(),
        line: None,
        message,
    };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| MergeError::Config {
        path: path.clone(),
        line: Some(e.line()),
        message: e.to_string(),
    })?;
    let mut vocab = Vocab::new();
    match &json["model"]["vocab"] {
        // BPE, WordPiece, WordLevel: token → id.
        serde_json::Value::Object(map) => {
            for (tok, id) in map {
                let id = id
                    .as_u64()
                    .ok_or_else(|| bad(format!("model.vocab[{tok:?}] is not an id")))?;
                vocab.insert(tok.clone(), id as usize);
            }
        }
        // Unigram: [[token, score], …], the id is the position.
        serde_json::Value::Array(list) => {
            for (id, entry) in list.iter().enumerate() {
                let tok = entry[0]
                    .as_str()
                    .ok_or_else(|| bad(format!("model.vocab[{id}] has no token")))?;
                vocab.insert(tok.to_string(), id);
            }
        }
        _ => return Err(bad("no `model.vocab` (token → id) found".into())),
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        if let (Some(tok), Some(id)) = (added["content"].as_str(), added["id"].as_u64()) {
            vocab.insert(tok.to_string(), id as usize);
        }
    }
    Ok(Some(vocab))
}

/// `vocab_size` of a model folder's `config.json`, if it has one.
pub fn config_vocab_size(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["vocab_size"].as_u64().map(|v| v as usize)
}

/// Where row v of a model's re-indexed tensor comes from.
#[derive(Debug, Clone, PartialEq)]
enum Row {
    /// This model's row.
    Own(usize),
    /// Another model's row (model index into the plan's models, row).
    Donor(usize, usize),
    /// The mean of these (model, row)s.
    Mean(Vec<(usize, usize)>),
    Zero,
}

/// How every model's vocabulary tensors are re-indexed to the output vocabulary.
#[derive(Debug, Clone)]
pub struct VocabPlan {
    /// Output rows before padding (|V|).
    pub tokens: usize,
    /// Output rows after padding.
    pub rows: usize,
    /// Per model: the source of each of the |V| rows.
    sources: Vec<Vec<Row>>,
    /// Per model: its `vocab_size` (rows of its vocabulary tensors).
    sizes: Vec<usize>,
}

impl VocabPlan {
    /// Plans the re-indexing of `vocabs` (one per model, `None` = the base's) to `out`.
    /// `sizes` are the models' `vocab_size`s; `base` the base model's index.
    pub fn new(
        out: &Vocab,
        vocabs: &[Vocab],
        sizes: &[usize],
        base: Option<usize>,
        pad_to_multiple_of: Option<usize>,
    ) -> Self {
        // mergekit sizes the output by the number of tokens; ids are dense in real tokenizers.
        let tokens = out.len();
        let by_id: Vec<(&str, usize)> = out
            .iter()
            .map(|(t, &i)| (t.as_str(), i))
            .filter(|&(_, i)| i < tokens)
            .collect();
        // Per model, the row of each output id (None: missing or past its vocab_size).
        let rows: Vec<Vec<Option<usize>>> = vocabs
            .iter()
            .zip(sizes)
            .map(|(v, &size)| {
                let mut r = vec![None; tokens];
                for &(tok, id) in &by_id {
                    r[id] = v.get(tok).copied().filter(|&i| i < size);
                }
                r
            })
            .collect();
        let mut sources = vec![Vec::with_capacity(tokens); vocabs.len()];
        for v in 0..tokens {
            // (model, row) of every model that has token v.
            let have: Vec<(usize, usize)> = rows
                .iter()
                .enumerate()
                .filter_map(|(m, r)| r[v].map(|i| (m, i)))
                .collect();
            let default = match have.as_slice() {
                [] => Row::Zero,
                [(m, i)] => Row::Donor(*m, *i),
                _ => match have.iter().find(|(m, _)| Some(*m) == base) {
                    Some(&(b, i)) => Row::Donor(b, i),
                    None => Row::Mean(have.clone()),
                },
            };
            for (src, r) in sources.iter_mut().zip(&rows) {
                src.push(match r[v] {
                    Some(i) => Row::Own(i),
                    None => default.clone(),
                });
            }
        }
        let rows = match pad_to_multiple_of {
            Some(k) if k > 0 && !tokens.is_multiple_of(k) => tokens + k - tokens % k,
            _ => tokens,
        };
        VocabPlan {
            tokens,
            rows,
            sources,
            sizes: sizes.to_vec(),
        }
    }

    /// Whether model `m`'s tensors come out unchanged (its rows, in order, nothing added).
    pub fn is_identity(&self, m: usize) -> bool {
        self.rows == self.sizes[m]
            && self.sources[m]
                .iter()
                .enumerate()
                .all(|(v, r)| *r == Row::Own(v))
    }

    /// Whether tensor `name` of a model with `vocab_size` rows is a vocabulary tensor: outside
    /// the numbered stacks, with `vocab_size` rows.
    pub fn is_vocab_tensor(name: &str, shape: &[usize], vocab_size: usize) -> bool {
        keys::stack_ref(name).is_none() && shape.first() == Some(&vocab_size)
    }

    /// Writes model `m`'s re-indexed vocabulary tensors (`names`) into `dir`, in their dtype.
    /// `models` are the plan's models (donor rows are read from them).
    pub fn write(
        &self,
        m: usize,
        models: &[Checkpoint],
        names: &[String],
        dir: &Path,
    ) -> Result<()> {
        let ck = &models[m];
        let mut outs = Vec::with_capacity(names.len());
        for n in names {
            let meta = ck.require(n)?;
            let mut shape = meta.shape.clone();
            shape[0] = self.rows;
            outs.push(OutputTensor::new(n.clone(), meta.dtype, shape));
        }
        let w = CheckpointWriter::create(dir, &outs, usize::MAX, true)?;
        for n in names {
            let meta = ck.require(n)?;
            let width: usize = meta.shape[1..].iter().product();
            // Row r of `model`'s tensor, read on its own (the tensors may be large).
            let row_of = |model: usize, r: usize| -> Result<Vec<f64>> {
                let range = r * width..(r + 1) * width;
                let ck = &models[model];
                if ck.require(n)?.dtype == Dtype::F64 {
                    let mut bytes = Vec::new();
                    ck.read_bytes_into(n, range, &mut bytes)?;
                    return Ok(bytes
                        .chunks_exact(8)
                        .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                        .collect());
                }
                let mut row = vec![0f32; width];
                ck.read_f32_into(n, range, &mut row)?;
                Ok(row.into_iter().map(f64::from).collect())
            };
            let write_row = |v: usize, row: &[f64]| -> Result<()> {
                let f32s: Vec<f32> = row.iter().map(|&x| x as f32).collect();
                Ok(w.write_f32(n, v * width, &f32s)?)
            };
            // The sum of the real rows, for the padding rows' mean.
            let mut sum = vec![0f64; width];
            for (v, src) in self.sources[m].iter().enumerate() {
                let row = match src {
                    Row::Own(i) => row_of(m, *i)?,
                    Row::Donor(d, i) => row_of(*d, *i)?,
                    Row::Mean(list) => {
                        let mut acc = vec![0f64; width];
                        for &(d, i) in list {
                            for (a, x) in acc.iter_mut().zip(row_of(d, i)?) {
                                *a += x;
                            }
                        }
                        acc.iter().map(|a| a / list.len() as f64).collect()
                    }
                    Row::Zero => vec![0f64; width],
                };
                for (a, x) in sum.iter_mut().zip(&row) {
                    *a += x;
                }
                write_row(v, &row)?;
            }
            let mean: Vec<f64> = sum.iter().map(|a| a / self.tokens as f64).collect();
            for v in self.tokens..self.rows {
                write_row(v, &mean)?;
            }
        }
        w.finish()?;
        Ok(())
    }
}

/// What re-indexing did to a plan's models (see [`prepare`]).
#[derive(Debug, Default)]
pub struct Prepared {
    /// The model whose tokenizer files the output gets.
    pub source: usize,
    /// The output `vocab_size`, when the vocabulary tensors were re-indexed.
    pub vocab_size: Option<usize>,
    /// (model, tensor name) → the checkpoint (index into the models) that now holds it.
    pub redirects: HashMap<(usize, String), usize>,
}

/// Plans the output vocabulary of `spec` for the first `n` of `models` (the config's models;
/// `index` maps their references, `base` is the base's index, `first` mergekit's stand-in for
/// a missing base) and writes the re-indexed vocabulary tensors of the models that change into
/// `scratch`, opening them as further models. `cfg_path` names the config in errors.
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    spec: &TokenizerSpec,
    models: &mut Vec<Checkpoint>,
    n: usize,
    index: &HashMap<&str, usize>,
    base: Option<usize>,
    first: usize,
    scratch: &Path,
    cfg_path: &Path,
) -> Result<Prepared> {
    let err = |message: String| MergeError::Config {
        path: cfg_path.to_path_buf(),
        line: spec.line,
        message,
    };
    let anchor = base.unwrap_or(first);
    let dirs: Vec<PathBuf> = models[..n].iter().map(|m| m.dir().to_path_buf()).collect();
    let own = dirs
        .iter()
        .map(|d| read_vocab(d))
        .collect::<Result<Vec<Option<Vocab>>>>()?;
    let Some(fallback) = own[anchor].clone() else {
        return Err(err(format!(
            "tokenizer: {} has no tokenizer.json to build the output vocabulary from",
            dirs[anchor].display()
        )));
    };
    let source = match spec.source.as_str() {
        "base" | "union" => anchor,
        r => index[r],
    };
    if own[source].is_none() {
        return Err(err(format!(
            "tokenizer source {} has no tokenizer.json",
            dirs[source].display()
        )));
    }
    let vocabs: Vec<Vocab> = own
        .into_iter()
        .map(|v| v.unwrap_or_else(|| fallback.clone()))
        .collect();
    if spec.source == "union" && vocabs.iter().any(|v| *v != vocabs[anchor]) {
        return Err(err(
            "tokenizer source `union` over models with different vocabularies is not supported; \
             give `base` or one model as the source"
                .into(),
        ));
    }
    let sizes: Vec<usize> = (0..n)
        .map(|m| config_vocab_size(&dirs[m]).unwrap_or(vocabs[m].len()))
        .collect();
    let plan = VocabPlan::new(
        &vocabs[source],
        &vocabs,
        &sizes,
        base,
        spec.pad_to_multiple_of,
    );
    let mut prepared = Prepared {
        source,
        ..Prepared::default()
    };
    if (0..n).all(|m| plan.is_identity(m)) {
        return Ok(prepared);
    }
    for (m, &size) in sizes.iter().enumerate() {
        let names: Vec<String> = models[m]
            .names()
            .iter()
            .filter(|k| {
                models[m]
                    .meta(k)
                    .is_some_and(|t| VocabPlan::is_vocab_tensor(k, &t.shape, size))
            })
            .cloned()
            .collect();
        if names.is_empty() {
            continue;
        }
        let dir = scratch.join(format!("vocab-{m}"));
        plan.write(m, models, &names, &dir)?;
        let at = models.len();
        models.push(Checkpoint::open(&dir)?);
        for name in names {
            prepared.redirects.insert((m, name), at);
        }
    }
    prepared.vocab_size = Some(plan.rows);
    Ok(prepared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(tokens: &[&str]) -> Vocab {
        tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i))
            .collect()
    }

    #[test]
    fn rows_follow_tokens_with_mergekit_defaults() {
        // Output = model 1's vocabulary; model 0 (the base) lacks `d`, model 2 lacks `c`, `d`.
        let out = vocab(&["a", "b", "c", "d"]);
        let vocabs = [
            vocab(&["b", "a", "c"]),
            out.clone(),
            vocab(&["a", "b", "x"]),
        ];
        let p = VocabPlan::new(&out, &vocabs, &[3, 4, 3], Some(0), Some(3));
        assert_eq!((p.tokens, p.rows), (4, 6));
        assert_eq!(
            p.sources[0],
            [Row::Own(1), Row::Own(0), Row::Own(2), Row::Donor(1, 3)]
        );
        // `c`: models 0 and 1 have it, the base among them: the base's row.
        assert_eq!(
            p.sources[2],
            [Row::Own(0), Row::Own(1), Row::Donor(0, 2), Row::Donor(1, 3)]
        );
        assert!(!p.is_identity(1));
        let q = VocabPlan::new(&out, &[out.clone(), out.clone()], &[4, 4], None, None);
        assert!(q.is_identity(0) && q.is_identity(1));
        // Without the base among the holders: the mean.
        let r = VocabPlan::new(
            &out,
            &[vocab(&["a"]), out.clone(), out.clone()],
            &[1, 4, 4],
            Some(0),
            None,
        );
        assert_eq!(r.sources[0][2], Row::Mean(vec![(1, 2), (2, 2)]));
        // Ids past a model's vocab_size are not rows.
        let s = VocabPlan::new(&out, &[out.clone(), out.clone()], &[3, 4], None, None);
        assert_eq!(s.sources[0][3], Row::Donor(1, 3));
    }
}
