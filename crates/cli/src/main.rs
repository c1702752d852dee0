//! `mmerge`: merge checkpoints, measure weight distances, build and check task suites, embed
//! text and images, check the libtorch set-up. This binary links no libtorch: `encode` and
//! `doctor` run in `mmerge-torch`, which it hands them to (see [`torch`]).

mod align;
mod data;
mod demo;
mod experts;
mod torch;

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser, Debug)]
#[command(
    name = "mmerge",
    version,
    about = "Merge transformers across modalities, and study when it works"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Merge checkpoints as a mergekit-style YAML config says, into OUT_DIR.
    Merge {
        /// The merge config (mergekit's format: models or slices, merge_method, base_model, ...).
        config: PathBuf,
        /// Output folder (safetensors shards, index, config.json, tokenizer files).
        out_dir: PathBuf,
        /// Replace OUT_DIR if it exists.
        #[arg(long)]
        force: bool,
        /// Largest output shard, e.g. 5GB, 500MB, 1000000.
        #[arg(long, default_value = "5GB", value_parser = parse_size)]
        max_shard_size: usize,
        /// Seed of the random methods (dare_linear, dare_ties).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Do not copy tokenizer files from the base model.
        #[arg(long)]
        no_tokenizer: bool,
        /// Threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// For a multi-document config (mergekit-multi's format): the folder of the named
        /// merges' outputs (kept; one already there is not merged again unless --force).
        #[arg(long, short = 'I')]
        intermediate_dir: Option<PathBuf>,
        /// `mergekit`: compute as mergekit does in the config's float16/bfloat16 `dtype`
        /// (linear, task_arithmetic, ties, slerp), to reproduce its merges bit for bit;
        /// `float64` (the default): float64 with one rounding. Overrides the config's `numerics`.
        #[arg(long, value_parser = parse_numerics)]
        numerics: Option<mmerge_merge::Numerics>,
    },
    /// Merge the modality experts of a multiway checkpoint into its `shared` keys, into OUT_DIR.
    #[command(name = "experts", visible_alias = "merge-experts")]
    MergeExperts(experts::Args),
    /// Permute (or zip) checkpoint B into A's basis, or experts of a multiway checkpoint into
    /// the reference expert's (weight_matching, activation_matching, zipit, mudsc_*), into OUT.
    Align(align::Args),
    /// Weight distances between two checkpoints (per tensor, per layer, aggregate).
    Distance {
        a: PathBuf,
        b: PathBuf,
        /// Compare task vectors (A − BASE, B − BASE) instead of raw weights.
        #[arg(long)]
        base: Option<PathBuf>,
        /// Percentage of largest-magnitude coordinates kept by the truncated soft sign dissimilarity.
        #[arg(long, default_value_t = 20.0)]
        top_k: f64,
        /// Print the full report as JSON (schema mmerge.distance/1, see crates/distance/SCHEMA.md).
        #[arg(long)]
        json: bool,
    },
    /// Generate small checkpoints, TIES-merge them and print the result with its distances.
    Demo {
        /// Where to put the generated models and the merge (default: a temporary folder).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Embeddings of sentences or images from a Hugging Face BERT, DINOv2 or ViT model.
    Encode(torch::Args),
    /// Task suites: generate the synthetic one, build the real-asset one, check, tokenizer, VQA answers.
    Data {
        #[command(subcommand)]
        command: data::DataCommand,
    },
    /// List the merge methods.
    Methods,
    /// Check libtorch: version, CUDA, threads, and a small computation.
    Doctor(torch::Args),
    /// Pre-train or fine-tune as a YAML recipe says (runs in mmerge-torch).
    Train(torch::Args),
    /// Score a checkpoint on a task split (runs in mmerge-torch).
    Eval(torch::Args),
    /// Run a whole experiment from one YAML file, reusing what the run store holds, and
    /// write its report (runs in mmerge-torch): `mmerge run experiments/quickstart.yaml`.
    Run(torch::Args),
    /// Collect the statistics data-dependent merges read (Gram matrices, Fisher, expert
    /// activations) of a trained model on a suite (runs in mmerge-torch).
    Statistics(torch::Args),
}

fn parse_numerics(s: &str) -> Result<mmerge_merge::Numerics, String> {
    mmerge_merge::Numerics::from_name(s).ok_or_else(|| {
        format!(
            "unknown numerics `{s}`; valid: {}",
            mmerge_merge::Numerics::NAMES
        )
    })
}

fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let upper = t.to_ascii_uppercase();
    let (num, mult) = [
        ("GB", 1_000_000_000usize),
        ("MB", 1_000_000),
        ("KB", 1_000),
        ("B", 1),
    ]
    .iter()
    .find_map(|(suf, m)| upper.strip_suffix(suf).map(|n| (n.trim().to_string(), *m)))
    .unwrap_or((upper.clone(), 1));
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size like 5GB, 500MB or 1000000"))?;
    if v <= 0.0 {
        return Err(format!("`{s}` must be positive"));
    }
    Ok((v * mult as f64) as usize)
}

pub(crate) fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    bar
}

/// Keeps large buffers (a merge allocates a few hundred KiB per chunk) on the heap for reuse,
/// instead of glibc mapping and unmapping each one, which costs a page fault per page.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // The libraries say that an output exists; the flag that replaces it is ours.
            let advice = if existing_output(&e) {
                "; pass --force to replace it"
            } else {
                ""
            };
            eprintln!("error: {e:#}{advice}");
            ExitCode::FAILURE
        }
    }
}

