//! The run store: stable keys, atomic stages, killed and failed writers, corruption detection
//! and concurrent writers of one key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mmerge_core::atomic::temp_sibling;
use mmerge_experiments::store::{
    FAILED_LOG, Lookup, QUICK_HASH_LIMIT, RunStore, STAGE_JSON, StageKey, StageMeta, Verify,
};
use serde_json::{Value, json};

mod common;
use common::names_in;

fn merge_config() -> Value {
    json!({
        "method": "ties",
        "density": 0.2,
        "lambda": 1.0,
        "seed": 7,
        "experts": ["vision", "language", "vl"],
        "dtype": {"compute": "f32", "out": "bf16"},
        "rescale": true,
        "note": null
    })
}

fn input_keys() -> Vec<StageKey> {
    vec![
        StageKey::compute("seed", &json!({"steps": 1000}), &[]),
        StageKey::compute("experts", &json!({"modality": "vision"}), &[]),
    ]
}

fn meta(config: Value, inputs: Vec<StageKey>) -> StageMeta {
    StageMeta {
        config,
        inputs,
        git_commit: Some("7a74e7c".into()),
        command: vec!["mmerge".into(), "run".into(), "exp.yaml".into()],
    }
}

/// Writes a stage with a small and a large output file and finishes it.
fn write_stage(store: &RunStore, kind: &str, config: Value, inputs: Vec<StageKey>) -> StageKey {
    let key = StageKey::compute(kind, &config, &inputs);
    let w = store.begin(kind, &key).unwrap();
    std::fs::write(w.path().join("metrics.json"), b"{\"acc\": 0.5}\n").unwrap();
    std::fs::create_dir(w.path().join("ckpt")).unwrap();
    std::fs::write(
        w.path().join("ckpt/model.bin"),
        vec![3u8; QUICK_HASH_LIMIT as usize * 2],
    )
    .unwrap();
    w.finish(meta(config, inputs)).unwrap();
    key
}

fn done(l: Lookup) -> mmerge_experiments::store::StageDir {
    match l {
        Lookup::Done(d) => d,
        other => panic!("expected Done, got {other:?}"),
    }
}

