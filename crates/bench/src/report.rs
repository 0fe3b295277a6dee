//! `report.html`: the run on one page — the headline table, then each suite with
//! its method, its skips, a table per metric and the plot, referenced relatively
//! so that the output directory can be moved or published as it is.

use std::fmt::Write;

use crate::platform::Platform;
use crate::results::{Metric, PlotKind, Results};

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn number(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// A whole number as one (a sweep's connection counts), anything else as [`number`].
fn number_or_count(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        number(value)
    }
}

fn ratio(value: Option<f64>) -> String {
    value.map_or("–".to_owned(), |r| format!("{r:.2}×"))
}

/// The headline: one row per metric, a column per platform (median and ratio).
fn headline(out: &mut String, results: &Results) {
    let platforms = results.measured_platforms();
    let _ = write!(out, "<table><tr><th>metric</th><th>unit</th>");
    for platform in &platforms {
        let _ = write!(out, "<th>{}</th>", esc(platform.name()));
    }
    let _ = writeln!(out, "</tr>");
    for metric in results
        .suites
        .iter()
        .flat_map(|s| &s.metrics)
        .filter(|m| m.headline)
    {
        let _ = write!(
            out,
            "<tr><td><a href=\"#{}\">{}</a></td><td>{}</td>",
            esc(&metric.id),
            esc(&metric.title),
            esc(&metric.unit)
        );
        for platform in &platforms {
            match metric
                .series_of(*platform)
                .and_then(|s| Some((s.summary?, s.ratio_to_process)))
            {
                Some((summary, r)) => {
                    let _ = write!(
                        out,
                        "<td>{} <span class=\"ratio\">({})</span></td>",
                        number(summary.median),
                        ratio(r)
                    );
                }
                None => {
                    let _ = write!(out, "<td>–</td>");
                }
            }
        }
        let _ = writeln!(out, "</tr>");
    }
    let _ = writeln!(out, "</table>");
}

fn metric_section(out: &mut String, metric: &Metric) {
    let _ = writeln!(
        out,
        "<h3 id=\"{}\">{}</h3>",
        esc(&metric.id),
        esc(&metric.title)
    );
    if let Some(svg) = metric.files.iter().find(|f| f.ends_with(".svg")) {
        let _ = writeln!(
            out,
            "<img src=\"{}\" alt=\"{}\" width=\"900\" height=\"520\">",
            esc(svg),
            esc(&metric.title)
        );
    }
    if matches!(metric.plot, PlotKind::Sweep | PlotKind::LogSweep) {
        sweep_table(out, metric);
    } else {
        summary_table(out, metric);
    }
    let _ = writeln!(
        out,
        "<p class=\"note\">unit: {}; {}</p>",
        esc(&metric.unit),
        if metric.lower_is_better {
            "lower is better"
        } else {
            "higher is better"
        }
    );
}

/// A sweep's steps: a row per `x`, a column per platform.
fn sweep_table(out: &mut String, metric: &Metric) {
    let mut steps: Vec<f64> = metric
        .series
        .iter()
        .flat_map(|s| s.x.iter().flatten().copied())
        .collect();
    steps.sort_by(f64::total_cmp);
    steps.dedup();
    let _ = write!(
        out,
        "<table><tr><th>{}</th>",
        esc(metric.x_label.as_deref().unwrap_or("x"))
    );
    for series in &metric.series {
        let _ = write!(out, "<th>{}</th>", esc(series.platform.name()));
    }
    let _ = writeln!(out, "</tr>");
    for step in steps {
        let _ = write!(out, "<tr><td>{}</td>", number_or_count(step));
        for series in &metric.series {
            let value = series
                .x
                .iter()
                .flatten()
                .position(|x| *x == step)
                .and_then(|i| series.samples.get(i));
            let _ = match value {
                Some(v) => write!(out, "<td>{}</td>", number(*v)),
                None => write!(out, "<td>–</td>"),
            };
        }
        let _ = writeln!(out, "</tr>");
    }
    let _ = writeln!(out, "</table>");
}

/// Every platform's samples summarised, with the ratio to process (and to the
/// metric's reference, when it has one).
fn summary_table(out: &mut String, metric: &Metric) {
    let _ = write!(
        out,
        "<table><tr><th>platform</th><th>samples</th><th>min</th><th>median</th><th>p99</th><th>max</th><th>ratio to process (median)</th>"
    );
    if let Some(reference) = &metric.reference {
        let _ = write!(
            out,
            "<th>ratio to {} ({} {})</th>",
            esc(&reference.label),
            number(reference.value),
            esc(&metric.unit)
        );
    }
    let _ = writeln!(out, "</tr>");
    for series in &metric.series {
        let Some(s) = series.summary else { continue };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><b>{}</b></td><td>{}</td><td>{}</td><td>{}</td>",
            esc(series.platform.name()),
            s.count,
            number(s.min),
            number(s.median),
            number(s.p99),
            number(s.max),
            ratio(series.ratio_to_process)
        );
        if metric.reference.is_some() {
            let _ = write!(out, "<td>{}</td>", ratio(series.ratio_to_reference));
        }
        let _ = writeln!(out, "</tr>");
    }
    let _ = writeln!(out, "</table>");
}

