//! Same output as mergekit on checkpoints with several numbered layer stacks (Florence-2- and
//! Whisper-like stand-ins, `tests/fixtures/mergekit/standins/make_standins.py`): a depth
//! gradient runs over each stack separately, as mergekit infers it from the tensor names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_matches, cases, fixtures, mmerge};

#[test]
fn every_standin_case_matches_mergekit() {
    let dir = fixtures("standins");
    let cases = cases(&dir);
    assert!(cases.len() >= 4, "stand-in cases missing: {cases:?}");
    let tmp = tempfile::tempdir().unwrap();
    let mut worst = (0f64, String::new());
    for case in &cases {
        let out = tmp.path().join(case);
        let o = mmerge(
            &dir,
            &["merge", &format!("cases/{case}.yml"), out.to_str().unwrap()],
        );
        assert!(
            o.status.success(),
            "{case}: mmerge failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let w = assert_matches(case, &out, &dir.join("expected").join(case));
        if w.0 > worst.0 {
            worst = w;
        }
    }
    eprintln!("largest scaled difference: {:.3e} at {}", worst.0, worst.1);
}