/// Whether `e` is a refusal to replace an existing output (of `merge`, `experts`, `align` or `data`, whose
/// `--force` replaces it).
fn existing_output(e: &anyhow::Error) -> bool {
    use mmerge_core::CoreError;
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<CoreError>(),
            Some(CoreError::OutputExists { .. })
        ) || matches!(
            cause.downcast_ref::<mmerge_merge::MergeError>(),
            Some(mmerge_merge::MergeError::Core(
                CoreError::OutputExists { .. }
            ))
        ) || matches!(
            cause.downcast_ref::<mmerge_data::DataError>(),
            Some(mmerge_data::DataError::OutputExists { .. })
        )
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Merge {
            config,
            out_dir,
            force,
            max_shard_size,
            seed,
            no_tokenizer,
            threads,
            intermediate_dir,
            numerics,
        } => {
            if let Some(n) = threads {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build_global()?;
            }
            let mut opts = mmerge_merge::MergeOptions::new(out_dir);
            opts.force = force;
            opts.max_shard_bytes = max_shard_size;
            opts.seed = seed;
            opts.copy_tokenizer = !no_tokenizer;
            opts.numerics = numerics;
            let bar = progress(0, "merging");
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("reading {}", config.display()))?;
            let n_docs = mmerge_merge::multi::split(&text).len();
            match intermediate_dir {
                None if n_docs > 1 => anyhow::bail!(
                    "{}: {n_docs} merges in one file (a multi-document config); pass \
                     --intermediate-dir DIR for the outputs of the named ones",
                    config.display()
                ),
                None => print_summary(&mmerge_merge::merge_file(&config, &opts, &bar)?),
                Some(dir) => {
                    for (name, outcome) in
                        mmerge_merge::multi::merge_documents(&config, &dir, &opts, &bar)?
                    {
                        let name = name.as_deref().unwrap_or("(final)");
                        match outcome {
                            mmerge_merge::multi::Outcome::Merged(s) => {
                                print!("{name}: ");
                                print_summary(&s);
                            }
                            mmerge_merge::multi::Outcome::Kept(dir) => println!(
                                "{name}: kept {} (already merged; --force merges it again)",
                                dir.display()
                            ),
                        }
                    }
                }
            }
        }
        Command::Distance {
            a,
            b,
            base,
            top_k,
            json,
        } => {
            let report = distance(&a, &b, base.as_deref(), top_k)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            } else {
                print!("{}", report.to_table());
            }
        }
        Command::MergeExperts(args) => experts::run(args)?,
        Command::Align(args) => align::run(args)?,
        Command::Demo { dir } => demo::run(dir)?,
        Command::Encode(args) => return torch::hand_off("encode", args),
        Command::Data { command } => data::run(command)?,
        Command::Methods => {
            let width = mmerge_merge::MethodKind::NAMES
                .iter()
                .map(|n| n.len())
                .max()
                .unwrap_or(0);
            for &k in mmerge_merge::MethodKind::ALL {
                let name = k.name();
                let params: Vec<&str> = k.params().iter().map(|p| p.name).collect();
                let base = if k.needs_base() {
                    "required"
                } else {
                    "optional"
                };
                let reads = match k.statistics().folder() {
                    Some(f) => format!("  reads: {f}/ statistics (`mmerge statistics`)"),
                    None => String::new(),
                };
                println!(
                    "{name:<width$} base_model: {base:<9} parameters: {}{reads}",
                    params.join(", ")
                );
            }
            println!(
                "alignment before a merge (`mmerge align`, `align:`): {}",
                mmerge_merge::align::AlignMethod::NAMES.join(", ")
            );
        }
        Command::Doctor(args) => return torch::hand_off("doctor", args),
        Command::Train(args) => return torch::hand_off("train", args),
        Command::Eval(args) => return torch::hand_off("eval", args),
        Command::Run(args) => return torch::hand_off("run", args),
        Command::Statistics(args) => return torch::hand_off("statistics", args),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn distance(
    a: &std::path::Path,
    b: &std::path::Path,
    base: Option<&std::path::Path>,
    top_k: f64,
) -> anyhow::Result<mmerge_distance::DistanceReport> {
    use mmerge_core::Checkpoint;
    let ca = Checkpoint::open(a)?;
    let cb = Checkpoint::open(b)?;
    let cbase = base.map(Checkpoint::open).transpose()?;
    let opts = mmerge_distance::DistanceOptions {
        tssd_top_k_percent: top_k,
        ..Default::default()
    };
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(
        "distances [{elapsed_precise}] {wide_bar} {pos}/{len} elements",
    ) {
        bar.set_style(style);
    }
    let report =
        mmerge_distance::compare_with_progress(&ca, &cb, cbase.as_ref(), &opts, Some(&bar))?;
    bar.finish_and_clear();
    Ok(report)
}

fn print_summary(s: &mmerge_merge::MergeSummary) {
    println!(
        "{}: {} tensors, {:.1} MB written, {:.1} MB read, {:.2} s -> {}",
        s.method,
        s.tensors,
        s.bytes_written as f64 / 1e6,
        s.bytes_read as f64 / 1e6,
        s.seconds,
        s.out.display()
    );
}