/// Renders the whole report.
pub(crate) fn html(results: &Results) -> String {
    let mut out = String::new();
    let m = &results.machine;
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>lightvm bench report</title>\n<style>\nbody {{ font-family: sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }}\ntable {{ border-collapse: collapse; margin: 0.5em 0 1em; }}\nth, td {{ border: 1px solid #bbb; padding: 3px 8px; text-align: right; }}\nth:first-child, td:first-child {{ text-align: left; }}\n.ratio {{ color: #666; font-size: 90%; }}\n.note, .skip {{ color: #555; font-size: 90%; }}\nimg {{ max-width: 100%; height: auto; border: 1px solid #ddd; }}\n</style></head><body>"
    );
    let _ = writeln!(out, "<h1>lightvm bench</h1>");
    let _ = writeln!(
        out,
        "<p><code>{}</code> — {} run(s) per platform after {} warm-up, {:.0} s{}.</p>",
        esc(&results.command.join(" ")),
        results.runs,
        results.warmup,
        results.duration_s,
        if results.quick { ", --quick" } else { "" }
    );
    let _ = writeln!(
        out,
        "<p>Machine: {} — {} × {}, {} MiB, kernel {}{}; /dev/kvm {}; load average {:.1} at the start.</p>",
        esc(&m.hostname),
        m.cpus,
        esc(&m.cpu_model),
        m.mem_total_kib / 1024,
        esc(&m.kernel),
        match (m.virtualized, m.kvm) {
            (true, true) => ", itself a VM (its KVM is nested)",
            (true, false) => ", itself a VM",
            (false, _) => "",
        },
        if m.kvm { "usable" } else { "not usable" },
        m.load_average_start
    );
    let versions: Vec<String> = results
        .versions
        .iter()
        .map(|(k, v)| format!("{}: {}", esc(k), esc(v)))
        .collect();
    let _ = writeln!(
        out,
        "<p class=\"note\">Versions — {}</p>",
        versions.join("; ")
    );
    let _ = writeln!(
        out,
        "<h2>Headline</h2><p>Median of each metric; in parentheses its ratio to the <code>process</code> median of this same run (machines are noisy: only same-run ratios compare).</p>"
    );
    headline(&mut out, results);
    let _ = writeln!(out, "<h2>Platforms</h2><table><tr><th>platform</th><th>what an instance is</th><th>available</th></tr>");
    for p in &results.platforms {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td style=\"text-align:left\">{}</td><td style=\"text-align:left\">{}</td></tr>",
            esc(p.platform.name()),
            esc(&p.description),
            p.reason.as_ref().map_or("yes".to_owned(), |r| format!("no: {}", esc(r)))
        );
    }
    let _ = writeln!(out, "</table>");
    for suite in &results.suites {
        let _ = writeln!(
            out,
            "<h2 id=\"suite-{0}\">Suite: {0}</h2>",
            esc(&suite.suite)
        );
        let _ = writeln!(out, "<p>{}</p>", esc(&suite.method));
        if let Some(reason) = &suite.skipped_reason {
            let _ = writeln!(out, "<p class=\"skip\"><b>Skipped:</b> {}</p>", esc(reason));
        }
        // Platforms not available at all are explained once, in the table above.
        let available = |platform: Platform| {
            results
                .platforms
                .iter()
                .any(|p| p.platform == platform && p.available)
        };
        let skipped: Vec<_> = suite
            .skipped
            .iter()
            .filter(|skip| available(skip.platform))
            .collect();
        if !skipped.is_empty() {
            let _ = writeln!(out, "<ul class=\"skip\">");
            for skip in skipped {
                let _ = writeln!(
                    out,
                    "<li>{} skipped: {}</li>",
                    esc(skip.platform.name()),
                    esc(&skip.reason)
                );
            }
            let _ = writeln!(out, "</ul>");
        }
        for metric in &suite.metrics {
            metric_section(&mut out, metric);
        }
    }
    let _ = writeln!(
        out,
        "<p class=\"note\">Every sample is in results.json and results.csv beside this page.</p></body></html>"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_is_a_table_of_its_steps() {
        let mut metric = Metric::lines("rate", "Rate", "req/s", "connections");
        metric.plot = PlotKind::Sweep;
        metric.push(Platform::Process, vec![10.0, 20.0], Some(vec![1.0, 8.0]));
        let pool = crate::platform::Unikernel::new(
            lightvm_vmm::Platform::Process,
            crate::platform::Start::Pool,
        );
        metric.push(pool.into(), vec![5.0], Some(vec![1.0]));
        let mut out = String::new();
        metric_section(&mut out, &metric);
        assert!(out.contains("<th>connections</th><th>process</th><th>unikernel-process-pool</th>"));
        assert!(out.contains("<tr><td>1</td><td>10.0</td><td>5.0</td></tr>"));
        assert!(
            out.contains("<tr><td>8</td><td>20.0</td><td>–</td></tr>"),
            "{out}"
        );
    }

    #[test]
    fn a_reference_adds_a_column_of_ratios() {
        let mut metric = Metric::new("syscall-generic", "S", "ns", PlotKind::LogBars, true);
        metric.push(Platform::Process, vec![400.0], None);
        metric.push(
            Platform::LinuxProgram(lightvm_vmm::Platform::Kvm),
            vec![20000.0],
            None,
        );
        metric.reference = Some(crate::results::Reference {
            label: "the process's getppid()".to_owned(),
            value: 200.0,
        });
        metric.finish();
        let mut out = String::new();
        metric_section(&mut out, &metric);
        assert!(
            out.contains("<th>ratio to the process's getppid() (200 ns)</th>"),
            "{out}"
        );
        assert!(out.contains("<td>1.00×</td><td>2.00×</td></tr>"), "{out}");
        assert!(
            out.contains("<td>linux-program-kvm</td>")
                && out.contains("<td>50.00×</td><td>100.00×</td></tr>"),
            "{out}"
        );
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }

    #[test]
    fn numbers_keep_a_few_significant_digits() {
        assert_eq!(number(1234.56), "1235");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(0.01234), "0.012");
        assert_eq!(ratio(Some(2.0)), "2.00×");
        assert_eq!(ratio(None), "–");
    }
}
