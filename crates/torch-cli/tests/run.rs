//! `mmerge run` end to end on a tiny experiment (tests/fixtures/tiny-experiment.yaml): the
//! first run computes every stage; a second computes none (read from the run store's
//! records); a run killed (SIGKILL) while stages are being written resumes and gives the
//! same report, byte for byte, as an uninterrupted run in another store; changing one merge
//! parameter recomputes exactly the stages downstream of that merge.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mmerge_experiments::config::{ExperimentFile, Known};
use mmerge_experiments::plan::Plan;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-experiment.yaml")
}

fn run_cmd(file: &Path, dir: &Path, store: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mmerge-torch"));
    c.arg("run")
        .arg(file)
        .args(["--store", store, "--results", "results", "--jobs", "2"])
        .current_dir(dir);
    c
}

fn run(file: &Path, dir: &Path, store: &str) -> Output {
    let out = run_cmd(file, dir, store).output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every finished stage of a store: `<kind>/<key>` → its finish time.
fn finished(store: &Path) -> BTreeMap<String, u64> {
    // Read while a run writes: folders may appear and vanish meanwhile.
    let mut out = BTreeMap::new();
    let Ok(kinds) = std::fs::read_dir(store) else {
        return out;
    };
    for kind in kinds.filter_map(Result::ok) {
        if kind.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(stages) = std::fs::read_dir(kind.path()) else {
            continue;
        };
        for stage in stages.filter_map(Result::ok) {
            let json = stage.path().join("stage.json");
            if let Ok(bytes) = std::fs::read(&json) {
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                out.insert(
                    format!(
                        "{}/{}",
                        kind.file_name().to_string_lossy(),
                        stage.file_name().to_string_lossy()
                    ),
                    v["finished_unix_ms"].as_u64().unwrap(),
                );
            }
        }
    }
    out
}

fn plan_keys(file: &Path) -> BTreeSet<String> {
    let f = ExperimentFile::load(file).unwrap();
    let p = Plan::build(&f, "quick").unwrap();
    let _ = Known::default();
    p.stages
        .iter()
        .map(|s| format!("{}/{}", s.kind.name(), s.key.hex()))
        .collect()
}

/// Every file of a report folder but timing.md, with its bytes.
fn report_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap() != "timing.md" {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn runs_reuses_resumes_and_recomputes_only_downstream() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let file = fixture();
    let keys = plan_keys(&file);

    // 1. The first run computes every stage.
    let first = run(&file, dir, "a");
    let done_a = finished(&dir.join("a"));
    assert_eq!(done_a.keys().cloned().collect::<BTreeSet<_>>(), keys);
    assert!(
        stderr(&first).contains(&format!("{} stages ran, 0 were cached", keys.len())),
        "{}",
        stderr(&first)
    );
    let report_a = report_files(&dir.join("results/tiny"));
    assert!(report_a.contains_key("README.md"), "{:?}", report_a.keys());
    assert!(report_a.contains_key("study.json"));

    // 2. A second run computes nothing: every record is the one the first run wrote.
    let second = run(&file, dir, "a");
    assert_eq!(finished(&dir.join("a")), done_a);
    assert!(
        stderr(&second).contains(&format!("0 stages ran, {} were cached", keys.len())),
        "{}",
        stderr(&second)
    );
    assert_eq!(report_files(&dir.join("results/tiny")), report_a);

    // 3. A run in a fresh store, killed while a stage is being written, then resumed.
    let store_b = dir.join("b");
    let mut child = run_cmd(&file, dir, "b")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let writing = |store: &Path| -> bool {
        // A stage's temporary folder (`.<key>.mmerge-tmp-<pid>`) after a few finished stages.
        finished(store).len() >= 6
            && std::fs::read_dir(store.join("finetune"))
                .map(|rd| {
                    rd.filter_map(Result::ok)
                        .any(|e| e.file_name().to_string_lossy().contains(".mmerge-tmp-"))
                })
                .unwrap_or(false)
    };
    while !writing(&store_b) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(t0.elapsed() < Duration::from_secs(120), "no stage started");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial = finished(&store_b);
    assert!(partial.len() < keys.len(), "killed after the end");
    // The stage processes die with the runner: nothing is finished after the kill.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(finished(&store_b), partial);
    std::fs::remove_dir_all(dir.join("results")).unwrap();
    let resumed = run(&file, dir, "b");
    assert!(
        stderr(&resumed).contains(&format!(
            "{} stages ran, {} were cached",
            keys.len() - partial.len(),
            partial.len()
        )),
        "{}",
        stderr(&resumed)
    );
    // Same seed, two stores, one of them killed: the same report, byte for byte.
    assert_eq!(report_files(&dir.join("results/tiny")), report_a);

    // 4. One merge parameter changed: exactly the stages downstream of that merge run.
    let text = std::fs::read_to_string(&file).unwrap();
    let changed = text.replace("params: {lambda: 0.5}", "params: {lambda: 0.7}");
    assert_ne!(changed, text);
    let file2 = dir.join("tiny-lambda.yaml");
    std::fs::write(&file2, changed).unwrap();
    let keys2 = plan_keys(&file2);
    let new: BTreeSet<String> = keys2.difference(&keys).cloned().collect();
    // The merge, its zero-shot stage, 2 fine-tunings and 2 evals, and the report.
    assert_eq!(new.len(), 7, "{new:?}");
    let out = run(&file2, dir, "a");
    let after = finished(&dir.join("a"));
    let ran: BTreeSet<String> = after
        .iter()
        .filter(|(k, t)| done_a.get(*k) != Some(t))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(ran, new);
    assert!(
        stderr(&out).contains(&format!("7 stages ran, {} were cached", keys2.len() - 7)),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_experiments_fail_before_any_stage_with_file_line_and_choices() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let text = std::fs::read_to_string(fixture()).unwrap();
    let cases = [
        (
            "method: task_arithmetic",
            "method: task_arith",
            "unknown method `task_arith`",
        ),
        (
            "tasks: [vqa, retrieval]",
            "tasks: [vqa, retreival]",
            "unknown task `retreival`",
        ),
        ("preset: tiny", "preset: tinyy", "unknown preset `tinyy`"),
        (
            "zero_shot: true",
            "zero_shot: true\nzero_shots: true",
            "zero_shots",
        ),
    ];
    for (from, to, want) in cases {
        let bad = text.replace(from, to);
        let line = bad
            .lines()
            .position(|l| l.contains(to.lines().last().unwrap()))
            .unwrap()
            + 1;
        let file = dir.join("bad.yaml");
        std::fs::write(&file, &bad).unwrap();
        let out = run_cmd(&file, dir, "s").output().unwrap();
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains(want), "{err}");
        assert!(err.contains(&format!("bad.yaml:{line}:")), "{err}");
        assert!(!dir.join("s").join("suite").exists(), "a stage ran: {err}");
    }
    // An unknown profile names the file's profiles.
    let out = run_cmd(&fixture(), dir, "s")
        .args(["--profile", "fast"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown profile `fast`; valid: quick"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn arms_a_zero_step_seed_and_a_combination_run_to_one_report() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let text = std::fs::read_to_string(fixture()).unwrap();
    let init = text
        .replace("seed_pretrain: 4,", "seed_pretrain: [0, 4],")
        .replace("name: tiny", "name: tiny-init");
    let arch = text
        .replace(
            "sharing: all_specific",
            "sharing: [all_specific, custom_ffn]",
        )
        .replace("name: tiny", "name: tiny-arch");
    assert!(init != text && arch != text);
    std::fs::write(dir.join("init.yaml"), init).unwrap();
    std::fs::write(dir.join("arch.yaml"), arch).unwrap();
    std::fs::write(
        dir.join("metrics.yaml"),
        "name: tiny-metrics\ncombine: [init.yaml, arch.yaml]\n",
    )
    .unwrap();
    run(&dir.join("init.yaml"), dir, "s");
    run(&dir.join("arch.yaml"), dir, "s");
    // The combination runs nothing but its report.
    let out = run(&dir.join("metrics.yaml"), dir, "s");
    assert!(stderr(&out).contains("1 stages ran"), "{}", stderr(&out));
    let study: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("results/tiny-metrics/study.json")).unwrap(),
    )
    .unwrap();
    // Arms: budgets 0 and 4 (all_specific), and custom_ffn at 4.
    let arms: Vec<(u64, String)> = study["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["seed_steps"].as_u64().unwrap(),
                a["sharing"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        arms,
        [
            (0, "all_specific".into()),
            (4, "all_specific".into()),
            (4, "custom_ffn".into())
        ]
    );
    assert_eq!(study["expert_distances"].as_array().unwrap().len(), 3);
    // The 0-step W0 is the initialisation: a seed stage with a model and no training log.
    let seeds: Vec<PathBuf> = std::fs::read_dir(dir.join("s/seed"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("stage.json").is_file())
        .collect();
    assert_eq!(seeds.len(), 2);
    let untrained: Vec<&PathBuf> = seeds
        .iter()
        .filter(|p| !p.join("log.txt").exists())
        .collect();
    assert_eq!(untrained.len(), 1);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(untrained[0].join("stage.json")).unwrap()).unwrap();
    assert_eq!(record["config"]["steps"], 0);
    assert!(untrained[0].join("model/config.json").is_file());
    assert!(untrained[0].join("model/tokenizer.json").is_file());
}
