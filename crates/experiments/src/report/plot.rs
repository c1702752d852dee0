//! Plots with `plotters`: line plots (score vs α, score vs seed pre-training steps) and
//! scatter plots with a least-squares line (distance metric vs score). Each plot is drawn
//! twice, into an in-memory SVG string and an in-memory RGB buffer (PNG-encoded with `image`),
//! and only when both are complete are `<name>.svg` and `<name>.png` written, each atomically.
//! Text uses the bundled DejaVu Sans (no system fonts).

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::ReportError;
use super::table::fixed;

/// Pixel size of every plot (PNG pixels; SVG user units).
pub const PLOT_SIZE: (u32, u32) = (960, 640);

const FONT_FAMILY: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Registers the bundled font with plotters' `ab_glyph` backend (once per process).
fn ensure_font() -> Result<(), ReportError> {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT_BYTES).is_ok()
    });
    if ok { Ok(()) } else { Err(ReportError::Font) }
}

/// One line of a line plot.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Legend text; must not be empty.
    pub label: String,
    /// `(x, y)` points, drawn in the given order; all finite.
    pub points: Vec<(f64, f64)>,
    /// Optional symmetric error bars (± this much on y), one per point, finite and ≥ 0.
    pub err: Option<Vec<f64>>,
}

impl Series {
    /// A series without error bars.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            label: label.into(),
            points,
            err: None,
        }
    }
}

/// Where a plot went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlotFiles {
    pub png: PathBuf,
    pub svg: PathBuf,
}

/// The least-squares line `y = intercept + slope · x` through a scatter plot's points, with
/// Pearson's r (`None` when all y are equal).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    pub slope: f64,
    pub intercept: f64,
    pub r: Option<f64>,
    pub n: usize,
}

impl Fit {
    /// Ordinary least squares in f64 (centred sums). Needs ≥ 2 points and two distinct x.
    pub fn least_squares(points: &[(f64, f64)]) -> Option<Fit> {
        let n = points.len();
        if n < 2 {
            return None;
        }
        let nf = n as f64;
        let mx = points.iter().map(|p| p.0).sum::<f64>() / nf;
        let my = points.iter().map(|p| p.1).sum::<f64>() / nf;
        let (mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0);
        for &(x, y) in points {
            let (dx, dy) = (x - mx, y - my);
            sxx += dx * dx;
            syy += dy * dy;
            sxy += dx * dy;
        }
        if sxx <= 0.0 || !sxx.is_finite() {
            return None;
        }
        let slope = sxy / sxx;
        // r from the statistics module (the one Pearson); none for a constant y.
        let (xs, ys): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
        let r = (syy > 0.0)
            .then(|| crate::stats::pearson(&xs, &ys).ok())
            .flatten();
        Some(Fit {
            slope,
            intercept: my - slope * mx,
            r,
            n,
        })
    }
}

/// Draws one or more series as lines with point markers (and error bars where given) and
/// writes `<dir>/<name>.png` and `<dir>/<name>.svg`. `dir` must exist.
pub fn line_plot(
    dir: &Path,
    name: &str,
    series: &[Series],
    x_label: &str,
    y_label: &str,
    title: &str,
) -> Result<PlotFiles, ReportError> {
    check_name(name)?;
    if series.is_empty() {
        return Err(bad(title, "no series to draw".into()));
    }
    for (i, s) in series.iter().enumerate() {
        if s.label.trim().is_empty() {
            return Err(bad(title, format!("series #{i} has an empty label")));
        }
        if s.points.is_empty() {
            return Err(bad(title, format!("series `{}` has no points", s.label)));
        }
        check_points(title, &s.label, &s.points)?;
        if let Some(err) = &s.err {
            if err.len() != s.points.len() {
                return Err(bad(
                    title,
                    format!(
                        "series `{}` has {} error bars for {} points",
                        s.label,
                        err.len(),
                        s.points.len()
                    ),
                ));
            }
            if let Some((j, e)) = err
                .iter()
                .enumerate()
                .find(|(_, e)| !(e.is_finite() && **e >= 0.0))
            {
                return Err(bad(
                    title,
                    format!(
                        "series `{}`: error bar #{j} is {e}, not a finite number ≥ 0",
                        s.label
                    ),
                ));
            }
        }
    }
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for s in series {
        for (j, &(x, y)) in s.points.iter().enumerate() {
            let e = s.err.as_ref().map_or(0.0, |e| e[j]);
            xs.push(x);
            ys.push(y - e);
            ys.push(y + e);
        }
    }
    let spec = Spec {
        title,
        x_label,
        y_label,
        x_range: padded_range(&xs),
        y_range: padded_range(&ys),
    };
    render(dir, name, title, &Lines { spec, series })
}

