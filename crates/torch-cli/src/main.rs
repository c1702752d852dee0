//! `mmerge-torch`: the `mmerge` commands that run on libtorch (`encode`, `doctor`, `train`, `eval`, `run`, `statistics`). Users type
//! `mmerge encode …`: the `mmerge` binary links no libtorch, so that merging, distances and the
//! data commands start in milliseconds, and hands these commands to this executable, which it
//! finds beside itself (`crates/cli/src/torch.rs`). The usage lines therefore say `mmerge`.

mod doctor;
mod encode;
mod run;
mod stages;
mod statistics;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "mmerge",
    bin_name = "mmerge",
    version,
    about = "The libtorch commands of mmerge (run them as `mmerge encode`, `mmerge doctor`)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Embeddings of sentences or images from a Hugging Face BERT, DINOv2 or ViT model.
    Encode {
        /// A model folder, or a hub id (org/name[@revision]) already in the local HF cache.
        #[arg(long)]
        model: String,
        /// A text file, one sentence a line (text models).
        #[arg(long)]
        text: Option<PathBuf>,
        /// A folder of .png/.jpg images, encoded in name order (image models).
        #[arg(long)]
        images: Option<PathBuf>,
        /// Output safetensors file.
        #[arg(long)]
        out: PathBuf,
        /// Image models: input size (position embeddings are interpolated); default: the config's.
        #[arg(long)]
        image_size: Option<i64>,
        /// auto (CUDA when available), cpu or cuda.
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// Check libtorch: version, CUDA, threads, and a small computation.
    Doctor,
    /// Pre-train or fine-tune as a YAML recipe says (crates/train/src/recipe.rs).
    Train {
        recipe: PathBuf,
        /// The run folder: model/, metrics.json, log.txt, tb/, recipe.yml.
        #[arg(long)]
        out: PathBuf,
        /// Replace a finished run or an unfinished one's state.
        #[arg(long)]
        force: bool,
        /// Continue an unfinished run from its newest state.
        #[arg(long)]
        resume: bool,
        /// No progress bar and no log lines on stderr (log.txt still gets them).
        #[arg(long)]
        quiet: bool,
    },
    /// Run a whole experiment (experiments/*.yaml): every stage not yet in the run store,
    /// then the report in results/<experiment>/.
    Run(run::Args),
    /// Statistics for data-dependent merging (Gram matrices, Fisher, expert activations) of a
    /// trained model on a suite's pairs, as a statistics folder.
    Statistics(statistics::Args),
    /// Score a checkpoint on a task split: `eval RECIPE` or `eval --checkpoint --task --suite`.
    Eval {
        recipe: Option<PathBuf>,
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        #[arg(long)]
        task: Option<String>,
        #[arg(long)]
        suite: Option<PathBuf>,
        #[arg(long, default_value = "test")]
        split: String,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Encode {
            model,
            text,
            images,
            out,
            image_size,
            device,
        } => encode::run(
            &model,
            text.as_deref(),
            images.as_deref(),
            &out,
            image_size,
            &device,
        ),
        Command::Train {
            recipe,
            out,
            force,
            resume,
            quiet,
        } => train::train(&recipe, &out, force, resume, quiet),
        Command::Eval {
            recipe,
            checkpoint,
            task,
            suite,
            split,
        } => train::eval(train::EvalArgs {
            recipe,
            checkpoint,
            task,
            suite,
            split,
        }),
        Command::Statistics(args) => statistics::run(args),
        Command::Run(args) => {
            if !run::run(args)? {
                anyhow::bail!("some stages did not finish (see above)");
            }
            Ok(())
        }
        Command::Doctor => {
            println!("{}", doctor::report()?);
            Ok(())
        }
    }
}
