//! The plots: one SVG per metric in the style of the papers this suite follows —
//! bars on a log scale for quantities that differ by orders of magnitude (boot
//! time, size), lines for quantities over a sweep (density) — and a PNG of each,
//! rendered from the SVG by `rsvg-convert` (librsvg2-bin).

use std::path::Path;
use std::process::Command;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::BenchError;
use crate::platform::{Platform, Start};
use crate::results::{Metric, PlotKind};

const SIZE: (u32, u32) = (900, 520);

/// A colour per platform, the same in every plot: cold unikernels in reds, pooled
/// ones in greens, Linux programs in oranges, the darker of each pair on kvm.
fn colour(platform: Platform) -> RGBColor {
    use lightvm_vmm::Platform::{Kvm, Process};
    match platform {
        Platform::Process => RGBColor(0x44, 0x44, 0x44),
        Platform::Container => RGBColor(0x1f, 0x77, 0xb4),
        Platform::Unikernel(unikernel) => match (unikernel.on, unikernel.start) {
            (Kvm, Start::Cold) => RGBColor(0xd6, 0x27, 0x28),
            (Process, Start::Cold) => RGBColor(0xe3, 0x77, 0xc2),
            (Kvm, Start::Pool) => RGBColor(0x2c, 0xa0, 0x2c),
            (Process, Start::Pool) => RGBColor(0xbc, 0xbd, 0x22),
        },
        Platform::LinuxProgram(Kvm) => RGBColor(0xa6, 0x36, 0x03),
        Platform::LinuxProgram(Process) => RGBColor(0xfd, 0xae, 0x6b),
        Platform::LinuxMicrovm => RGBColor(0x94, 0x67, 0xbd),
        Platform::QemuMicrovm => RGBColor(0x8c, 0x56, 0x4b),
        Platform::Firecracker => RGBColor(0xff, 0x7f, 0x0e),
        Platform::CloudHypervisor => RGBColor(0x17, 0xbe, 0xcf),
    }
}

/// Short text for a value on a bar.
fn format_value(value: f64) -> String {
    if value == 0.0 {
        "0".to_owned()
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// Draws `metric` to `dir/ID.svg` (and `dir/ID.png` when `png`); returns the file
/// names written, relative to `dir`.
pub(crate) fn draw(metric: &Metric, dir: &Path, png: bool) -> Result<Vec<String>, BenchError> {
    let svg_name = format!("{}.svg", metric.id);
    let svg = dir.join(&svg_name);
    let failed = |detail: String| BenchError::Plot {
        metric: metric.id.clone(),
        detail,
    };
    let drawn = match metric.plot {
        PlotKind::LogBars => bars(metric, &svg, true),
        PlotKind::Bars => bars(metric, &svg, false),
        PlotKind::Lines => lines(metric, &svg, Axes::LINEAR),
        PlotKind::LogLines => lines(
            metric,
            &svg,
            Axes {
                log_x: false,
                log_y: true,
            },
        ),
        PlotKind::Sweep => lines(
            metric,
            &svg,
            Axes {
                log_x: true,
                log_y: false,
            },
        ),
        PlotKind::LogSweep => lines(
            metric,
            &svg,
            Axes {
                log_x: true,
                log_y: true,
            },
        ),
    };
    drawn.map_err(|e| failed(e.to_string()))?;
    let mut files = vec![svg_name];
    if png {
        let png_name = format!("{}.png", metric.id);
        let output = Command::new("rsvg-convert")
            .arg("--background-color=white")
            .arg("-o")
            .arg(dir.join(&png_name))
            .arg(&svg)
            .output()
            .map_err(|e| failed(format!("running rsvg-convert: {e}")))?;
        if !output.status.success() {
            return Err(failed(format!(
                "rsvg-convert: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        files.push(png_name);
    }
    Ok(files)
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// The unit as axes show it.
fn unit(metric: &Metric) -> String {
    match metric.unit.as_str() {
        "us" => "µs".to_owned(),
        other => other.to_owned(),
    }
}

fn caption(metric: &Metric) -> String {
    let better = if metric.lower_is_better {
        "lower is better"
    } else {
        "higher is better"
    };
    format!("{} ({better})", metric.title)
}

/// One bar per platform to its median, a whisker from min to p99.
fn bars(metric: &Metric, path: &Path, log: bool) -> DrawResult {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let series: Vec<_> = metric
        .series
        .iter()
        .filter_map(|s| Some((s.platform, s.summary?)))
        .collect();
    let count = series.len().max(1);
    let low = series
        .iter()
        .map(|(_, s)| s.min)
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let high = series
        .iter()
        .map(|(_, s)| s.p99.max(s.median))
        .fold(0.0, f64::max);
    let x_range = -0.5..(count as f64 - 0.5);
    if log {
        let low = if low.is_finite() { low } else { 1.0 };
        let floor = 10f64.powf(low.log10().floor()).min(low / 2.0);
        let ceiling = (high * 3.0).max(floor * 10.0);
        let y_range = (floor..ceiling).log_scale();
        bar_chart(&root, metric, &series, x_range, y_range, floor)?;
    } else {
        let ceiling = (high * 1.2).max(1e-9);
        bar_chart(&root, metric, &series, x_range, 0.0..ceiling, 0.0)?;
    }
    root.present()?;
    Ok(())
}

/// The axes, the mesh, the bars and the labels of a bar plot, for either kind
/// of `y` axis; the bars rise from `floor`.
fn bar_chart<'a, Y>(
    root: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
    metric: &Metric,
    series: &[(Platform, crate::stats::Summary)],
    x_range: std::ops::Range<f64>,
    y_range: Y,
    floor: f64,
) -> DrawResult
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(root)
        .caption(caption(metric), ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(70)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, y_range)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(unit(metric))
        .y_label_formatter(&|v| format_value(*v))
        .draw()?;
    draw_bars(&mut chart, series, floor)?;
    label_platforms(root, &chart, series, floor, &unit(metric))
}

fn draw_bars<'a, Y>(
    chart: &mut ChartContext<
        'a,
        SVGBackend<'a>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, Y>,
    >,
    series: &[(Platform, crate::stats::Summary)],
    floor: f64,
) -> DrawResult
where
    Y: Ranged<ValueType = f64>,
{
    for (index, (platform, summary)) in series.iter().enumerate() {
        let x = index as f64;
        let fill = colour(*platform);
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x - 0.3, floor), (x + 0.3, summary.median)],
            fill.filled(),
        )))?;
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(x, summary.min.max(floor)), (x, summary.p99)],
            BLACK.stroke_width(2),
        )))?;
        for y in [summary.min.max(floor), summary.p99] {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x - 0.08, y), (x + 0.08, y)],
                BLACK.stroke_width(2),
            )))?;
        }
    }
    Ok(())
}

