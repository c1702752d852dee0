//! Reports: what an experiment's results look like on disk.
//!
//! A report for experiment `<experiment>` lives in `results/<experiment>/` and holds:
//!
//! - `README.md`: the report's title and intro, then every [`Table`] in the paper's layout
//!   (rows: the unmerged modality-specific model, the modality-agnostic baseline, each merge
//!   variant, and the suite's text-only baselines as [`RowKind::Baseline`] rows; columns: the
//!   task scores such as VQA, retrieval TR/IR R@1, NLVR2, classification, segmentation mIoU,
//!   and the zero-shot signals after merging), each followed by a link to its CSV, then the
//!   findings (`## Findings`, one bullet per [`Finding`]: `**<claim>** — <verdict>:
//!   <evidence>`, the verdict as [`Verdict::text`] gives it; no section when there are none),
//!   then every figure (SVG inline, PNG linked; `results/` commits the SVGs only);
//! - `tables/NN-<slug>.csv`: each table as CSV (`NN` its 1-based position, two digits; the
//!   slug from its title), mean/std/n in separate columns ([`Table::to_csv`]);
//! - `plots/<name>.png` and `plots/<name>.svg`: plots from [`line_plot`] (score vs
//!   interpolation α, score vs seed pre-training steps) and [`scatter_with_fit`] (a distance
//!   metric vs score with its least-squares line and Pearson's r), drawn with `plotters`
//!   using the bundled DejaVu Sans font (`assets/`, no system fonts needed).
//!
//! Every file is written atomically (`mmerge_core::atomic`), and all output is
//! byte-deterministic: the same input gives the same Markdown, CSV, SVG and PNG bytes (the
//! number formats are stated on [`Table`]). Plots are rendered fully in memory before either
//! file is written, so a failure leaves no partial plot behind.

mod plot;
mod table;

use std::path::{Path, PathBuf};

use mmerge_core::CoreError;

pub use plot::{Fit, PLOT_SIZE, PlotFiles, Series, line_plot, scatter_with_fit};
pub(crate) use table::fixed;
pub use table::{Cell, Column, Row, RowKind, Table};

/// What can go wrong building a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A table is malformed (row width, non-finite number, ...).
    #[error("table `{table}`: {reason}")]
    Table { table: String, reason: String },
    /// A plot's input is unusable (NaN point, empty series, unlabelled series, ...) or drawing
    /// it failed.
    #[error("plot `{plot}`: {reason}")]
    Plot { plot: String, reason: String },
    /// A plot or file name that is not a plain file stem.
    #[error(
        "`{name}` is not a usable plot name (use letters, digits, `-`, `_` and `.`, not \
         starting with `.`)"
    )]
    BadName { name: String },
    /// The bundled font could not be registered with plotters.
    #[error("the bundled font assets/DejaVuSans.ttf could not be loaded")]
    Font,
    /// Writing a file failed.
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// A figure the README shows: `plots/<name>.png` (inline) and `plots/<name>.svg` (linked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figure {
    /// The plot's file stem, as given to [`line_plot`] / [`scatter_with_fit`].
    pub name: String,
    pub caption: String,
}

/// Whether a finding's claim holds in what the experiment measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Holds,
    DoesNotHold,
    /// The measurements decide neither way (too few seeds, arms or items).
    Inconclusive,
}

impl Verdict {
    /// The README's text: `holds`, `does not hold`, `inconclusive at this scale`.
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::DoesNotHold => "does not hold",
            Verdict::Inconclusive => "inconclusive at this scale",
        }
    }
}

/// A claim checked against the measurements: rendered as one bullet of `## Findings`,
/// `**<claim>** — <verdict>: <evidence>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// What is claimed, e.g. `Merging approaches the modality-agnostic baseline`.
    pub claim: String,
    pub verdict: Verdict,
    /// The numbers the verdict rests on.
    pub evidence: String,
}

/// An experiment's report: `README.md` plus one CSV per table (see the module doc).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// The README's `# ` heading.
    pub title: String,
    /// Paragraphs shown under the heading.
    pub intro: Vec<String>,
    pub tables: Vec<Table>,
    /// Shown after the tables under `## Findings` (no section when empty).
    pub findings: Vec<Finding>,
    pub figures: Vec<Figure>,
}

