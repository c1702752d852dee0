//! Running a plan against a run store: what is done is reused, the rest runs in dependency
//! order, up to `jobs` stages at a time; a failed stage is recorded with its log and the
//! stages that need it are skipped while the others carry on. Then the study is collected
//! from the finished stages and the report is published.
//!
//! This module knows no libtorch: a [`StageRunner`] (the binary's) runs one stage; the
//! binary's runner starts each libtorch stage in a process of its own, so that libtorch's
//! process-wide state (its random generator, which the trainer seeds per step, and its thread
//! count) is never shared by two stages, and calls [`execute`] there.
//!
//! Resuming after a kill needs nothing special: finished stages are in the store (atomic),
//! a killed stage left only scratch (swept later), and the next run finds the first
//! `Missing` and carries on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use mmerge_core::atomic::{AtomicDir, write_atomic};
use serde_json::Value;

use crate::plan::{Plan, StageId, StageKind};
use crate::store::{Lookup, RunStore, StageDir, StageMeta, StoreError, Verify};
use crate::study::{DistanceResult, Evaluation, ModelResult, Study};

/// Errors of running and collecting (a failed *stage* is not an error: see [`Status`]).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Core(#[from] mmerge_core::CoreError),
    #[error("{path}: {message}")]
    Output { path: PathBuf, message: String },
    #[error("stage {name} is not finished in the run store")]
    NotDone { name: String },
    #[error(transparent)]
    Analysis(#[from] crate::analysis::AnalysisError),
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
}

/// The result of this module.
pub type Result<T, E = RunError> = std::result::Result<T, E>;

/// Why one stage did not finish.
#[derive(Debug, Clone, PartialEq)]
pub struct StageFailure {
    pub message: String,
    /// The failed attempt's log (`runs/<kind>/<key>.failed/log.txt`), where one was kept.
    pub log: Option<PathBuf>,
}

/// What happened to one stage in a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Found finished in the store.
    Cached,
    /// Ran now, for this many seconds.
    Ran {
        seconds: f64,
    },
    Failed(StageFailure),
    /// Not run: an input failed or was skipped (the first such input).
    Skipped {
        input: StageId,
    },
}

/// Runs one stage into the store (the binary's; see the module doc).
pub trait StageRunner: Sync {
    fn run(&self, plan: &Plan, id: StageId) -> std::result::Result<(), StageFailure>;
}

/// What the scheduler tells its caller as it goes (every stage gets one `Finished`, cached
/// ones first).
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    Started(StageId),
    Finished(StageId, &'a Status),
}

/// A whole run's outcome.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// One status per stage of the plan.
    pub statuses: Vec<Status>,
    pub seconds: f64,
}

impl RunSummary {
    /// How many stages have a status like `f`.
    pub fn count(&self, f: impl Fn(&Status) -> bool) -> usize {
        self.statuses.iter().filter(|s| f(s)).count()
    }

    /// Stages that ran now.
    pub fn ran(&self) -> usize {
        self.count(|s| matches!(s, Status::Ran { .. }))
    }

    /// Stages found finished.
    pub fn cached(&self) -> usize {
        self.count(|s| matches!(s, Status::Cached))
    }

    /// The failed stages with their failures.
    pub fn failures(&self) -> Vec<(StageId, &StageFailure)> {
        self.statuses
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Status::Failed(f) => Some((StageId(i), f)),
                _ => None,
            })
            .collect()
    }

    /// Whether every stage is finished (cached or ran).
    pub fn complete(&self) -> bool {
        self.statuses
            .iter()
            .all(|s| matches!(s, Status::Cached | Status::Ran { .. }))
    }
}

