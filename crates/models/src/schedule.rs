//! Learning-rate schedules: linear warm-up, then cosine, linear or no decay.
//!
//! With peak rate `η`, floor `η_min`, `W` warm-up steps and `T` total steps, the rate of step
//! `s` (counted from 0: the rate of the (s+1)-th update) is
//!
//! ```text
//! s < W:        η · s / W                                  (linear warm-up from 0)
//! W ≤ s < T:    p = (s − W) / (T − W)
//!               cosine:    η_min + (η − η_min) · ½ (1 + cos(π p))
//!               linear:    η_min + (η − η_min) · (1 − p)
//!               constant:  η
//! s ≥ T:        η_min  (constant: η)
//! ```
//!
//! Sources: linear warm-up then linear decay is BERT's recipe (Devlin et al., arXiv:1810.04805,
//! §A.2) and ViT's fine-tuning recipe (Dosovitskiy et al., arXiv:2010.11929, §B.1), in the
//! form of Hugging Face `get_linear_schedule_with_warmup` / `get_cosine_schedule_with_warmup`;
//! the cosine decay is SGDR's (Loshchilov & Hutter, arXiv:1608.03983, eq. 5) without restarts.
//!
//! Deviations: none for `η_min = 0` (the formulas above are Hugging Face's, step for step, so
//! the last of `T` updates, step `T − 1`, runs slightly above `η_min`, which is reached at
//! step `T`); `η_min > 0` follows SGDR's `η_min` and timm's `lr_min` rather than Hugging Face's
//! fraction-of-peak argument.

use serde::Deserialize;

/// What the rate does after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Half a cosine from the peak down to `min_lr` (SGDR without restarts).
    #[default]
    Cosine,
    /// A straight line from the peak down to `min_lr`.
    Linear,
    /// Stays at the peak.
    Constant,
}

/// A schedule as a recipe states it (e.g. from YAML); [`Schedule::new`] validates it.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// The rate at the end of warm-up.
    pub peak_lr: f64,
    /// The rate at step `total_steps` and after (cosine and linear decay); default 0.
    #[serde(default)]
    pub min_lr: f64,
    /// Steps of linear warm-up from 0; default 0 (start at the peak).
    #[serde(default)]
    pub warmup_steps: u64,
    /// Steps of the whole run, warm-up included.
    pub total_steps: u64,
    /// Decay after warm-up; default cosine.
    #[serde(default)]
    pub decay: Decay,
}

/// Why a [`ScheduleConfig`] is invalid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error("`{field}` must be a finite number ≥ 0, got {value}")]
    BadRate { field: &'static str, value: f64 },
    #[error("`min_lr` {min_lr} is above `peak_lr` {peak_lr}")]
    MinAbovePeak { min_lr: f64, peak_lr: f64 },
    #[error("`total_steps` must be positive")]
    NoSteps,
    #[error("`warmup_steps` {warmup} is more than `total_steps` {total}")]
    WarmupTooLong { warmup: u64, total: u64 },
}

/// A validated schedule: [`Schedule::lr`] is a pure function of the step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    config: ScheduleConfig,
}

impl Schedule {
    /// Checks `config`: rates finite and ≥ 0, `min_lr` ≤ `peak_lr`, 0 < `total_steps`,
    /// `warmup_steps` ≤ `total_steps`.
    pub fn new(config: ScheduleConfig) -> Result<Self, ScheduleError> {
        for (field, value) in [("peak_lr", config.peak_lr), ("min_lr", config.min_lr)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(ScheduleError::BadRate { field, value });
            }
        }
        if config.min_lr > config.peak_lr {
            return Err(ScheduleError::MinAbovePeak {
                min_lr: config.min_lr,
                peak_lr: config.peak_lr,
            });
        }
        if config.total_steps == 0 {
            return Err(ScheduleError::NoSteps);
        }
        if config.warmup_steps > config.total_steps {
            return Err(ScheduleError::WarmupTooLong {
                warmup: config.warmup_steps,
                total: config.total_steps,
            });
        }
        Ok(Self { config })
    }

    /// The validated settings.
    pub fn config(&self) -> &ScheduleConfig {
        &self.config
    }

    /// The rate of step `step` (from 0), by the formula in the module doc.
    pub fn lr(&self, step: u64) -> f64 {
        let c = &self.config;
        let (peak, min) = (c.peak_lr, c.min_lr);
        if step < c.warmup_steps {
            return peak * step as f64 / c.warmup_steps as f64;
        }
        if step >= c.total_steps {
            return match c.decay {
                Decay::Constant => peak,
                Decay::Cosine | Decay::Linear => min,
            };
        }
        // W ≤ s < T, so T − W ≥ 1.
        let p = (step - c.warmup_steps) as f64 / (c.total_steps - c.warmup_steps) as f64;
        match c.decay {
            Decay::Cosine => min + (peak - min) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()),
            Decay::Linear => min + (peak - min) * (1.0 - p),
            Decay::Constant => peak,
        }
    }
}
