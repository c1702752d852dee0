//! Tables: one title, typed columns, labelled rows of [`Cell`]s, free-text notes; rendered to
//! GitHub Markdown and to CSV (RFC 4180), both byte-deterministic.

use super::ReportError;

/// How a column is headed and how its numbers are printed in Markdown.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Header text, e.g. `VQA` or `TR R@1`.
    pub name: String,
    /// Unit shown after the name, e.g. `%` → `VQA (%)`; `None` for unitless scores.
    pub unit: Option<String>,
    /// Digits after the decimal point in Markdown (CSV always prints the exact value).
    pub decimals: usize,
}

impl Column {
    /// A unitless column printed with 3 decimals.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            unit: None,
            decimals: 3,
        }
    }

    /// Sets the unit shown in the header.
    pub fn unit(mut self, unit: impl Into<String>) -> Self {
        self.unit = Some(unit.into());
        self
    }

    /// Sets the Markdown decimals.
    pub fn decimals(mut self, decimals: usize) -> Self {
        self.decimals = decimals;
        self
    }

    /// `name` or `name (unit)`.
    pub fn header(&self) -> String {
        match &self.unit {
            Some(u) if !u.is_empty() => format!("{} ({u})", self.name),
            _ => self.name.clone(),
        }
    }
}

/// One table cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell {
    /// Not measured / not applicable: `-` in Markdown, empty in CSV.
    Missing,
    /// A single number.
    Value(f64),
    /// A mean over `n` runs (seeds) with its standard deviation:
    /// `0.456 ± 0.012 (n=3)` in Markdown, three CSV columns.
    MeanStd { mean: f64, std: f64, n: usize },
}

/// Whether a row is a model of the experiment or a reference point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RowKind {
    /// A model of the experiment (unmerged, modality-agnostic, a merge variant, ...).
    #[default]
    Model,
    /// A reference the suite always shows (e.g. the text-only baselines): rendered with
    /// `(baseline)` after the label in Markdown and `baseline` in CSV's `kind` column.
    Baseline,
}

/// A labelled row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub label: String,
    pub kind: RowKind,
    /// One cell per column, in column order.
    pub cells: Vec<Cell>,
}

impl Row {
    /// A model row.
    pub fn new(label: impl Into<String>, cells: Vec<Cell>) -> Self {
        Self {
            label: label.into(),
            kind: RowKind::Model,
            cells,
        }
    }

    /// A baseline row.
    pub fn baseline(label: impl Into<String>, cells: Vec<Cell>) -> Self {
        Self {
            label: label.into(),
            kind: RowKind::Baseline,
            cells,
        }
    }
}

