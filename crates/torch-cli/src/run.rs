//! `mmerge run EXPERIMENT.yaml`: a whole study from one file (`mmerge_experiments`). The
//! plan's stages run in dependency order, `--jobs` at a time, each libtorch stage in a
//! process of its own (this executable, `run --stage KEY`): libtorch's random generator and
//! thread count are process-wide, so two stages in one process would race on them. A stage
//! process dies with the runner (`PR_SET_PDEATHSIG`), so a killed run leaves only scratch.
//! The report stage runs in the runner; the finished report is published to
//! `<results>/<experiment>/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use mmerge_experiments::config::{ExperimentFile, Known, StudyFile};
use mmerge_experiments::plan::{Plan, StageId, StageKind};
use mmerge_experiments::run::{self as runner, Event, StageFailure, StageRunner, Status};
use mmerge_experiments::store::{Lookup, RunStore, Verify};

use crate::stages::{self, StageContext};

/// The options of `mmerge run`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The experiment file (experiments/*.yaml).
    pub experiment: PathBuf,
    /// The profile: the file's budgets to use (`quick`, `full`, ...).
    #[arg(long, default_value = "quick")]
    pub profile: String,
    /// Print the plan and what the run store already holds; run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Re-hash every output file of every finished stage before reusing it (default: sizes,
    /// and hashes of small or modified files).
    #[arg(long)]
    pub verify: bool,
    /// The run store.
    #[arg(long, default_value = "runs")]
    pub store: PathBuf,
    /// Where the report goes (`<results>/<experiment>/`).
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Stages run at once (default: the cores divided by --threads).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// libtorch threads of each stage. Scores can differ in their last bits between thread
    /// counts (summation order), so compare runs made with the same value.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// `cpu`, `cuda`, `cuda:N` or `auto` for every training and evaluation stage.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Internal: run the one stage with this key (what the runner starts per stage).
    #[arg(long, hide = true)]
    pub stage: Option<String>,
}

/// The tasks of an experiment's suite as (name, kind); `None` for a synthetic suite, whose
/// tasks are `mmerge_data::synth::TASKS` (the suite stage generates it).
fn suite_tasks(
    file: &ExperimentFile,
    cache: &Path,
) -> anyhow::Result<Option<Vec<(String, String)>>> {
    let Some(dir) = file.experiment.suite.resolve(cache) else {
        return Ok(None);
    };
    let suite = mmerge_data::suite::Suite::open(&dir).with_context(|| {
        format!(
            "{}: the suite {} (the real-asset suite: build it with datasets/build-real-assets)",
            file.path.display(),
            dir.display()
        )
    })?;
    Ok(Some(
        suite
            .tasks()
            .map(|t| (t.name().to_string(), t.kind().name().to_string()))
            .collect(),
    ))
}

/// The names an experiment file may use: this build's registries and the suite's tasks.
fn known(suite_tasks: Option<&[(String, String)]>) -> Known {
    let names = |v: &mut dyn Iterator<Item = &str>| v.map(String::from).collect::<Vec<_>>();
    let tasks = match suite_tasks {
        None => names(&mut mmerge_data::synth::TASKS.iter().copied()),
        Some(t) => t.iter().map(|(n, _)| n.clone()).collect(),
    };
    Known {
        methods: names(&mut mmerge_merge::MethodKind::NAMES.iter().copied()),
        distances: names(&mut mmerge_distance::DISTANCES.iter().map(|d| d.name)),
        tasks,
        objectives: names(&mut mmerge_train::objectives::OBJECTIVES.iter().map(|o| o.name)),
        presets: names(&mut mmerge_models::MultiwayConfig::PRESETS.iter().copied()),
        sharings: names(&mut mmerge_models::config::Sharing::ALL.iter().map(|s| s.name())),
        align_methods: names(&mut mmerge_merge::align::AlignMethod::NAMES.iter().copied()),
    }
}