fn corrupt_reason(l: Lookup) -> String {
    match l {
        Lookup::Corrupt(r) => r.to_string(),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn keys_are_stable_golden_values() {
    // Pinned (cross-checked by an independent Python implementation of the scheme in the
    // module doc): changing the key scheme invalidates every run store. Update only on purpose
    // (and bump the version tag in the key's bytes).
    assert_eq!(
        StageKey::compute("merge", &merge_config(), &input_keys()).hex(),
        "4f5217125cea786234e34d06819947b8"
    );
    assert_eq!(
        StageKey::compute("seed", &json!({}), &[]).hex(),
        "288285c8101e535ba2665ab16af0db98"
    );
}

#[test]
fn keys_change_with_any_config_value_or_input_but_not_key_order() {
    let base = StageKey::compute("merge", &merge_config(), &input_keys());
    // Key order in the config does not matter (parsed from differently ordered text).
    let reordered: Value = serde_json::from_str(
        r#"{"note": null, "rescale": true, "dtype": {"out": "bf16", "compute": "f32"},
            "experts": ["vision", "language", "vl"], "seed": 7, "lambda": 1.0,
            "density": 0.2, "method": "ties"}"#,
    )
    .unwrap();
    assert_eq!(StageKey::compute("merge", &reordered, &input_keys()), base);

    let mut seen = std::collections::HashSet::new();
    seen.insert(base);
    let edits: Vec<(&str, Value)> = vec![
        ("/method", json!("dare")),
        ("/density", json!(0.3)),
        ("/lambda", json!(1)), // 1 and 1.0 print differently: a different config
        ("/seed", json!(8)),
        ("/experts/2", json!("vision")),
        ("/dtype/out", json!("f16")),
        ("/rescale", json!(false)),
        ("/note", json!("")),
    ];
    for (ptr, v) in edits {
        let mut c = merge_config();
        *c.pointer_mut(ptr).unwrap() = v;
        let k = StageKey::compute("merge", &c, &input_keys());
        assert!(seen.insert(k), "editing {ptr} did not change the key");
    }
    // Array order matters; an added key matters.
    let mut c = merge_config();
    c["experts"] = json!(["language", "vision", "vl"]);
    assert!(seen.insert(StageKey::compute("merge", &c, &input_keys())));
    let mut c = merge_config();
    c["extra"] = json!(0);
    assert!(seen.insert(StageKey::compute("merge", &c, &input_keys())));
    // Inputs: a changed key, swapped order, one fewer.
    let mut ins = input_keys();
    ins[1] = StageKey::compute("experts", &json!({"modality": "language"}), &[]);
    assert!(seen.insert(StageKey::compute("merge", &merge_config(), &ins)));
    let mut ins = input_keys();
    ins.reverse();
    assert!(seen.insert(StageKey::compute("merge", &merge_config(), &ins)));
    assert!(seen.insert(StageKey::compute(
        "merge",
        &merge_config(),
        &input_keys()[..1]
    )));
    // The kind.
    assert!(seen.insert(StageKey::compute(
        "distance",
        &merge_config(),
        &input_keys()
    )));
    // Typed configs hash like their JSON.
    #[derive(serde::Serialize)]
    struct Seed {
        steps: u32,
    }
    assert_eq!(
        StageKey::of("seed", &Seed { steps: 1000 }, &[]).unwrap(),
        input_keys()[0]
    );
}

#[test]
fn begin_finish_lookup_done_with_a_complete_record() {
    let root = tempfile::tempdir().unwrap();
    let store = RunStore::open(root.path().join("runs")).unwrap();
    let key = StageKey::compute("merge", &merge_config(), &input_keys());
    assert!(matches!(
        store.lookup("merge", &key).unwrap(),
        Lookup::Missing
    ));
    write_stage(&store, "merge", merge_config(), input_keys());

    let d = done(store.lookup("merge", &key).unwrap());
    assert_eq!(d.path(), root.path().join("runs/merge").join(key.hex()));
    let r = d.record();
    assert_eq!((r.kind.as_str(), r.key), ("merge", key));
    assert_eq!(r.config, merge_config());
    assert_eq!(r.inputs, input_keys());
    assert_eq!(r.git_commit.as_deref(), Some("7a74e7c"));
    assert_eq!(r.command, ["mmerge", "run", "exp.yaml"]);
    assert!(r.started_unix_ms <= r.finished_unix_ms && r.started_unix_ms > 0);
    let files: Vec<(&str, u64)> = r.files.iter().map(|f| (f.path.as_str(), f.size)).collect();
    assert_eq!(
        files,
        [
            ("ckpt/model.bin", QUICK_HASH_LIMIT * 2),
            ("metrics.json", 13)
        ]
    );
    assert_eq!(names_in(d.path()), ["ckpt", "metrics.json", STAGE_JSON]);
    // Nothing else in the kind folder: no temporary folder is left.
    assert_eq!(names_in(&root.path().join("runs/merge")), [key.hex()]);
    assert!(matches!(
        store.lookup_with("merge", &key, Verify::Full).unwrap(),
        Lookup::Done(_)
    ));
    // The key must match the config and inputs the stage is finished with.
    let w = store.begin("merge", &key).unwrap();
    let err = w.finish(meta(json!({}), input_keys())).unwrap_err();
    assert!(err.to_string().contains("not to the key"), "{err}");
    // Bad kinds are errors, not folders.
    assert!(store.lookup("../x", &key).is_err());
}

#[test]
fn configs_with_inexact_floats_read_back_to_the_same_key() {
    // serde_json's default parser reads 1.5000000000000001e-4 as 1.5e-4 (one ulp off), so a
    // stored record would no longer hash to its key; the crate enables `float_roundtrip`.
    let root = tempfile::tempdir().unwrap();
    let store = RunStore::open(root.path()).unwrap();
    let lrs: Vec<f64> = (0..200)
        .map(|i| 1e-4 * (1.0 + f64::from(i) / 10.0))
        .collect();
    let config = json!({ "lr": lrs, "eps": 1e-8, "tiny": 5e-324, "big": 1.7976931348623157e308 });
    let key = write_stage(&store, "finetune", config.clone(), vec![]);
    let d = done(store.lookup("finetune", &key).unwrap());
    assert_eq!(d.record().config, config);
}

#[test]
fn a_killed_writer_leaves_the_stage_missing_never_done() {
    let root = tempfile::tempdir().unwrap();
    let store = RunStore::open(root.path()).unwrap();
    let key = StageKey::compute("eval", &json!({"task": "vqa"}), &[]);

    // Dropped mid-write: its temporary folder goes with it.
    {
        let w = store.begin("eval", &key).unwrap();
        std::fs::write(w.path().join("half.bin"), b"partial").unwrap();
    }
    assert!(matches!(
        store.lookup("eval", &key).unwrap(),
        Lookup::Missing
    ));
    assert_eq!(names_in(&root.path().join("eval")), Vec::<String>::new());

    // Killed (the process died: no destructor ran): its temporary folder stays behind.
    // Simulate the leftover of a dead writer (with this process's id, as after pid reuse).
    let dst = store.stage_path("eval", &key).unwrap();
    let tmp = temp_sibling(&dst);
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("half.bin"), b"partial").unwrap();
    assert!(matches!(
        store.lookup("eval", &key).unwrap(),
        Lookup::Missing
    ));
    // A young temporary folder may be a live writer's: sweep keeps it; an old one goes.
    assert!(
        store
            .sweep(std::time::Duration::from_secs(3600))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.sweep(std::time::Duration::ZERO).unwrap(),
        [tmp.as_path()]
    );
    assert!(!tmp.exists());
    // Left again, it is emptied by the next writer of the stage, not mixed into its outputs.
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("half.bin"), b"partial").unwrap();
    let w = store.begin("eval", &key).unwrap();
    assert_eq!(w.path(), tmp);
    assert_eq!(names_in(&tmp), Vec::<String>::new());
    drop(w);

    // A stage folder renamed into place without its record (never via the store) is Corrupt.
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::write(dst.join("out.bin"), b"x").unwrap();
    let reason = corrupt_reason(store.lookup("eval", &key).unwrap());
    assert!(reason.contains(STAGE_JSON), "{reason}");
    // A half-written record is Corrupt too.
    std::fs::write(dst.join(STAGE_JSON), b"{\"format\": 1, \"kind\": \"ev").unwrap();
    let reason = corrupt_reason(store.lookup("eval", &key).unwrap());
    assert!(reason.contains(STAGE_JSON), "{reason}");
    // Discard, recompute, Done.
    store.discard("eval", &key).unwrap();
    assert!(matches!(
        store.lookup("eval", &key).unwrap(),
        Lookup::Missing
    ));
    write_stage(&store, "eval", json!({"task": "vqa"}), vec![]);
    done(store.lookup("eval", &key).unwrap());
}