/// Draws `points` as a scatter plot with their least-squares line, Pearson's r and n in the
/// line's legend entry, and writes `<dir>/<name>.png` and `<dir>/<name>.svg`. Returns the fit.
pub fn scatter_with_fit(
    dir: &Path,
    name: &str,
    points: &[(f64, f64)],
    x_label: &str,
    y_label: &str,
    title: &str,
) -> Result<Fit, ReportError> {
    check_name(name)?;
    check_points(title, "points", points)?;
    let fit = Fit::least_squares(points).ok_or_else(|| {
        bad(
            title,
            format!(
                "a fitted line needs at least 2 points with two distinct x values, got {} point(s)",
                points.len()
            ),
        )
    })?;
    let xs: Vec<f64> = points.iter().map(|p| p.0).collect();
    let x_range = padded_range(&xs);
    let mut ys: Vec<f64> = points.iter().map(|p| p.1).collect();
    ys.push(fit.intercept + fit.slope * x_range.0);
    ys.push(fit.intercept + fit.slope * x_range.1);
    let spec = Spec {
        title,
        x_label,
        y_label,
        x_range,
        y_range: padded_range(&ys),
    };
    render(dir, name, title, &Scatter { spec, points, fit })?;
    Ok(fit)
}

struct Spec<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    x_range: (f64, f64),
    y_range: (f64, f64),
}

fn bad(title: &str, reason: String) -> ReportError {
    ReportError::Plot {
        plot: title.to_string(),
        reason,
    }
}

fn check_name(name: &str) -> Result<(), ReportError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ReportError::BadName {
            name: name.to_string(),
        })
    }
}

fn check_points(title: &str, what: &str, points: &[(f64, f64)]) -> Result<(), ReportError> {
    if points.is_empty() {
        return Err(bad(title, format!("`{what}` has no points")));
    }
    if let Some((i, (x, y))) = points
        .iter()
        .enumerate()
        .find(|(_, (x, y))| !(x.is_finite() && y.is_finite()))
    {
        return Err(bad(
            title,
            format!("`{what}`: point #{i} is ({x}, {y}); every coordinate must be finite"),
        ));
    }
    Ok(())
}

/// `[min, max]` widened by 5 % each side (by 1, or 5 % of |v|, when all values are equal).
fn padded_range(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * 0.05
    } else if lo != 0.0 {
        lo.abs() * 0.05
    } else {
        1.0
    };
    (lo - pad, hi + pad)
}

/// Something that can draw itself on any plotters backend.
trait Figure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

struct Lines<'a> {
    spec: Spec<'a>,
    series: &'a [Series],
}

struct Scatter<'a> {
    spec: Spec<'a>,
    points: &'a [(f64, f64)],
    fit: Fit,
}

fn msg<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// White background, title, axes with their labels, light grid.
fn axes<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    spec: &Spec<'_>,
) -> Result<Chart<'a, DB>, String> {
    root.fill(&WHITE).map_err(msg)?;
    let mut chart = ChartBuilder::on(root)
        .caption(spec.title, (FONT_FAMILY, 24))
        .margin(16)
        .x_label_area_size(56)
        .y_label_area_size(80)
        .build_cartesian_2d(
            spec.x_range.0..spec.x_range.1,
            spec.y_range.0..spec.y_range.1,
        )
        .map_err(msg)?;
    chart
        .configure_mesh()
        .x_desc(spec.x_label)
        .y_desc(spec.y_label)
        .label_style((FONT_FAMILY, 14))
        .axis_desc_style((FONT_FAMILY, 16))
        .draw()
        .map_err(msg)?;
    Ok(chart)
}

