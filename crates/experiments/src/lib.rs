//! Studies from YAML (`mmerge run`): an experiment file → a keyed DAG of stages → the run
//! store → the study → its report.
//!
//! - [`config`]: experiment and combination files, typed and validated;
//! - [`plan`]: their expansion into stages keyed by content, with arms and combinations;
//! - [`store`]: the content-hashed run store (`runs/<kind>/<key>/`, atomic, verified);
//! - [`run`]: the scheduler (jobs in parallel, failures kept, resumption), one stage's
//!   execution into the store, the study's collection and the report's publication;
//! - [`study`]: what a report is made from;
//! - [`analysis`]: study → tables, plots and findings; [`report`] renders them;
//! - [`stats`]: the statistics findings rest on (mean ± std, paired bootstrap intervals,
//!   Pearson / Spearman / Kendall with bootstrap intervals).
//!
//! It links no libtorch: stages reach the trainer through a trait the binary implements
//! (`mmerge-torch`'s `run` and `stages`).

pub mod analysis;
pub mod config;
pub mod plan;
pub mod report;
pub mod run;
pub mod stats;
pub mod store;
pub mod study;