/// Platform names and medians under the bars (drawn on the root: the plot area
/// clips).
fn label_platforms<'a, Y>(
    root: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
    chart: &ChartContext<
        'a,
        SVGBackend<'a>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, Y>,
    >,
    series: &[(Platform, crate::stats::Summary)],
    floor: f64,
    unit: &str,
) -> DrawResult
where
    Y: Ranged<ValueType = f64>,
{
    let style = ("sans-serif", 15)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Top));
    // Room per bar, in characters of this font (about 8 px each).
    let plot_width = chart.plotting_area().dim_in_pixel().0 as usize;
    let room = plot_width / series.len().max(1) / 8;
    for (index, (platform, summary)) in series.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(index as f64, floor));
        let mut lines = label_lines(platform.name(), room);
        lines.push(format!("{} {unit}", format_value(summary.median)));
        for (line, text) in lines.into_iter().enumerate() {
            let dy = 6 + 18 * i32::try_from(line).unwrap_or(0);
            root.draw(&Text::new(text, (x, y + dy), style.clone()))?;
        }
    }
    Ok(())
}

/// Row families whose names break after the family (`linux-program-` / `kvm`).
const FAMILIES: [&str; 2] = ["unikernel-", "linux-program-"];

/// A platform's name under its bar: on one line where it fits in `room`
/// characters, else broken after its family (`unikernel-` / `kvm-pool`,
/// `linux-program-` / `kvm`) or its first word, so that the rows of one family
/// line up.
fn label_lines(name: &str, room: usize) -> Vec<String> {
    if name.len() <= room {
        return vec![name.to_owned()];
    }
    let family = FAMILIES
        .iter()
        .find(|family| name.len() > family.len() && name.starts_with(*family))
        .map(|family| family.len())
        .or_else(|| name.find('-').map(|dash| dash + 1));
    match family {
        Some(at) => vec![name[..at].to_owned(), name[at..].to_owned()],
        None => vec![name.to_owned()],
    }
}

/// Which axes of a line plot are logarithmic.
#[derive(Clone, Copy)]
struct Axes {
    log_x: bool,
    log_y: bool,
}

impl Axes {
    const LINEAR: Axes = Axes {
        log_x: false,
        log_y: false,
    };
}

