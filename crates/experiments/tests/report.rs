//! Report output: exact Markdown/CSV bytes, CSV round trip, plots (PNG decodes, SVG text,
//! determinism), and errors that name the problem and leave nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mmerge_experiments::report::{
    Cell, Column, Figure, PLOT_SIZE, Report, ReportError, Row, Series, Table, line_plot,
    scatter_with_fit,
};

mod common;
use common::names_in;

fn sample_table() -> Table {
    Table {
        title: "Main results".into(),
        columns: vec![
            Column::new("VQA").unit("%").decimals(1),
            Column::new("TR R@1"),
            Column::new("Note, \"x\""),
        ],
        rows: vec![
            Row::new(
                "Unmerged",
                vec![
                    Cell::Value(71.26),
                    Cell::MeanStd {
                        mean: 0.4561,
                        std: 0.0123,
                        n: 3,
                    },
                    Cell::Missing,
                ],
            ),
            Row::new(
                "Merge \"TIES\", α=0.5",
                vec![Cell::Value(70.0), Cell::Value(0.5), Cell::Value(-1.5)],
            ),
            Row::baseline(
                "BERT-base",
                vec![Cell::Missing, Cell::Value(-0.00001), Cell::Value(2.0)],
            ),
        ],
        notes: vec!["Means over 3 seeds.".into()],
    }
}

#[test]
fn markdown_is_exact() {
    let expected = "### Main results\n\
\n\
| Model | VQA (%) | TR R@1 | Note, \"x\" |\n\
|---|---:|---:|---:|\n\
| Unmerged | 71.3 | 0.456 ± 0.012 (n=3) | - |\n\
| Merge \"TIES\", α=0.5 | 70.0 | 0.500 | -1.500 |\n\
| BERT-base (baseline) | - | 0.000 | 2.000 |\n\
\n\
> Means over 3 seeds.\n";
    assert_eq!(sample_table().to_markdown().unwrap(), expected);
}

#[test]
fn csv_is_exact() {
    let expected = "row,kind,VQA (%),TR R@1,TR R@1 std,TR R@1 n,\"Note, \"\"x\"\"\"\r\n\
Unmerged,model,71.26,0.4561,0.0123,3,\r\n\
\"Merge \"\"TIES\"\", α=0.5\",model,70,0.5,,,-1.5\r\n\
BERT-base,baseline,,-0.00001,,,2\r\n";
    assert_eq!(sample_table().to_csv().unwrap(), expected);
}

/// A small RFC 4180 reader (quoted fields, doubled quotes, CRLF records).
fn parse_csv(s: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = s.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
        } else {
            match c {
                '"' => quoted = true,
                ',' => row.push(std::mem::take(&mut field)),
                '\r' => {
                    assert_eq!(chars.next(), Some('\n'), "CR without LF");
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                _ => field.push(c),
            }
        }
    }
    assert!(
        field.is_empty() && row.is_empty(),
        "last record not terminated"
    );
    rows
}

#[test]
fn csv_round_trips() {
    let mut t = sample_table();
    t.rows.push(Row::new(
        "multi\nline, \"label\"",
        vec![
            Cell::Value(1.0 / 3.0),
            Cell::MeanStd {
                mean: 1e-7,
                std: 0.1 + 0.2,
                n: 10,
            },
            Cell::Value(123456789.125),
        ],
    ));
    let rows = parse_csv(&t.to_csv().unwrap());
    assert_eq!(rows.len(), 1 + t.rows.len());
    assert!(rows.iter().all(|r| r.len() == 7));
    assert_eq!(rows[0][6], "Note, \"x\"");
    for (parsed, row) in rows[1..].iter().zip(&t.rows) {
        assert_eq!(parsed[0], row.label);
        let num = |s: &str| -> Option<f64> { (!s.is_empty()).then(|| s.parse().unwrap()) };
        let back = |i: usize, col: usize| -> Cell {
            match (num(&parsed[col]), num(&parsed[col + 1]), &parsed[col + 2]) {
                (None, None, n) if n.is_empty() => Cell::Missing,
                (Some(v), None, n) if n.is_empty() => Cell::Value(v),
                (Some(mean), Some(std), n) => Cell::MeanStd {
                    mean,
                    std,
                    n: n.parse().unwrap(),
                },
                other => panic!("cell {i}: {other:?}"),
            }
        };
        let single = |col: usize| num(&parsed[col]).map_or(Cell::Missing, Cell::Value);
        assert_eq!(single(2), row.cells[0]);
        assert_eq!(back(1, 3), row.cells[1]);
        assert_eq!(single(6), row.cells[2]);
    }
}

