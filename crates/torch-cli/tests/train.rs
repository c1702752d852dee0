//! `mmerge train` as a process: a run killed with SIGKILL at any moment resumes (`--resume`)
//! and ends with the same bytes as an uninterrupted run; the run folder a kill leaves behind
//! holds no half-written model and only complete states. And expert initialisation: at step 0
//! every expert of a model expanded from W0 is W0's shared weights bit for bit, separate
//! models initialised from W0 are W0, and after training differ, and their merge (`mmerge
//! merge`, linear and task arithmetic on W0) loads and scores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mmerge_core::writer::write_model;
use mmerge_core::{Checkpoint, Dtype, keys};
use mmerge_data::synth::{Scale, SynthConfig, generate};
use mmerge_train::net::HEADS;
use mmerge_train::recipe::Recipe;
use mmerge_train::trainer;

fn torch_exe() -> &'static str {
    env!("CARGO_BIN_EXE_mmerge-torch")
}

/// `mmerge`, which cargo builds into the same folder when both packages are built (`cargo
/// test --workspace`, or `-p mmerge-cli -p mmerge-torch`).
fn mmerge() -> PathBuf {
    let exe = PathBuf::from(torch_exe()).with_file_name("mmerge");
    assert!(
        exe.is_file(),
        "{} is missing: build mmerge-cli in the same profile too (cargo test -p mmerge-cli -p \
         mmerge-torch, or --workspace)",
        exe.display()
    );
    exe
}

/// The tiny synthetic suite in `dir/suite`.
fn suite(dir: &Path) -> PathBuf {
    let root = dir.join("suite");
    generate(&SynthConfig::new(11, Scale::Tiny), &root, false, false).unwrap();
    root
}

