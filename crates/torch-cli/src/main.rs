//! `mmerge-torch`: the `mmerge` commands that run on libtorch (`encode`, `doctor`). Users type
//! `mmerge encode …`: the `mmerge` binary links no libtorch, so that merging, distances and the
//! data commands start in milliseconds, and hands these commands to this executable, which it
//! finds beside itself (`crates/cli/src/torch.rs`). The usage lines therefore say `mmerge`.

mod doctor;
mod encode;

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
        Command::Doctor => {
            println!("{}", doctor::report()?);
            Ok(())
        }
    }
}