#[test]
fn bad_tables_are_named() {
    let mut t = sample_table();
    t.rows[1].cells.pop();
    let e = t.to_markdown().unwrap_err().to_string();
    assert!(
        e.contains("Main results") && e.contains("has 2 cells") && e.contains("3 columns"),
        "{e}"
    );
    let mut t = sample_table();
    t.rows[0].cells[0] = Cell::Value(f64::NAN);
    let e = t.to_csv().unwrap_err().to_string();
    assert!(
        e.contains("row `Unmerged`, column `VQA`: value is NaN"),
        "{e}"
    );
}

fn alpha_series() -> Vec<Series> {
    vec![
        Series {
            label: "VQA".into(),
            points: vec![
                (0.0, 0.61),
                (0.25, 0.65),
                (0.5, 0.70),
                (0.75, 0.66),
                (1.0, 0.58),
            ],
            err: Some(vec![0.01, 0.02, 0.015, 0.01, 0.02]),
        },
        Series::new(
            "NLVR2",
            vec![
                (0.0, 0.55),
                (0.25, 0.57),
                (0.5, 0.62),
                (0.75, 0.60),
                (1.0, 0.52),
            ],
        ),
    ]
}

#[test]
fn line_plot_writes_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let files = line_plot(
        dir.path(),
        "score-vs-alpha",
        &alpha_series(),
        "interpolation alpha",
        "accuracy",
        "Score vs interpolation",
    )
    .unwrap();
    assert_eq!(files.png, dir.path().join("score-vs-alpha.png"));
    assert_eq!(
        names_in(dir.path()),
        ["score-vs-alpha.png", "score-vs-alpha.svg"]
    );

    let png = std::fs::read(&files.png).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    let img = image::load_from_memory_with_format(&png, image::ImageFormat::Png).unwrap();
    assert_eq!((img.width(), img.height()), PLOT_SIZE);
    // Not a blank canvas: text and lines left dark pixels.
    let rgb = img.to_rgb8();
    let dark = rgb
        .pixels()
        .filter(|p| p.0.iter().all(|&c| c < 100))
        .count();
    assert!(dark > 1000, "only {dark} dark pixels");

    let svg = std::fs::read_to_string(&files.svg).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..50.min(svg.len())]);
    for text in [
        "interpolation alpha",
        "accuracy",
        "Score vs interpolation",
        "VQA",
        "NLVR2",
    ] {
        assert!(svg.contains(text), "SVG lacks `{text}`");
    }
}

#[test]
fn plots_are_byte_deterministic() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for d in [a.path(), b.path()] {
        line_plot(d, "p", &alpha_series(), "x", "y", "t").unwrap();
        scatter_with_fit(
            d,
            "s",
            &[(0.1, 0.5), (0.2, 0.45), (0.4, 0.3)],
            "CKA",
            "VQA",
            "fit",
        )
        .unwrap();
    }
    for f in ["p.png", "p.svg", "s.png", "s.svg"] {
        let (x, y) = (
            std::fs::read(a.path().join(f)).unwrap(),
            std::fs::read(b.path().join(f)).unwrap(),
        );
        assert!(!x.is_empty());
        assert!(x == y, "{f} differs between two identical renders");
    }
}