#[test]
fn truncated_edited_or_missing_outputs_are_corrupt_naming_the_file() {
    let root = tempfile::tempdir().unwrap();
    let store = RunStore::open(root.path()).unwrap();
    let key = write_stage(&store, "merge", merge_config(), input_keys());
    let dir = store.stage_path("merge", &key).unwrap();
    let model = dir.join("ckpt/model.bin");

    // Truncated (large file: caught by its size).
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..100]).unwrap();
    let reason = corrupt_reason(store.lookup("merge", &key).unwrap());
    assert!(
        reason.contains("model.bin") && reason.contains("size"),
        "{reason}"
    );

    // Same size, edited by an ordinary write (mtime changes): caught by the lazy re-hash.
    let mut edited = bytes.clone();
    edited[5] ^= 1;
    std::fs::write(&model, &edited).unwrap();
    let reason = corrupt_reason(store.lookup("merge", &key).unwrap());
    assert!(
        reason.contains("model.bin") && reason.contains("hash"),
        "{reason}"
    );

    // Same size and the original mtime (bit rot): only Verify::Full sees it.
    let original_mtime = {
        let rec: Value =
            serde_json::from_slice(&std::fs::read(dir.join(STAGE_JSON)).unwrap()).unwrap();
        let ns = rec["files"][0]["mtime_ns"].as_u64().unwrap();
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns)
    };
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&model)
        .unwrap();
    f.set_modified(original_mtime).unwrap();
    drop(f);
    assert!(matches!(
        store.lookup("merge", &key).unwrap(),
        Lookup::Done(_)
    ));
    let reason = corrupt_reason(store.lookup_with("merge", &key, Verify::Full).unwrap());
    assert!(reason.contains("model.bin"), "{reason}");
    std::fs::write(&model, &bytes).unwrap(); // restored content, new mtime: Done again
    done(store.lookup("merge", &key).unwrap());

    // A small file edited at the same size is always re-hashed.
    let metrics = dir.join("metrics.json");
    std::fs::write(&metrics, b"{\"acc\": 0.9}\n").unwrap();
    let reason = corrupt_reason(store.lookup("merge", &key).unwrap());
    assert!(reason.contains("metrics.json"), "{reason}");

    // Missing.
    std::fs::remove_file(&metrics).unwrap();
    let reason = corrupt_reason(store.lookup("merge", &key).unwrap());
    assert!(
        reason.contains("metrics.json") && reason.contains("missing"),
        "{reason}"
    );

    // A record edited to another config no longer matches its folder's key.
    std::fs::write(&metrics, b"{\"acc\": 0.5}\n").unwrap();
    done(store.lookup("merge", &key).unwrap());
    let json_path = dir.join(STAGE_JSON);
    let text = std::fs::read_to_string(&json_path).unwrap();
    std::fs::write(&json_path, text.replace("\"ties\"", "\"dare\"")).unwrap();
    let reason = corrupt_reason(store.lookup("merge", &key).unwrap());
    assert!(reason.contains(STAGE_JSON), "{reason}");

    // A new writer replaces the corrupt folder.
    write_stage(&store, "merge", merge_config(), input_keys());
    done(store.lookup_with("merge", &key, Verify::Full).unwrap());
    assert_eq!(names_in(&root.path().join("merge")), [key.hex()]);
}