impl Report {
    /// Where plots go for a report written to `dir`: `dir/plots` (pass it to [`line_plot`]).
    pub fn plots_dir(dir: &Path) -> PathBuf {
        dir.join("plots")
    }

    /// The CSV path of table `index` (0-based), relative to the report's folder.
    pub fn csv_name(&self, index: usize) -> String {
        let title = self.tables.get(index).map_or("", |t| t.title.as_str());
        format!("tables/{:02}-{}.csv", index + 1, slug(title))
    }

    /// The README's text.
    pub fn to_markdown(&self) -> Result<String, ReportError> {
        let mut out = format!("# {}\n", self.title.replace(['\r', '\n'], " "));
        for p in &self.intro {
            out.push('\n');
            out.push_str(p.trim_end());
            out.push('\n');
        }
        for (i, t) in self.tables.iter().enumerate() {
            out.push('\n');
            out.push_str(&t.to_markdown()?);
            out.push_str(&format!("\n[CSV]({})\n", self.csv_name(i)));
        }
        if !self.findings.is_empty() {
            out.push_str("\n## Findings\n\n");
        }
        for f in &self.findings {
            let one_line = |s: &str| s.replace(['\r', '\n'], " ");
            out.push_str(&format!(
                "- **{}** — {}: {}\n",
                one_line(f.claim.trim()),
                f.verdict.text(),
                one_line(f.evidence.trim())
            ));
        }
        if !self.figures.is_empty() {
            out.push_str("\n## Figures\n");
        }
        for f in &self.figures {
            let caption = f.caption.replace(['\r', '\n', '[', ']'], " ");
            out.push_str(&format!(
                "\n![{caption}](plots/{name}.svg)\n\n{caption} ([PNG](plots/{name}.png))\n",
                name = f.name
            ));
        }
        Ok(out)
    }

    /// Writes `dir/tables/*.csv` and then `dir/README.md` (each atomically), creating the
    /// folders. Everything is rendered (and checked) before the first write.
    pub fn write(&self, dir: &Path) -> Result<(), ReportError> {
        let readme = self.to_markdown()?;
        let csvs = self
            .tables
            .iter()
            .enumerate()
            .map(|(i, t)| Ok((dir.join(self.csv_name(i)), t.to_csv()?)))
            .collect::<Result<Vec<_>, ReportError>>()?;
        let tables = dir.join("tables");
        std::fs::create_dir_all(&tables).map_err(|e| CoreError::io(&tables, e))?;
        for (path, csv) in &csvs {
            mmerge_core::atomic::write_atomic(path, csv.as_bytes())?;
        }
        mmerge_core::atomic::write_atomic(&dir.join("README.md"), readme.as_bytes())?;
        Ok(())
    }
}

/// Lower-case ASCII letters and digits, runs of anything else as one `-`; `table` if empty.
pub(crate) fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() { "table".into() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(
            slug("Main results: ViT-B/16 (α=0.5)"),
            "main-results-vit-b-16-0-5"
        );
        assert_eq!(slug("  "), "table");
    }

    #[test]
    fn findings_render_after_tables_before_figures() {
        let report = Report {
            title: "t".into(),
            findings: vec![
                Finding {
                    claim: "A".into(),
                    verdict: Verdict::Holds,
                    evidence: "x = 1".into(),
                },
                Finding {
                    claim: "B".into(),
                    verdict: Verdict::Inconclusive,
                    evidence: "two\nlines".into(),
                },
            ],
            figures: vec![Figure {
                name: "f".into(),
                caption: "c".into(),
            }],
            ..Report::default()
        };
        let md = report.to_markdown().unwrap_or_default();
        assert_eq!(
            md,
            "# t\n\n## Findings\n\n- **A** — holds: x = 1\n\
             - **B** — inconclusive at this scale: two lines\n\n## Figures\n\n\
             ![c](plots/f.svg)\n\nc ([PNG](plots/f.png))\n"
        );
        assert_eq!(Verdict::DoesNotHold.text(), "does not hold");
    }
}
