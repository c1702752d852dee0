//! `mmerge align`: permutation or zip alignment (Git Re-Basin weight matching, activation
//! matching, ZipIt, MuDSC; `mmerge_merge::align::io`), of checkpoint B to checkpoint A
//! (`A B OUT`), or of experts inside one multiway checkpoint
//! (`--experts MULTIWAY --reference R --other E ... OUT`).

use std::path::PathBuf;

use anyhow::bail;
use mmerge_merge::align::{AlignMethod, Solver, align_checkpoints, align_experts, zip_checkpoints};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// `A B OUT` (B permuted into A's basis; a zip writes both transformed, OUT/a and OUT/b),
    /// or `OUT` with --experts.
    #[arg(value_name = "PATHS", required = true, num_args = 1..=3)]
    paths: Vec<PathBuf>,
    /// The alignment method.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(AlignMethod::NAMES))]
    method: String,
    /// λ, the weight of the weight similarity (mudsc_align, mudsc_zip; default 0.5).
    #[arg(long)]
    lambda: Option<f64>,
    /// Seed of the coordinate ascent's unit order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Align the experts of this multiway checkpoint instead of two checkpoints.
    #[arg(long, value_name = "MULTIWAY")]
    experts: Option<PathBuf>,
    /// With --experts: the expert the others are aligned to.
    #[arg(long, default_value = "vision", requires = "experts")]
    reference: String,
    /// With --experts: an expert to align to the reference (repeatable; with a zip method the
    /// first is zipped, the others aligned and moved along).
    #[arg(long = "other", value_name = "EXPERT", requires = "experts")]
    others: Vec<String>,
    /// With λ < 1: the statistics folder with activations/ (of MULTIWAY with --experts; of the
    /// pair A, B from `mmerge statistics A DIR --suite S --pair B` otherwise).
    #[arg(long)]
    statistics: Option<PathBuf>,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let method = AlignMethod::from_name(&a.method)?;
    if let Some(l) = a.lambda
        && !(0.0..=1.0).contains(&l)
    {
        bail!("--lambda {l}: λ must be in [0, 1]");
    }
    let opts = mmerge_merge::align::Options {
        seed: a.seed,
        ..method
            .options(a.lambda)
            .map_err(|e| anyhow::anyhow!("--lambda: {e}"))?
    };
    let s = match (&a.experts, a.paths.as_slice()) {
        (Some(multiway), [out]) => {
            if a.others.is_empty() {
                bail!("--experts needs at least one --other EXPERT to align to --reference");
            }
            let others: Vec<&str> = a.others.iter().map(String::as_str).collect();
            align_experts(
                multiway,
                out,
                a.force,
                &a.reference,
                &others,
                method,
                &opts,
                a.statistics.as_deref(),
            )?
        }
        (Some(_), paths) => bail!("with --experts give only OUT, not {} paths", paths.len()),
        (None, [ma, mb, out]) if matches!(opts.solver, Solver::Zip { .. }) => zip_checkpoints(
            ma,
            mb,
            &out.join("a"),
            &out.join("b"),
            a.force,
            method,
            &opts,
            a.statistics.as_deref(),
        )?,
        (None, [ma, mb, out]) => {
            align_checkpoints(ma, mb, out, a.force, method, &opts, a.statistics.as_deref())?
        }
        (None, paths) => bail!(
            "give A B OUT (or --experts MULTIWAY ... OUT), not {} path{}",
            paths.len(),
            if paths.len() == 1 { "" } else { "s" }
        ),
    };
    let similarity = s
        .mean_similarity
        .map(|m| format!(", mean matched similarity {m:.4}"))
        .unwrap_or_default();
    println!(
        "{} (λ = {}): {} units, {} tensors changed{similarity}, {:.2} s -> {}",
        s.method,
        opts.lambda,
        s.units,
        s.tensors_changed,
        s.seconds,
        s.out.display()
    );
    Ok(())
}