#[test]
fn a_failed_stage_keeps_its_log_and_is_retried() {
    let root = tempfile::tempdir().unwrap();
    let store = RunStore::open(root.path()).unwrap();
    let config = json!({"task": "nlvr2", "lr": 1e-4});
    let key = StageKey::compute("finetune", &config, &[]);
    let w = store.begin("finetune", &key).unwrap();
    std::fs::write(w.path().join("partial.bin"), b"zz").unwrap();
    let log = w.fail("epoch 3: loss is NaN\n").unwrap();
    assert_eq!(
        log,
        store
            .failed_path("finetune", &key)
            .unwrap()
            .join(FAILED_LOG)
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "epoch 3: loss is NaN\n"
    );
    assert!(matches!(
        store.lookup("finetune", &key).unwrap(),
        Lookup::Missing
    ));
    assert_eq!(
        store.failure_log("finetune", &key).unwrap(),
        Some(log.clone())
    );
    assert_eq!(
        names_in(&root.path().join("finetune")),
        [format!("{}.failed", key.hex())]
    );

    // Failing again replaces the log.
    let w = store.begin("finetune", &key).unwrap();
    w.fail("second try\n").unwrap();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "second try\n");

    // A successful retry clears it.
    write_stage(&store, "finetune", config, vec![]);
    done(store.lookup("finetune", &key).unwrap());
    assert_eq!(store.failure_log("finetune", &key).unwrap(), None);
    assert_eq!(names_in(&root.path().join("finetune")), [key.hex()]);
}

#[test]
fn concurrent_writers_of_one_key_end_with_one_valid_stage() {
    let root = tempfile::tempdir().unwrap();
    let store = RunStore::open(root.path()).unwrap();
    let config = json!({"layers": "all"});
    let key = StageKey::compute("distance", &config, &[]);
    let barrier = std::sync::Barrier::new(2);
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2u8)
            .map(|t| {
                let (store, config, barrier) = (&store, config.clone(), &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let w = store.begin("distance", &key).unwrap();
                    std::fs::write(w.path().join("d.json"), [b'0' + t; 64]).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    w.finish(meta(config, vec![])).unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Both get the same stage: the first to finish.
    assert_eq!(results[0].path(), results[1].path());
    assert_eq!(results[0].record().files, results[1].record().files);
    let d = done(store.lookup_with("distance", &key, Verify::Full).unwrap());
    assert_eq!(d.record().files, results[0].record().files);
    assert_eq!(names_in(&root.path().join("distance")), [key.hex()]);

    // One thread beginning the same stage twice is an error, not a deadlock.
    let _w = store.begin("distance", &key).unwrap();
    let err = store.begin("distance", &key).unwrap_err();
    assert!(err.to_string().contains("already writing"), "{err}");
}
