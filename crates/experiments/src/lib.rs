//! The experiment runner (issue: reproduce the paper's tables from YAML). This crate grows in
//! pieces; what exists:
//!
//! - [`stats`]: the statistics findings rest on (mean ± std, paired bootstrap intervals,
//!   Pearson / Spearman / Kendall with bootstrap intervals);
//! - [`store`]: the content-hashed run store (`runs/<stage>/<hash>/`, atomic, verified);
//! - [`report`]: tables (Markdown and CSV) and plots (PNG and SVG).
//!
//! It links no libtorch: stages reach the trainer through a trait the binary implements.

pub mod analysis;
pub mod config;
pub mod plan;
pub mod report;
pub mod run;
pub mod stats;
pub mod store;
pub mod study;