/// A table of results.
///
/// Formatting (stated so the bytes are predictable):
/// - Markdown numbers use Rust's `{:.N}` with the column's `decimals` (the exact binary value,
///   correctly rounded); a result of `-0.000` is printed `0.000`. Missing cells are `-`.
///   Layout: `### <title>`, a blank line, the pipe table (label column first, headed
///   `Model`), then each note as `> note` after a blank line. Lines end in `\n`.
/// - CSV (RFC 4180: `,` separators, CRLF line ends, fields quoted when they hold `,`, `"`,
///   CR or LF, quotes doubled) has the columns `row,kind`, then per table column either
///   `<header>` or, when any cell of that column is a [`Cell::MeanStd`],
///   `<header>,<header> std,<header> n`. Numbers are printed with Rust's `{}` for `f64`
///   (shortest text that parses back to the same value); missing parts are empty fields.
///   Title and notes are not part of the CSV.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub title: String,
    pub columns: Vec<Column>,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Table {
    /// Checks the shape and the numbers: every row has one cell per column, every number is
    /// finite, every std is ≥ 0 and every `n` ≥ 1.
    pub fn validate(&self) -> Result<(), ReportError> {
        if self.columns.is_empty() {
            return Err(ReportError::Table {
                table: self.title.clone(),
                reason: "the table has no columns".into(),
            });
        }
        for row in &self.rows {
            if row.cells.len() != self.columns.len() {
                return Err(ReportError::Table {
                    table: self.title.clone(),
                    reason: format!(
                        "row `{}` has {} cells, but the table has {} columns",
                        row.label,
                        row.cells.len(),
                        self.columns.len()
                    ),
                });
            }
            for (cell, col) in row.cells.iter().zip(&self.columns) {
                let bad = |what: String| ReportError::Table {
                    table: self.title.clone(),
                    reason: format!("row `{}`, column `{}`: {what}", row.label, col.name),
                };
                match *cell {
                    Cell::Missing => {}
                    Cell::Value(v) if !v.is_finite() => {
                        return Err(bad(format!("value is {v}, not a finite number")));
                    }
                    Cell::Value(_) => {}
                    Cell::MeanStd { mean, std, n } => {
                        if !mean.is_finite() {
                            return Err(bad(format!("mean is {mean}, not a finite number")));
                        }
                        if !std.is_finite() || std < 0.0 {
                            return Err(bad(format!("std is {std}, not a finite number ≥ 0")));
                        }
                        if n == 0 {
                            return Err(bad("n is 0 (a mean needs at least one run)".into()));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The table as GitHub Markdown (see the type's doc for the exact layout).
    pub fn to_markdown(&self) -> Result<String, ReportError> {
        self.validate()?;
        let mut out = String::new();
        out.push_str("### ");
        out.push_str(&md_escape(&self.title));
        out.push_str("\n\n|");
        out.push_str(" Model |");
        for c in &self.columns {
            out.push(' ');
            out.push_str(&md_escape(&c.header()));
            out.push_str(" |");
        }
        out.push_str("\n|---|");
        for _ in &self.columns {
            out.push_str("---:|");
        }
        out.push('\n');
        for row in &self.rows {
            out.push_str("| ");
            out.push_str(&md_escape(&row.label));
            if row.kind == RowKind::Baseline {
                out.push_str(" (baseline)");
            }
            out.push_str(" |");
            for (cell, col) in row.cells.iter().zip(&self.columns) {
                out.push(' ');
                out.push_str(&md_cell(cell, col.decimals));
                out.push_str(" |");
            }
            out.push('\n');
        }
        for note in &self.notes {
            out.push_str("\n> ");
            out.push_str(&note.replace('\n', " "));
            out.push('\n');
        }
        Ok(out)
    }

    /// The table as CSV (see the type's doc for the columns).
    pub fn to_csv(&self) -> Result<String, ReportError> {
        self.validate()?;
        let split: Vec<bool> = (0..self.columns.len())
            .map(|j| {
                self.rows
                    .iter()
                    .any(|r| matches!(r.cells[j], Cell::MeanStd { .. }))
            })
            .collect();
        let mut header = vec!["row".to_string(), "kind".to_string()];
        for (c, &s) in self.columns.iter().zip(&split) {
            let h = c.header();
            if s {
                let (std, n) = (format!("{h} std"), format!("{h} n"));
                header.extend([h, std, n]);
            } else {
                header.push(h);
            }
        }
        let mut out = String::new();
        csv_line(&mut out, &header);
        for row in &self.rows {
            let mut fields = vec![
                row.label.clone(),
                match row.kind {
                    RowKind::Model => "model",
                    RowKind::Baseline => "baseline",
                }
                .to_string(),
            ];
            for (cell, &s) in row.cells.iter().zip(&split) {
                let (v, std, n) = match *cell {
                    Cell::Missing => (String::new(), String::new(), String::new()),
                    Cell::Value(v) => (format!("{v}"), String::new(), String::new()),
                    Cell::MeanStd { mean, std, n } => {
                        (format!("{mean}"), format!("{std}"), n.to_string())
                    }
                };
                fields.push(v);
                if s {
                    fields.push(std);
                    fields.push(n);
                }
            }
            csv_line(&mut out, &fields);
        }
        Ok(out)
    }
}

/// `{:.N}` without a negative zero.
pub(crate) fn fixed(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

fn md_cell(cell: &Cell, decimals: usize) -> String {
    match *cell {
        Cell::Missing => "-".to_string(),
        Cell::Value(v) => fixed(v, decimals),
        Cell::MeanStd { mean, std, n } => {
            format!(
                "{} ± {} (n={n})",
                fixed(mean, decimals),
                fixed(std, decimals)
            )
        }
    }
}

/// Keeps a text inside one Markdown table cell: `|` escaped, line breaks as spaces.
fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace(['\r', '\n'], " ")
}

fn csv_line(out: &mut String, fields: &[String]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if f.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&f.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(f);
        }
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_has_no_negative_zero() {
        assert_eq!(fixed(-0.0001, 3), "0.000");
        assert_eq!(fixed(-0.0, 2), "0.00");
        assert_eq!(fixed(-0.4, 0), "0");
        assert_eq!(fixed(-0.6, 0), "-1");
        assert_eq!(fixed(1.23456, 2), "1.23");
    }
}