/// A tiny pre-training recipe, written to `dir/<name>.yml`.
fn recipe(dir: &Path, name: &str, suite: &Path, body: &str) -> PathBuf {
    let text = format!(
        "suite: {}\nseed: 5\n{body}\nbatch_size: 8\neval: {{every: 0, split: val, test: false, \
         batch_size: 16}}\nlog_every: 10\ndevice: cpu\nthreads: 1\ntensorboard: false\n",
        suite.display()
    );
    let path = dir.join(format!("{name}.yml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn train_cmd(recipe: &Path, run: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(torch_exe());
    c.arg("train")
        .arg(recipe)
        .arg("--out")
        .arg(run)
        .arg("--quiet")
        .args(extra);
    c
}

fn train_ok(recipe: &Path, run: &Path, extra: &[&str]) {
    let o = train_cmd(recipe, run, extra).output().unwrap();
    assert!(
        o.status.success(),
        "train {} → {}: {}{}",
        recipe.display(),
        run.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn spawn(recipe: &Path, run: &Path, extra: &[&str]) -> Child {
    train_cmd(recipe, run, extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Complete states of a run (`state-<step>` with its `state.json`), as steps, oldest first.
fn state_steps(run: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(run) else {
        return vec![];
    };
    let mut v: Vec<u64> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("state-")?.parse().ok()?;
            e.path().join("state.json").is_file().then_some(step)
        })
        .collect();
    v.sort();
    v
}

/// Polls until `done(run)` holds, then kills the child with SIGKILL (`Child::kill` on Unix),
/// after `extra` more; panics if the child ends first or nothing happens in two minutes.
fn kill_when(child: &mut Child, run: &Path, extra: Duration, done: impl Fn(&Path) -> bool) {
    let t0 = Instant::now();
    while !done(run) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it could be killed: raise its steps");
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "nothing happened");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(extra);
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was not killed: {status}");
}

/// What a kill may leave: no `model/` and only complete states, each with every tensor of
/// the model and the optimiser.
fn check_killed_folder(run: &Path) -> Vec<u64> {
    assert!(
        !run.join("model").exists(),
        "a killed run has a model folder"
    );
    let steps = state_steps(run);
    if run.exists() {
        for e in std::fs::read_dir(run).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.starts_with("state-") {
                let dir = run.join(&name);
                assert!(dir.join("state.json").is_file(), "{name} is incomplete");
                let ck = Checkpoint::open(&dir).unwrap();
                for prefix in ["model/", "adam_m/", "adam_v/"] {
                    assert!(
                        ck.names().iter().any(|n| n.starts_with(prefix)),
                        "{name} has no {prefix}"
                    );
                }
            }
        }
    }
    steps
}

/// Every file of a finished run's `model/`, by name.
fn model_files(run: &Path) -> BTreeMap<String, Vec<u8>> {
    let dir = run.join("model");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn assert_same_model(a: &Path, b: &Path) {
    let (fa, fb) = (model_files(a), model_files(b));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    assert!(fa.contains_key("model.safetensors"), "{:?}", fa.keys());
    for (name, bytes) in &fa {
        assert!(
            bytes == &fb[name],
            "{name} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
    // And the leftovers of the kills are gone: no states, no temporary folders.
    for e in std::fs::read_dir(b).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with("state-") && !name.contains("mmerge-tmp"),
            "{} still holds {name}",
            b.display()
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    mmerge_core::fs::copy_tree(from, to).unwrap();
}

fn log(run: &Path) -> String {
    std::fs::read_to_string(run.join("log.txt")).unwrap_or_default()
}

/// A pseudo-random few milliseconds, so the second kill lands anywhere in a step or a save.
fn jitter() -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    Duration::from_millis(u64::from(nanos % 40))
}

#[test]
fn a_run_killed_with_sigkill_resumes_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = suite(tmp.path());
    // grad_accum 2: a resumed run must also find its place among the micro-batches.
    let r = recipe(
        tmp.path(),
        "pretrain",
        &suite,
        "model: {preset: tiny, sharing: shared}\npretrain: {objectives: {itc: 1, itm: 1, mlm: \
         1}}\nsteps: 200\ngrad_accum: 2\ncheckpoint_every: 20\noptim: {lr: 1.0e-3, warmup: 0.1}",
    );

    let t0 = Instant::now();
    let a = tmp.path().join("a");
    train_ok(&r, &a, &[]);
    let uninterrupted = t0.elapsed();

    // Killed twice: once right after its first state, once a pseudo-random moment after a
    // later one (mid-step or mid-save); each time resumed.
    let b = tmp.path().join("b");
    let mut child = spawn(&r, &b, &[]);
    kill_when(&mut child, &b, Duration::ZERO, |run| {
        !state_steps(run).is_empty()
    });
    let first = check_killed_folder(&b);
    assert!(
        !first.is_empty() && first.iter().all(|s| s % 20 == 0),
        "{first:?}"
    );
    let first = *first.last().unwrap();
    assert!(first < 200);

    let mut child = spawn(&r, &b, &["--resume"]);
    let later = first + 40;
    kill_when(&mut child, &b, jitter(), |run| {
        state_steps(run).last().is_some_and(|&s| s >= later)
    });
    let second = check_killed_folder(&b);
    assert!(
        second.last().is_some_and(|&s| s >= later),
        "{second:?} after resuming at {first}"
    );
    // A refused start: the folder holds an unfinished run.
    let o = train_cmd(&r, &b, &[]).output().unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--resume"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // `--force` starts afresh: a copy of this folder loses its states before training
    // starts (so a later --resume cannot pick up the abandoned run).
    let forced = tmp.path().join("forced");
    copy_dir(&b, &forced);
    std::fs::remove_file(forced.join("recipe.yml")).unwrap();
    let mut child = spawn(&r, &forced, &["--force"]);
    kill_when(&mut child, &forced, Duration::ZERO, |run| {
        run.join("recipe.yml").is_file()
    });
    let left = state_steps(&forced);
    assert!(left.iter().all(|&s| s < later), "{left:?} after --force");
    // What a kill mid-write leaves, the temporary siblings of `core::atomic`, goes at the
    // next start.
    for junk in [".state-00000180.mmerge-tmp-1", ".model.mmerge-tmp-1"] {
        std::fs::create_dir_all(b.join(junk)).unwrap();
        std::fs::write(b.join(junk).join("model.safetensors"), b"half").unwrap();
    }
    train_ok(&r, &b, &["--resume"]);
    let log_b = log(&b);
    assert!(
        log_b.contains(&format!("resumed at step {first}")),
        "{log_b}"
    );
    assert!(log_b.contains("resumed at step "), "{log_b}");
    assert_same_model(&a, &b);

    // Killed before its first state: resuming starts from step 0.
    let c = tmp.path().join("c");
    let mut child = spawn(&r, &c, &[]);
    kill_when(&mut child, &c, Duration::ZERO, |run| {
        run.join("recipe.yml").is_file()
    });
    assert_eq!(check_killed_folder(&c), Vec::<u64>::new());
    train_ok(&r, &c, &["--resume"]);
    assert!(!log(&c).contains("resumed at step"), "{}", log(&c));
    assert_same_model(&a, &c);
    eprintln!(
        "uninterrupted run: {:.1} s; kills at step ≥ {first} and ≥ {later}; whole test {:.1} s",
        uninterrupted.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

/// `(name, values as bits)` of every tensor of a checkpoint that `keep` accepts.
fn tensors(dir: &Path, keep: impl Fn(&str) -> bool) -> BTreeMap<String, Vec<u32>> {
    let ck = Checkpoint::open(dir).unwrap();
    ck.names()
        .iter()
        .filter(|n| keep(n))
        .map(|n| (n.clone(), bits(&ck.read_f32(n).unwrap())))
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn l2(a: &[u32], b: &[u32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(f32::from_bits(x)) - f64::from(f32::from_bits(y))).powi(2))
        .sum::<f64>()
        .sqrt()
}

fn is_encoder(name: &str) -> bool {
    !name.starts_with(HEADS)
}

/// The variables of a prepared (not trained) run: its step 0.
fn step0(recipe: &Path) -> BTreeMap<String, Vec<u32>> {
    let p = trainer::prepare(&Recipe::load(recipe).unwrap()).unwrap();
    p.net
        .named_parameters()
        .into_iter()
        .map(|(n, t)| {
            let v = Vec::<f32>::try_from(&t.detach().contiguous().view([-1])).unwrap();
            (n, bits(&v))
        })
        .collect()
}

/// Writes the encoder tensors of `t` (no heads) as a model folder with `from`'s config and
/// tokenizer.
fn write_encoder(out: &Path, t: &BTreeMap<String, Vec<u32>>, from: &Path) {
    let ck = Checkpoint::open(from).unwrap();
    let list: Vec<(String, Vec<usize>, Vec<f32>)> = t
        .iter()
        .filter(|(n, _)| is_encoder(n))
        .map(|(n, v)| {
            (
                n.clone(),
                ck.meta(n).unwrap().shape.clone(),
                v.iter().map(|&b| f32::from_bits(b)).collect(),
            )
        })
        .collect();
    let config = std::fs::read(from.join("config.json")).unwrap();
    let tok = std::fs::read(from.join("tokenizer.json")).unwrap();
    write_model(
        out,
        Dtype::F32,
        &list,
        usize::MAX,
        &[
            ("config.json", config.as_slice()),
            ("tokenizer.json", tok.as_slice()),
        ],
    )
    .unwrap();
}

/// `mmerge distance --json A B`'s aggregate.
fn distance(a: &Path, b: &Path) -> serde_json::Value {
    let o = Command::new(mmerge())
        .arg("distance")
        .arg(a)
        .arg(b)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["aggregate"].clone()
}

/// W0: a shared tiny model pre-trained a few steps (so its heads exist and its weights are
/// not the seed's).
fn w0(dir: &Path, suite: &Path) -> PathBuf {
    let r = recipe(
        dir,
        "w0",
        suite,
        "model: {preset: tiny, sharing: shared}\npretrain: {objectives: {itc: 1, itm: 1, mlm: \
         1}}\nsteps: 4\ncheckpoint_every: 0",
    );
    let run = dir.join("w0");
    train_ok(&r, &run, &[]);
    run.join("model")
}

#[test]
fn experts_expanded_from_w0_are_w0_at_step_0() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = suite(tmp.path());
    let w0 = w0(tmp.path(), &suite);
    let base = tensors(&w0, |_| true);
    let r = recipe(
        tmp.path(),
        "multiway",
        &suite,
        &format!(
            "model: {{preset: tiny, sharing: all_specific, init: {{expand: {}}}}}\npretrain: \
             {{objectives: {{itc: 1, itm: 1, mlm: 1}}}}\nsteps: 1\ncheckpoint_every: 0",
            w0.display()
        ),
    );
    let net = step0(&r);
    // shared key → (expert, bits) of every expert that starts from it.
    let mut groups: BTreeMap<String, Vec<(String, Vec<u32>)>> = BTreeMap::new();
    for (name, v) in &net {
        let source = match keys::multiway(name) {
            Some(k) => {
                let shared = name.replacen(
                    &format!(".{}.{}.", k.module, k.expert),
                    &format!(".{}.shared.", k.module),
                    1,
                );
                groups
                    .entry(shared.clone())
                    .or_default()
                    .push((k.expert.to_string(), v.clone()));
                shared
            }
            None => name.clone(),
        };
        let want = base
            .get(&source)
            .unwrap_or_else(|| panic!("{name}: W0 has no {source}"));
        assert!(v == want, "{name} is not W0's {source} at step 0");
    }
    let experts: std::collections::BTreeSet<&str> =
        groups.values().flatten().map(|(e, _)| e.as_str()).collect();
    for e in ["vision", "text", "vl"] {
        assert!(experts.contains(e), "no {e} expert in {experts:?}");
    }
    let mut pairs = 0;
    for (shared, members) in &groups {
        for (i, (ea, a)) in members.iter().enumerate() {
            for (eb, b) in &members[i + 1..] {
                assert_eq!(l2(a, b), 0.0, "{shared}: {ea} vs {eb}");
                pairs += 1;
            }
        }
    }
    assert!(pairs > 0);
}

#[test]
fn separate_models_from_w0_start_equal_then_differ_and_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = suite(tmp.path());
    let w0 = w0(tmp.path(), &suite);
    let base = tensors(&w0, |_| true);
    let kinds = [
        ("vision", "{mim: 1}"),
        ("language", "{text_mlm: 1}"),
        ("vl", "{itc: 1, itm: 1, mlm: 1}"),
    ];
    let mut runs = vec![];
    for (name, objectives) in kinds {
        let r = recipe(
            tmp.path(),
            name,
            &suite,
            &format!(
                "model: {{preset: tiny, sharing: shared, init: {{checkpoint: {}}}}}\npretrain: \
                 {{objectives: {objectives}}}\nsteps: 6\ncheckpoint_every: 0",
                w0.display()
            ),
        );
        // Step 0: the encoder is W0's, bit for bit.
        let at0 = step0(&r);
        let step0_dir = tmp.path().join("step0").join(name);
        write_encoder(&step0_dir, &at0, &w0);
        for (n, v) in at0.iter().filter(|(n, _)| is_encoder(n)) {
            assert!(v == &base[n], "{name}: {n} is not W0's at step 0");
        }
        let run = tmp.path().join(name);
        train_ok(&r, &run, &[]);
        runs.push((name, step0_dir, run));
    }
    // Distance 0 between every pair at step 0, as `mmerge distance` reports it.
    for i in 0..runs.len() {
        for j in i + 1..runs.len() {
            let d = distance(&runs[i].1, &runs[j].1);
            assert_eq!(d["l2"], 0.0, "{} vs {}: {d}", runs[i].0, runs[j].0);
            assert_eq!(d["sign"], 0.0, "{} vs {}: {d}", runs[i].0, runs[j].0);
        }
    }
    // After their own objectives the encoders differ. Each model's heads are its own, so the
    // models are merged by their encoders (the keys all three share).
    let mut encoders = vec![];
    for (name, _, run) in &runs {
        let model = run.join("model");
        let enc = tmp.path().join("enc").join(name);
        write_encoder(&enc, &tensors(&model, is_encoder), &model);
        encoders.push(enc);
    }
    for i in 0..encoders.len() {
        for j in i + 1..encoders.len() {
            let d = distance(&encoders[i], &encoders[j]);
            assert!(
                d["l2"].as_f64().unwrap() > 0.0,
                "{} vs {}: {d}",
                runs[i].0,
                runs[j].0
            );
        }
    }
    let w0_enc = tmp.path().join("enc").join("w0");
    write_encoder(&w0_enc, &tensors(&w0, is_encoder), &w0);
    let models: String = encoders
        .iter()
        .map(|e| {
            format!(
                "  - model: {}\n    parameters: {{weight: 1.0}}\n",
                e.display()
            )
        })
        .collect();
    for (method, extra) in [
        ("linear", String::new()),
        (
            "task_arithmetic",
            format!("base_model: {}\n", w0_enc.display()),
        ),
    ] {
        let cfg = tmp.path().join(format!("{method}.yml"));
        std::fs::write(
            &cfg,
            format!("models:\n{models}merge_method: {method}\n{extra}dtype: float32\n"),
        )
        .unwrap();
        let merged = tmp.path().join(format!("merged-{method}"));
        let o = Command::new(mmerge())
            .arg("merge")
            .arg(&cfg)
            .arg(&merged)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // The merge loads as the init of a run and scores (ITC recall, held-out losses).
        let r = recipe(
            tmp.path(),
            &format!("eval-{method}"),
            &suite,
            &format!(
                "model: {{preset: tiny, sharing: shared, init: {{checkpoint: {}}}}}\npretrain: \
                 {{objectives: {{itc: 1, itm: 1, mlm: 1}}}}\nsteps: 1\ncheckpoint_every: 0",
                merged.display()
            ),
        );
        let p = trainer::prepare(&Recipe::load(&r).unwrap()).unwrap();
        let loaded = tensors(&merged, |_| true);
        for (n, t) in p.net.named_parameters() {
            if is_encoder(&n) {
                let v = Vec::<f32>::try_from(&t.detach().contiguous().view([-1])).unwrap();
                assert!(bits(&v) == loaded[&n], "{method}: {n} was not loaded");
            }
        }
        let scores = trainer::evaluate(&p).unwrap();
        let val = &scores["val"];
        assert!(!val.is_empty(), "{method}: no scores");
        for (k, v) in val {
            assert!(v.is_finite(), "{method}: {k} = {v}");
        }
    }
}