/// The commit of the checkout holding `file` (`-dirty` when it has uncommitted changes to
/// tracked files), if it is in one.
fn git_commit(file: &Path) -> Option<String> {
    let dir = std::path::absolute(file).ok()?.parent()?.to_path_buf();
    let out = Command::new("git")
        .arg("-C")
        .arg(&dir)
        .args(["rev-parse", "HEAD"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let head = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dirty = Command::new("git")
        .arg("-C")
        .arg(&dir)
        .args(["status", "--porcelain", "--untracked-files=no"])
        .stderr(Stdio::null())
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    Some(if dirty { format!("{head}-dirty") } else { head })
}

/// The command line that reproduces this run (for reports and records).
fn command_line(a: &Args) -> String {
    format!(
        "mmerge run {} --profile {}",
        a.experiment.display(),
        a.profile
    )
}

struct Runner<'a> {
    args: &'a Args,
    exe: PathBuf,
    store: &'a RunStore,
    commit: Option<String>,
}

impl StageRunner for Runner<'_> {
    fn run(&self, plan: &Plan, id: StageId) -> Result<(), StageFailure> {
        let stage = plan.stage(id);
        if stage.kind == StageKind::Report {
            let command = command_line(self.args);
            return runner::execute(
                plan,
                id,
                self.store,
                self.commit.clone(),
                vec![command.clone()],
                |_, out| -> anyhow::Result<()> {
                    let study = runner::collect(plan, self.store, self.commit.clone(), command)?;
                    Ok(runner::write_report(&study, out)?)
                },
            )
            .map(|_| ());
        }
        self.spawn(plan, id)
    }
}

