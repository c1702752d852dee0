//! The runner's own overhead on a plan of about 200 stages: the quickstart's experiment file
//! with 4 seeds (206 stages) planned and run through `run::run_plan` with stages that do no
//! work (each writes one small file through `run::execute`, so keys, look-ups, the
//! scheduler, atomic stage folders and `stage.json` are all real), then run again with
//! everything cached. Prints one JSON object. Target: under 1 s for either.
//!
//! `cargo run --release -p mmerge-experiments --example bench_runner`
//!
//! The real runner also starts one process per libtorch stage (this executable's `run
//! --stage`); that cost is measured by `mmerge run` itself (wall time vs the stages' own
//! times in `timing.md`), not here.

use std::time::Instant;

use mmerge_experiments::config::ExperimentFile;
use mmerge_experiments::plan::{Plan, StageId};
use mmerge_experiments::run::{StageFailure, StageRunner, execute, run_plan};
use mmerge_experiments::store::{RunStore, Verify};

struct Empty<'a> {
    store: &'a RunStore,
}

impl StageRunner for Empty<'_> {
    fn run(&self, plan: &Plan, id: StageId) -> Result<(), StageFailure> {
        execute(
            plan,
            id,
            self.store,
            None,
            vec!["bench".into()],
            |_, out| std::fs::write(out.join("out.json"), b"{}\n"),
        )
        .map(|_| ())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/quickstart.yaml");
    let text =
        std::fs::read_to_string(&path)?.replace("\nseeds: [0, 1, 2]\n", "\nseeds: [0, 1, 2, 3]\n");
    let t = Instant::now();
    let file = ExperimentFile::parse(text, &path)?;
    let plan = Plan::build(&file, "quick")?;
    let plan_s = t.elapsed().as_secs_f64();
    let dir = tempfile::tempdir()?;
    let store = RunStore::open(dir.path().join("runs"))?;
    let runner = Empty { store: &store };
    let t = Instant::now();
    let first = run_plan(&plan, &store, &runner, 2, Verify::Quick, |_, _| {})?;
    let first_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let cached = run_plan(&plan, &store, &runner, 2, Verify::Quick, |_, _| {})?;
    let cached_s = t.elapsed().as_secs_f64();
    assert!(first.complete() && first.ran() == plan.stages.len());
    assert!(cached.complete() && cached.cached() == plan.stages.len());
    println!(
        "{}",
        serde_json::json!({
            "stages": plan.stages.len(),
            "plan_seconds": plan_s,
            "first_run_seconds (empty stages, 2 jobs)": first_s,
            "cached_run_seconds": cached_s,
        })
    );
    Ok(())
}