#[test]
fn scatter_fits_and_shows_r() {
    let dir = tempfile::tempdir().unwrap();
    let pts: Vec<(f64, f64)> = (0..6).map(|i| (i as f64, 1.0 + 2.0 * i as f64)).collect();
    let fit = scatter_with_fit(
        dir.path(),
        "l2-vs-vqa",
        &pts,
        "L2 distance",
        "VQA",
        "L2 vs VQA",
    )
    .unwrap();
    assert!((fit.slope - 2.0).abs() < 1e-12 && (fit.intercept - 1.0).abs() < 1e-12);
    assert_eq!(fit.r, Some(1.0));
    assert_eq!(fit.n, 6);
    let svg = std::fs::read_to_string(dir.path().join("l2-vs-vqa.svg")).unwrap();
    for text in [
        "L2 distance",
        "VQA",
        "L2 vs VQA",
        "r = 1.000",
        "runs (n = 6)",
    ] {
        assert!(svg.contains(text), "SVG lacks `{text}`");
    }
    assert!(dir.path().join("l2-vs-vqa.png").is_file());
}

fn plot_err(series: &[Series]) -> (String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let e = line_plot(dir.path(), "p", series, "x", "y", "Bad plot").unwrap_err();
    (e.to_string(), names_in(dir.path()))
}

#[test]
fn bad_plot_input_is_named_and_writes_nothing() {
    let mut s = alpha_series();
    s[1].points[3].1 = f64::NAN;
    let (e, files) = plot_err(&s);
    assert!(
        e.contains("Bad plot")
            && e.contains("NLVR2")
            && e.contains("point #3")
            && e.contains("NaN"),
        "{e}"
    );
    assert!(files.is_empty(), "{files:?}");

    let mut s = alpha_series();
    s[0].label = " ".into();
    let (e, files) = plot_err(&s);
    assert!(e.contains("series #0 has an empty label"), "{e}");
    assert!(files.is_empty());

    let mut s = alpha_series();
    s[1].points.clear();
    let (e, _) = plot_err(&s);
    assert!(e.contains("series `NLVR2` has no points"), "{e}");

    let (e, _) = plot_err(&[]);
    assert!(e.contains("no series"), "{e}");

    let mut s = alpha_series();
    s[0].err = Some(vec![0.1]);
    let (e, _) = plot_err(&s);
    assert!(e.contains("1 error bars for 5 points"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let e = scatter_with_fit(dir.path(), "s", &[(1.0, 2.0), (1.0, 3.0)], "x", "y", "Flat")
        .unwrap_err()
        .to_string();
    assert!(e.contains("two distinct x"), "{e}");
    let e = scatter_with_fit(
        dir.path(),
        "s",
        &[(1.0, 2.0), (f64::INFINITY, 3.0)],
        "x",
        "y",
        "Inf",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("point #1 is (inf, 3)"), "{e}");
    let e = line_plot(dir.path(), "../escape", &alpha_series(), "x", "y", "t").unwrap_err();
    assert!(matches!(e, ReportError::BadName { .. }), "{e}");
    assert!(names_in(dir.path()).is_empty());
}

#[test]
fn failed_write_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-folder");
    let e = line_plot(&missing, "p", &alpha_series(), "x", "y", "t").unwrap_err();
    assert!(e.to_string().contains("no-such-folder"), "{e}");
    assert!(names_in(dir.path()).is_empty());
}

#[test]
fn report_writes_readme_and_csvs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results").join("exp1");
    let report = Report {
        title: "exp1".into(),
        intro: vec!["ViT-B/16 + BERT-base, 3 seeds.".into()],
        tables: vec![sample_table()],
        findings: vec![],
        figures: vec![Figure {
            name: "score-vs-alpha".into(),
            caption: "Score vs α".into(),
        }],
    };
    report.write(&out).unwrap();
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert_eq!(readme, report.to_markdown().unwrap());
    assert!(readme.starts_with("# exp1\n\nViT-B/16 + BERT-base, 3 seeds.\n\n### Main results\n"));
    assert!(readme.contains("[CSV](tables/01-main-results.csv)"));
    assert!(readme.contains("![Score vs α](plots/score-vs-alpha.svg)"));
    let csv = std::fs::read_to_string(out.join("tables/01-main-results.csv")).unwrap();
    assert_eq!(csv, sample_table().to_csv().unwrap());
    assert_eq!(Report::plots_dir(&out), out.join("plots"));

    // A bad table: nothing is written at all.
    let mut bad = report.clone();
    bad.tables[0].rows[0].cells[0] = Cell::Value(f64::INFINITY);
    let other = dir.path().join("other");
    assert!(bad.write(&other).is_err());
    assert!(!other.exists());
}