/// One line per platform over its `x`.
fn lines(metric: &Metric, path: &Path, axes: Axes) -> DrawResult {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let all: Vec<(f64, f64)> = metric.series.iter().flat_map(points).collect();
    let x_max = all.iter().map(|p| p.0).fold(1.0, f64::max) * 1.02;
    let y_max = all.iter().map(|p| p.1).fold(1e-9, f64::max) * 1.1;
    let smallest_positive = |values: &mut dyn Iterator<Item = f64>| {
        let min = values.filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
        if min.is_finite() {
            min / 1.5
        } else {
            1.0
        }
    };
    let x_min = smallest_positive(&mut all.iter().map(|p| p.0));
    let y_min = smallest_positive(&mut all.iter().map(|p| p.1));
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(caption(metric), ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70);
    let x_linear = 0.0..x_max;
    let x_log = (x_min..x_max.max(x_min * 2.0)).log_scale();
    let y_linear = 0.0..y_max;
    let y_log = (y_min..y_max.max(y_min * 10.0)).log_scale();
    match (axes.log_x, axes.log_y) {
        (false, false) => line_chart(&mut builder, x_linear, y_linear, axes, metric)?,
        (false, true) => line_chart(&mut builder, x_linear, y_log, axes, metric)?,
        (true, false) => line_chart(&mut builder, x_log, y_linear, axes, metric)?,
        (true, true) => line_chart(&mut builder, x_log, y_log, axes, metric)?,
    }
    root.present()?;
    Ok(())
}

/// The axes, the mesh and the lines of a line plot, for any kind of axis.
fn line_chart<'a, X, Y>(
    builder: &mut ChartBuilder<'_, '_, SVGBackend<'a>>,
    x: X,
    y: Y,
    axes: Axes,
    metric: &Metric,
) -> DrawResult
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = builder.build_cartesian_2d(x, y)?;
    // A log axis' fine lines crowd into bands; its major lines are enough.
    let fine = if axes.log_x || axes.log_y {
        TRANSPARENT
    } else {
        BLACK.mix(0.1)
    };
    chart
        .configure_mesh()
        .light_line_style(fine)
        .x_desc(metric.x_label.clone().unwrap_or_default())
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc(unit(metric))
        .y_label_formatter(&|v| format_value(*v))
        .draw()?;
    draw_lines(&mut chart, metric)
}

/// Series up to this long get a marker at each point (a sweep's steps).
const MARKERS_UP_TO: usize = 30;

/// Series longer than this are drawn as dots plus a rolling median.
const DOTS_ABOVE: usize = 200;

/// The median of each run of `window` consecutive points, at the run's middle x.
fn rolling_median(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    points
        .chunks(window.max(1))
        .filter_map(|chunk| {
            let mut ys: Vec<f64> = chunk.iter().map(|p| p.1).collect();
            ys.sort_by(f64::total_cmp);
            let x = chunk.get(chunk.len() / 2)?.0;
            Some((x, *ys.get(ys.len() / 2)?))
        })
        .collect()
}

/// The (x, y) points of a series (x = 1, 2, … when it has none).
fn points(series: &crate::results::Series) -> Vec<(f64, f64)> {
    match &series.x {
        Some(x) => x
            .iter()
            .copied()
            .zip(series.samples.iter().copied())
            .collect(),
        None => (1..)
            .map(f64::from)
            .zip(series.samples.iter().copied())
            .collect(),
    }
}

fn draw_lines<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    metric: &Metric,
) -> DrawResult
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    // Long series (density: one sample per instance) would be an unreadable band
    // of zig-zags: show every sample as a faint dot and its rolling median as the line.
    for series in &metric.series {
        let colour = colour(series.platform);
        let points = points(series);
        let line = if points.len() > DOTS_ABOVE {
            chart.draw_series(
                points
                    .iter()
                    .map(|&p| Circle::new(p, 1, colour.mix(0.25).filled())),
            )?;
            rolling_median(&points, (points.len() / 100).max(5))
        } else {
            if points.len() <= MARKERS_UP_TO {
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
            }
            points
        };
        chart
            .draw_series(LineSeries::new(line, colour.stroke_width(2)))?
            .label(series.platform.name())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_broken_after_their_first_word() {
        assert_eq!(label_lines("process", 10), ["process"]);
        assert_eq!(
            label_lines("unikernel-process-pool", 16),
            ["unikernel-", "process-pool"]
        );
        assert_eq!(
            label_lines("unikernel-kvm-cold", 30),
            ["unikernel-kvm-cold"]
        );
        assert_eq!(
            label_lines("linux-program-process", 16),
            ["linux-program-", "process"]
        );
        assert_eq!(label_lines("qemu-microvm", 8), ["qemu-", "microvm"]);
    }

    #[test]
    fn rolling_medians_ignore_outliers() {
        let points: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), if i == 3 { 1000.0 } else { 1.0 }))
            .collect();
        assert_eq!(rolling_median(&points, 5), vec![(2.0, 1.0), (7.0, 1.0)]);
        assert!(rolling_median(&[], 5).is_empty());
    }
}