fn legend<'a, DB: DrawingBackend + 'a>(chart: &mut Chart<'a, DB>) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT_FAMILY, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(msg)
}

impl Figure for Lines<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let mut chart = axes(root, &self.spec)?;
        for (i, s) in self.series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            if let Some(err) = &s.err {
                chart
                    .draw_series(s.points.iter().zip(err).map(|(&(x, y), &e)| {
                        PathElement::new(vec![(x, y - e), (x, y + e)], color.stroke_width(1))
                    }))
                    .map_err(msg)?;
            }
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(msg)?
                .label(s.label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(msg)?;
        }
        legend(&mut chart)
    }
}

/// Compact number text for a legend: fixed 3 decimals in [0.01, 10⁴), else `{:.3e}`.
fn short(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || (0.01..1e4).contains(&a) {
        fixed(v, 3)
    } else {
        format!("{v:.3e}")
    }
}

impl Figure for Scatter<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let mut chart = axes(root, &self.spec)?;
        let point_color = Palette99::pick(0).to_rgba();
        let line_color = Palette99::pick(1).to_rgba();
        chart
            .draw_series(
                self.points
                    .iter()
                    .map(|&p| Circle::new(p, 4, point_color.filled())),
            )
            .map_err(msg)?
            .label(format!("runs (n = {})", self.fit.n))
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, point_color.filled()));
        let (x0, x1) = self.spec.x_range;
        let f = |x: f64| self.fit.intercept + self.fit.slope * x;
        let r = self
            .fit
            .r
            .map_or_else(|| "undefined".to_string(), |r| fixed(r, 3));
        chart
            .draw_series(LineSeries::new(
                [(x0, f(x0)), (x1, f(x1))],
                line_color.stroke_width(2),
            ))
            .map_err(msg)?
            .label(format!(
                "least squares: y = {} {} {}·x, r = {r}",
                short(self.fit.intercept),
                if self.fit.slope < 0.0 { '-' } else { '+' },
                short(self.fit.slope.abs())
            ))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], line_color.stroke_width(2))
            });
        legend(&mut chart)
    }
}

/// Draws `fig` into an SVG string and an RGB buffer, PNG-encodes the buffer, and only then
/// writes `<dir>/<name>.png` and `<dir>/<name>.svg`, each atomically.
fn render(
    dir: &Path,
    name: &str,
    title: &str,
    fig: &impl Figure,
) -> Result<PlotFiles, ReportError> {
    ensure_font()?;
    let (w, h) = PLOT_SIZE;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        fig.draw(&root)
            .map_err(|r| bad(title, format!("drawing the SVG failed: {r}")))?;
        root.present()
            .map_err(|e| bad(title, format!("drawing the SVG failed: {e}")))?;
    }
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, PLOT_SIZE).into_drawing_area();
        fig.draw(&root)
            .map_err(|r| bad(title, format!("drawing the PNG failed: {r}")))?;
        root.present()
            .map_err(|e| bad(title, format!("drawing the PNG failed: {e}")))?;
    }
    let mut png = Vec::new();
    {
        use image::ImageEncoder;
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(&rgb, w, h, image::ExtendedColorType::Rgb8)
            .map_err(|e| bad(title, format!("encoding the PNG failed: {e}")))?;
    }
    let files = PlotFiles {
        png: dir.join(format!("{name}.png")),
        svg: dir.join(format!("{name}.svg")),
    };
    mmerge_core::atomic::write_atomic(&files.png, &png)?;
    mmerge_core::atomic::write_atomic(&files.svg, svg.as_bytes())?;
    Ok(files)
}