impl Runner<'_> {
    /// Runs one stage in a child process and waits for it.
    fn spawn(&self, plan: &Plan, id: StageId) -> Result<(), StageFailure> {
        let stage = plan.stage(id);
        let fail = |message: String| StageFailure { message, log: None };
        let log_path = self.store.root().join(format!(
            ".log-{}-{}-{}",
            stage.kind.name(),
            stage.key.hex(),
            std::process::id()
        ));
        let log = std::fs::File::create(&log_path).map_err(|e| fail(e.to_string()))?;
        let log2 = log.try_clone().map_err(|e| fail(e.to_string()))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("run")
            .arg(&self.args.experiment)
            .args(["--profile", &self.args.profile])
            .arg("--store")
            .arg(&self.args.store)
            .args(["--threads", &self.args.threads.to_string()])
            .args(["--device", &self.args.device])
            .args(["--stage", &stage.key.hex()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        die_with_parent(&mut cmd);
        let status = cmd.status();
        let output = std::fs::read_to_string(&log_path).unwrap_or_default();
        let _ = std::fs::remove_file(&log_path);
        let status = status.map_err(|e| fail(format!("starting {}: {e}", self.exe.display())))?;
        if status.success() {
            return Ok(());
        }
        let last = output
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("(no output)")
            .to_string();
        // The stage process records its own failures; a crash or a kill records nothing,
        // so the runner keeps its output as the failure log.
        let recorded = self
            .store
            .failure_log(stage.kind.name(), &stage.key)
            .ok()
            .flatten();
        let log = match (status.code(), recorded) {
            (Some(STAGE_FAILED), Some(p)) => Some(p),
            _ => self
                .store
                .begin(stage.kind.name(), &stage.key)
                .and_then(|w| w.fail(&format!("stage process exited with {status}\n{output}")))
                .ok(),
        };
        Err(StageFailure { message: last, log })
    }
}

/// The exit code of a stage process whose stage failed and was recorded.
const STAGE_FAILED: i32 = 3;

#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

/// `mmerge run`. Returns whether every stage finished.
pub fn run(a: Args) -> anyhow::Result<bool> {
    let cache = mmerge_core::fs::cache_dir();
    let mut file = StudyFile::load(&a.experiment)?;
    for f in file.experiments_mut() {
        let tasks = suite_tasks(f, &cache)?;
        if let Some(t) = &tasks {
            f.expand_task_kinds(t);
        }
        f.validate(&known(tasks.as_deref()))?;
    }
    let plan = file.plan(&a.profile)?;
    let suite = file
        .experiments()
        .first()
        .map(|f| f.experiment.suite.clone())
        .context("a combination of no experiments")?;
    let store = RunStore::open(&a.store)?;
    if a.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let ctx = StageContext {
        threads: a.threads,
        device: a.device.clone(),
        cache,
        suite,
    };
    if let Some(key) = &a.stage {
        return run_one(&plan, &store, &ctx, key, &a.experiment);
    }
    if a.dry_run {
        print!("{}", plan.dry_run(&store));
        return Ok(true);
    }
    // Scratch of writers killed at least a day ago (a live writer of another run is younger).
    store.sweep(std::time::Duration::from_secs(24 * 3600))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs = a.jobs.unwrap_or((cores / a.threads).max(1));
    let verify = if a.verify {
        Verify::Full
    } else {
        Verify::Quick
    };
    let exe = std::env::current_exe().context("finding this executable")?;
    let r = Runner {
        args: &a,
        exe,
        store: &store,
        commit: git_commit(&a.experiment),
    };
    let total = plan.stages.len();
    let mut finished = 0usize;
    eprintln!(
        "{}: {total} stages, profile {}, {jobs} at a time × {} libtorch threads, store {}",
        a.experiment.display(),
        a.profile,
        a.threads,
        a.store.display()
    );
    let summary = runner::run_plan(&plan, &store, &r, jobs, verify, |plan, ev| match ev {
        Event::Started(id) => eprintln!("[{finished:>3}/{total}] start  {}", plan.stage(id).name),
        Event::Finished(id, st) => {
            finished += 1;
            let what = match st {
                Status::Cached => return,
                Status::Ran { seconds } => {
                    format!("done   {} ({seconds:.1} s)", plan.stage(id).name)
                }
                Status::Failed(f) => format!("FAILED {}: {}", plan.stage(id).name, failure(f)),
                Status::Skipped { input } => format!(
                    "skip   {} (needs {})",
                    plan.stage(id).name,
                    plan.stage(*input).name
                ),
            };
            eprintln!("[{finished:>3}/{total}] {what}");
        }
    })?;
    eprintln!(
        "{} stages ran, {} were cached, {} failed, {} skipped ({:.0} s)",
        summary.ran(),
        summary.cached(),
        summary.failures().len(),
        summary.count(|s| matches!(s, Status::Skipped { .. })),
        summary.seconds
    );
    for (id, f) in summary.failures() {
        eprintln!("  failed: {} — {}", plan.stage(id).name, failure(f));
    }
    if !summary.complete() {
        return Ok(false);
    }
    let report = plan.stages.last().context("an empty plan")?;
    let Lookup::Done(dir) = store.lookup(report.kind.name(), &report.key)? else {
        bail!("the report stage finished but is not in the store");
    };
    let dst = a.results.join(&plan.experiment);
    runner::publish(&plan, &store, &dir, &dst)?;
    println!("report: {}", dst.join("README.md").display());
    Ok(true)
}

/// A failure's message and, where one was kept, its log's path.
fn failure(f: &StageFailure) -> String {
    match &f.log {
        Some(p) => format!("{} (log: {})", f.message, p.display()),
        None => f.message.clone(),
    }
}

/// `run --stage KEY`: one stage, in this process.
fn run_one(
    plan: &Plan,
    store: &RunStore,
    ctx: &StageContext,
    key: &str,
    experiment: &Path,
) -> anyhow::Result<bool> {
    let id = plan
        .stages
        .iter()
        .position(|s| s.key.hex() == key)
        .map(StageId)
        .with_context(|| format!("no stage with key {key} in this plan"))?;
    let stage = plan.stage(id);
    let command: Vec<String> = std::env::args().collect();
    match runner::execute(
        plan,
        id,
        store,
        git_commit(experiment),
        command,
        |inputs, out| stages::execute(ctx, stage, inputs, out).map_err(|e| format!("{e:#}")),
    ) {
        Ok(_) => Ok(true),
        Err(f) => {
            eprintln!("stage {} failed: {}", stage.name, f.message);
            std::process::exit(STAGE_FAILED);
        }
    }
}