/// Runs every stage of `plan` that the store lacks, `jobs` at a time (at least 1), in
/// dependency order; ready stages start in plan order. A corrupt stage is discarded and
/// recomputed.
pub fn run_plan(
    plan: &Plan,
    store: &RunStore,
    runner: &dyn StageRunner,
    jobs: usize,
    verify: Verify,
    mut on_event: impl FnMut(&Plan, Event<'_>),
) -> Result<RunSummary> {
    let t0 = Instant::now();
    let n = plan.stages.len();
    let mut status: Vec<Option<Status>> = vec![None; n];
    for (i, s) in plan.stages.iter().enumerate() {
        match store.lookup_with(s.kind.name(), &s.key, verify)? {
            Lookup::Done(_) => {
                let st = Status::Cached;
                on_event(plan, Event::Finished(StageId(i), &st));
                status[i] = Some(st);
            }
            Lookup::Missing => {}
            Lookup::Corrupt(_) => store.discard(s.kind.name(), &s.key)?,
        }
    }
    let jobs = jobs.max(1);
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(StageId, Status)>();
        let mut running = 0usize;
        let mut started = vec![false; n];
        loop {
            // Skip what cannot run; start what can.
            for i in 0..n {
                if status[i].is_some() || started[i] {
                    continue;
                }
                let blocked = plan.stages[i].inputs.iter().find(|j| {
                    matches!(
                        status[j.0],
                        Some(Status::Failed(_)) | Some(Status::Skipped { .. })
                    )
                });
                if let Some(j) = blocked {
                    let st = Status::Skipped { input: *j };
                    on_event(plan, Event::Finished(StageId(i), &st));
                    status[i] = Some(st);
                }
            }
            for i in 0..n {
                if running >= jobs {
                    break;
                }
                let ready = status[i].is_none()
                    && !started[i]
                    && plan.stages[i].inputs.iter().all(|j| {
                        matches!(status[j.0], Some(Status::Cached) | Some(Status::Ran { .. }))
                    });
                if !ready {
                    continue;
                }
                started[i] = true;
                running += 1;
                on_event(plan, Event::Started(StageId(i)));
                let tx = tx.clone();
                scope.spawn(move || {
                    let t = Instant::now();
                    let st = match runner.run(plan, StageId(i)) {
                        Ok(()) => Status::Ran {
                            seconds: t.elapsed().as_secs_f64(),
                        },
                        Err(f) => Status::Failed(f),
                    };
                    let _ = tx.send((StageId(i), st));
                });
            }
            if running == 0 {
                break;
            }
            let Ok((id, st)) = rx.recv() else { break };
            running -= 1;
            on_event(plan, Event::Finished(id, &st));
            status[id.0] = Some(st);
        }
    });
    Ok(RunSummary {
        statuses: status
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.unwrap_or(Status::Skipped { input: StageId(i) }))
            .collect(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Runs stage `id` in this process: finds its inputs in the store, builds it in a writer's
/// temporary folder with `body(stage inputs, output folder)`, and finishes it (or records the
/// failure, with the error and the tail of the stage's `log.txt`, and drops its outputs).
pub fn execute<E: std::fmt::Display>(
    plan: &Plan,
    id: StageId,
    store: &RunStore,
    git_commit: Option<String>,
    command: Vec<String>,
    body: impl FnOnce(&[StageDir], &Path) -> std::result::Result<(), E>,
) -> std::result::Result<StageDir, StageFailure> {
    let stage = plan.stage(id);
    let fail = |message: String| StageFailure { message, log: None };
    if let Ok(Lookup::Done(d)) = store.lookup(stage.kind.name(), &stage.key) {
        return Ok(d);
    }
    let mut inputs = vec![];
    for j in &stage.inputs {
        let s = plan.stage(*j);
        match store.lookup(s.kind.name(), &s.key) {
            Ok(Lookup::Done(d)) => inputs.push(d),
            Ok(_) => return Err(fail(format!("input {} is not finished", s.name))),
            Err(e) => return Err(fail(format!("input {}: {e}", s.name))),
        }
    }
    let writer = store
        .begin(stage.kind.name(), &stage.key)
        .map_err(|e| fail(e.to_string()))?;
    match body(&inputs, writer.path()) {
        Ok(()) => writer
            .finish(StageMeta {
                config: stage.config.clone(),
                inputs: inputs.iter().map(|d| d.record().key).collect(),
                git_commit,
                command,
            })
            .map_err(|e| fail(e.to_string())),
        Err(e) => {
            let message = e.to_string();
            let mut log = format!("stage {} failed: {message}\n", stage.name);
            if let Ok(text) = std::fs::read_to_string(writer.path().join("log.txt")) {
                let tail: Vec<&str> = text.lines().rev().take(200).collect();
                log.push_str("\n--- the stage's log.txt (last 200 lines) ---\n");
                for l in tail.into_iter().rev() {
                    log.push_str(l);
                    log.push('\n');
                }
            }
            let path = writer.fail(&log).ok();
            Err(StageFailure { message, log: path })
        }
    }
}

/// The suite folder a finished `suite` stage names: its `suite/` for a generated suite, else
/// the folder recorded in its `source.json`.
pub fn suite_dir(suite_stage: &StageDir) -> Result<PathBuf> {
    let built = suite_stage.file("suite");
    if built.join("suite.json").is_file() {
        return Ok(built);
    }
    let path = suite_stage.file(SUITE_SOURCE);
    let v: Value = read_json(&path)?;
    v.get("path")
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .ok_or_else(|| RunError::Output {
            path,
            message: "has no `path`".into(),
        })
}

/// Where a suite stage of an existing folder records it.
pub const SUITE_SOURCE: &str = "source.json";
/// What an eval or zero-shot stage writes (an [`Evaluation`]).
pub const EVALUATION: &str = "evaluation.json";
/// What a distance stage writes (a [`DistanceResult`]).
pub const DISTANCES: &str = "distances.json";

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| RunError::Output {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| RunError::Output {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn done(plan: &Plan, store: &RunStore, id: StageId) -> Result<StageDir> {
    let s = plan.stage(id);
    match store.lookup(s.kind.name(), &s.key)? {
        Lookup::Done(d) => Ok(d),
        _ => Err(RunError::NotDone {
            name: s.name.clone(),
        }),
    }
}

/// Collects the study from the finished stages of `plan` (every eval, zero-shot and distance
/// stage must be done).
pub fn collect(
    plan: &Plan,
    store: &RunStore,
    git_commit: Option<String>,
    command: String,
) -> Result<Study> {
    let suite_stage = plan
        .stages
        .iter()
        .position(|s| s.kind == StageKind::Suite)
        .ok_or_else(|| RunError::NotDone {
            name: "suite".into(),
        })?;
    let suite_folder = suite_dir(&done(plan, store, StageId(suite_stage))?)?;
    let manifest: Value = read_json(&suite_folder.join("suite.json"))?;
    let mut baselines = BTreeMap::new();
    let mut task_kinds = BTreeMap::new();
    for t in manifest["tasks"].as_array().into_iter().flatten() {
        let Some(name) = t["name"].as_str() else {
            continue;
        };
        task_kinds.insert(
            name.to_string(),
            t["kind"].as_str().unwrap_or(name).to_string(),
        );
        let b: BTreeMap<String, f64> = t["baselines"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
            .collect();
        baselines.insert(name.to_string(), b);
    }
    let suite = match (&manifest["scale"], &manifest["seed"]) {
        (Value::String(scale), seed) if !seed.is_null() => format!(
            "{} ({scale}, generator seed {seed})",
            manifest["name"].as_str().unwrap_or("suite")
        ),
        _ => manifest["name"].as_str().unwrap_or("suite").to_string(),
    };
    let eval =
        |id: StageId| -> Result<Evaluation> { read_json(&done(plan, store, id)?.file(EVALUATION)) };
    let mut models = vec![];
    for m in &plan.models {
        let mut tasks = BTreeMap::new();
        for (task, id) in &m.evals {
            tasks.insert(task.clone(), eval(*id)?);
        }
        models.push(ModelResult {
            seed: m.seed,
            arm: m.arm,
            name: m.name.clone(),
            role: m.role.clone(),
            tasks,
            zero_shot: m.zero_shot.map(eval).transpose()?,
        });
    }
    let mut expert_distances = vec![];
    for (seed, arm, id) in &plan.distances {
        let d: DistanceResult = read_json(&done(plan, store, *id)?.file(DISTANCES))?;
        expert_distances.push((*seed, *arm, d));
    }
    Ok(Study {
        experiment: plan.experiment.clone(),
        profile: plan.profile.clone(),
        git_commit,
        command,
        suite,
        baselines,
        seeds: plan.seeds.clone(),
        tasks: plan.tasks.clone(),
        task_kinds,
        distances: plan.distance_metrics.clone(),
        arms: plan.arms.clone(),
        models,
        expert_distances,
    })
}

/// The report stage's outputs in `out`: `study.json` (every score of every model, without the
/// per-item values, which stay in the eval stages' `evaluation.json` in the run store: with
/// them a study's JSON runs to tens of megabytes), then the tables, plots and findings
/// ([`crate::analysis`]).
pub fn write_report(study: &Study, out: &Path) -> Result<()> {
    let mut summary = study.clone();
    for m in &mut summary.models {
        for e in m.tasks.values_mut().chain(m.zero_shot.as_mut()) {
            e.items.clear();
        }
    }
    let path = out.join("study.json");
    let bytes = mmerge_core::json::to_pretty(&summary).map_err(|e| RunError::Output {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&path, &bytes)?;
    crate::analysis::analyse(study, out)?.write(out)?;
    Ok(())
}

/// Copies a finished report stage's files (not its `stage.json`) to `dst`, replacing what was
/// there as one rename, and adds `timing.md`: the compute time of every stage of the plan
/// by kind, from the stage records (so a rerun that computed nothing reports the same).
pub fn publish(plan: &Plan, store: &RunStore, report: &StageDir, dst: &Path) -> Result<()> {
    let dir = AtomicDir::create(dst, true)?;
    mmerge_core::fs::copy_tree(report.path(), dir.path())?;
    let record = dir.path().join("stage.json");
    std::fs::remove_file(&record).map_err(|e| RunError::Output {
        path: record,
        message: e.to_string(),
    })?;
    write_atomic(
        &dir.path().join("timing.md"),
        timing(plan, store)?.as_bytes(),
    )?;
    dir.finish()?;
    Ok(())
}

/// Compute seconds of the plan's stages by kind (from `stage.json`), as Markdown.
pub fn timing(plan: &Plan, store: &RunStore) -> Result<String> {
    let mut by_kind: BTreeMap<StageKind, (usize, f64)> = BTreeMap::new();
    for (i, s) in plan.stages.iter().enumerate() {
        if s.kind == StageKind::Report {
            continue;
        }
        let d = done(plan, store, StageId(i))?;
        let r = d.record();
        let secs = r.finished_unix_ms.saturating_sub(r.started_unix_ms) as f64 / 1000.0;
        let e = by_kind.entry(s.kind).or_default();
        e.0 += 1;
        e.1 += secs;
    }
    let mut out = format!(
        "# Compute time of {} (profile {})\n\nSeconds each kind of stage took when it ran \
         (from the run store's records; stages run in parallel, so the wall time is shorter \
         than the sum).\n\n| stage | count | seconds |\n|---|---|---|\n",
        plan.experiment, plan.profile
    );
    let mut total = 0.0;
    for (k, (count, secs)) in &by_kind {
        out.push_str(&format!("| {} | {count} | {secs:.1} |\n", k.name()));
        total += secs;
    }
    out.push_str(&format!("| total | | {total:.1} |\n"));
    Ok(out)
}
