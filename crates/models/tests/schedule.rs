#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Learning-rate schedules on hand-worked values.

use mmerge_models::schedule::{Decay, Schedule, ScheduleConfig, ScheduleError};

fn schedule(warmup_steps: u64, total_steps: u64, decay: Decay) -> Schedule {
    Schedule::new(ScheduleConfig {
        peak_lr: 1e-3,
        min_lr: 1e-5,
        warmup_steps,
        total_steps,
        decay,
    })
    .unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-15
}

#[test]
fn warm_up_then_cosine() {
    // W = 10, T = 110: the decay runs over 100 steps.
    let s = schedule(10, 110, Decay::Cosine);
    assert_eq!(s.lr(0), 0.0);
    assert!(close(s.lr(1), 1e-4), "{}", s.lr(1));
    assert!(close(s.lr(5), 5e-4), "{}", s.lr(5));
    assert_eq!(s.lr(10), 1e-3);
    // Midpoint p = 1/2: cos(π/2) = 0, so (peak + min) / 2.
    assert!(close(s.lr(60), (1e-3 + 1e-5) / 2.0), "{}", s.lr(60));
    // p = 1/4: min + (peak − min)(1 + √½)/2.
    let quarter = 1e-5 + (1e-3 - 1e-5) * (1.0 + 0.5f64.sqrt()) / 2.0;
    assert!(close(s.lr(35), quarter), "{} vs {quarter}", s.lr(35));
    assert_eq!(s.lr(110), 1e-5);
    assert_eq!(s.lr(10_000), 1e-5);
    // Monotone down after the peak, never below the floor.
    for step in 10..110 {
        assert!(s.lr(step + 1) <= s.lr(step), "step {step}");
        assert!(s.lr(step) >= 1e-5);
    }
}

#[test]
fn warm_up_then_linear_or_constant() {
    let s = schedule(4, 14, Decay::Linear);
    assert_eq!(s.lr(0), 0.0);
    assert!(close(s.lr(2), 5e-4));
    assert_eq!(s.lr(4), 1e-3);
    // p = 3/10: min + (peak − min)·0.7.
    assert!(close(s.lr(7), 1e-5 + 0.7 * (1e-3 - 1e-5)), "{}", s.lr(7));
    assert!(close(s.lr(9), (1e-3 + 1e-5) / 2.0));
    assert_eq!(s.lr(14), 1e-5);
    let s = schedule(4, 14, Decay::Constant);
    assert!(close(s.lr(1), 2.5e-4));
    assert_eq!(s.lr(4), 1e-3);
    assert_eq!(s.lr(13), 1e-3);
    assert_eq!(s.lr(99), 1e-3);
}

#[test]
fn no_warm_up_starts_at_the_peak_and_full_warm_up_ends_at_the_floor() {
    let s = schedule(0, 4, Decay::Linear);
    assert_eq!(s.lr(0), 1e-3);
    assert!(close(s.lr(2), (1e-3 + 1e-5) / 2.0));
    let s = schedule(5, 5, Decay::Cosine);
    assert!(close(s.lr(4), 8e-4));
    assert_eq!(s.lr(5), 1e-5);
}

#[test]
fn invalid_settings_are_refused() {
    let ok = ScheduleConfig {
        peak_lr: 1e-3,
        min_lr: 0.0,
        warmup_steps: 10,
        total_steps: 100,
        decay: Decay::Cosine,
    };
    let err = |c: ScheduleConfig| Schedule::new(c).unwrap_err();
    assert_eq!(
        err(ScheduleConfig {
            warmup_steps: 101,
            ..ok
        }),
        ScheduleError::WarmupTooLong {
            warmup: 101,
            total: 100
        }
    );
    assert_eq!(
        err(ScheduleConfig {
            peak_lr: -1e-3,
            ..ok
        }),
        ScheduleError::BadRate {
            field: "peak_lr",
            value: -1e-3
        }
    );
    assert!(matches!(
        err(ScheduleConfig {
            min_lr: f64::NAN,
            ..ok
        }),
        ScheduleError::BadRate {
            field: "min_lr",
            ..
        }
    ));
    let e = err(ScheduleConfig { min_lr: 2e-3, ..ok });
    assert_eq!(e.to_string(), "`min_lr` 0.002 is above `peak_lr` 0.001");
    assert_eq!(
        err(ScheduleConfig {
            total_steps: 0,
            warmup_steps: 0,
            ..ok
        }),
        ScheduleError::NoSteps
    );
}

#[test]
fn config_deserialises_with_defaults_and_refuses_unknown_fields() {
    let c: ScheduleConfig =
        serde_json::from_str(r#"{"peak_lr": 0.001, "total_steps": 50, "decay": "linear"}"#)
            .unwrap();
    assert_eq!(
        c,
        ScheduleConfig {
            peak_lr: 1e-3,
            min_lr: 0.0,
            warmup_steps: 0,
            total_steps: 50,
            decay: Decay::Linear
        }
    );
    let e = serde_json::from_str::<ScheduleConfig>(
        r#"{"peak_lr": 0.001, "total_steps": 50, "warmup": 5}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown field `warmup`"), "{e}");
    assert!(e.contains("warmup_steps"), "{e}");
    let e = serde_json::from_str::<ScheduleConfig>(
        r#"{"peak_lr": 0.001, "total_steps": 5, "decay": "step"}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown variant `step`"), "{e}");
}
