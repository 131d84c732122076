//! Results: metrics with their targets, each side's runs folded into medians ([`Summary`]),
//! the final table (one column per side and their ratio) and machine facts for the JSON file.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Which side of its target a metric must be on.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Goal {
    /// The value must not exceed the target (costs, latencies, memory).
    AtMost,
    /// The value must reach the target (rates).
    AtLeast,
}

/// A target from the issue.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Target {
    pub(crate) value: f64,
    pub(crate) goal: Goal,
}

/// One measured figure.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Metric {
    pub(crate) name: String,
    pub(crate) value: f64,
    pub(crate) unit: String,
    pub(crate) target: Option<Target>,
    /// Whether the target is met; `None` without a target.
    pub(crate) met: Option<bool>,
}

impl Metric {
    /// A figure without a target (context, not a goal).
    pub(crate) fn info(name: &str, value: f64, unit: &str) -> Self {
        Self {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            target: None,
            met: None,
        }
    }

    /// A figure that must stay at or below `target`.
    pub(crate) fn at_most(name: &str, value: f64, unit: &str, target: f64) -> Self {
        Self::with_target(name, value, unit, target, Goal::AtMost)
    }

    /// A figure that must reach `target`.
    pub(crate) fn at_least(name: &str, value: f64, unit: &str, target: f64) -> Self {
        Self::with_target(name, value, unit, target, Goal::AtLeast)
    }

    fn with_target(name: &str, value: f64, unit: &str, target: f64, goal: Goal) -> Self {
        let met = value.is_finite()
            && match goal {
                Goal::AtMost => value <= target,
                Goal::AtLeast => value >= target,
            };
        Self {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            target: Some(Target {
                value: target,
                goal,
            }),
            met: Some(met),
        }
    }
}

/// What one scenario produced.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ScenarioResult {
    pub(crate) name: String,
    pub(crate) metrics: Vec<Metric>,
    /// Raw counts and settings behind the metrics.
    pub(crate) details: serde_json::Value,
}

/// Facts about the machine and the code measured.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Machine {
    pub(crate) nproc: usize,
    pub(crate) cpu_model: String,
    pub(crate) kernel: String,
    pub(crate) memory_total_kib: Option<u64>,
    pub(crate) git_commit: String,
    pub(crate) git_dirty: bool,
    pub(crate) date_utc: String,
    pub(crate) rustc: String,
    pub(crate) clock_ticks_per_second: f64,
    pub(crate) clock_ticks_source: String,
    pub(crate) open_files_soft_limit: Option<u64>,
    /// `/proc/loadavg` when the run started: other work on the machine skews the rates.
    pub(crate) load_average_at_start: String,
}

impl Machine {
    /// Collects what the machine says about itself; unknown facts read `unknown`.
    pub(crate) fn collect(workspace: &std::path::Path, ticks: (f64, &str)) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == "model name").then(|| value.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_total_kib = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok());
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let open_files_soft_limit = limits
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .and_then(|line| {
                line.trim_start_matches("Max open files")
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            });
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .args(args)
                .current_dir(workspace)
                .output()
                .ok()
                .filter(|out| out.status.success())
                .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".to_owned(), |k| k.trim().to_owned()),
            memory_total_kib,
            git_commit: git(&["rev-parse", "--short", "HEAD"])
                .unwrap_or_else(|| "unknown".to_owned()),
            git_dirty: git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty()),
            date_utc: utc_now(),
            rustc: std::process::Command::new("rustc")
                .arg("--version")
                .output()
                .ok()
                .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
                .unwrap_or_else(|| "unknown".to_owned()),
            clock_ticks_per_second: ticks.0,
            clock_ticks_source: ticks.1.to_owned(),
            open_files_soft_limit,
            load_average_at_start: std::fs::read_to_string("/proc/loadavg")
                .map_or_else(|_| "unknown".to_owned(), |l| l.trim().to_owned()),
        }
    }
}

/// One side's runs of one scenario: each metric's median over the runs, and every run's value.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Summary {
    pub(crate) name: String,
    /// Medians; the field names match a single run's metrics, so readers of older results
    /// (`bench/plot.py`) still work.
    pub(crate) metrics: Vec<SummaryMetric>,
    /// Every run's details, in order.
    pub(crate) details: serde_json::Value,
    /// Why this side has no figures for the scenario (shown as `n/a`).
    pub(crate) unavailable: Option<String>,
    /// Runs that failed, with their errors.
    pub(crate) errors: Vec<String>,
}

/// A metric's median over the runs.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct SummaryMetric {
    pub(crate) name: String,
    /// Median of the runs' finite values (NaN if none).
    pub(crate) value: f64,
    pub(crate) unit: String,
    pub(crate) target: Option<Target>,
    /// Whether the median meets the target; `None` without a target.
    pub(crate) met: Option<bool>,
    /// Each run's value, in run order.
    pub(crate) runs: Vec<f64>,
}

impl Summary {
    /// Folds the runs of scenario `name`; metrics keep the order of the first run that has them.
    pub(crate) fn fold(name: &str, runs: &[ScenarioResult], errors: Vec<String>) -> Self {
        let mut metrics: Vec<SummaryMetric> = Vec::new();
        for run in runs {
            for metric in &run.metrics {
                if metrics.iter().any(|m| m.name == metric.name) {
                    continue;
                }
                let values: Vec<f64> = runs
                    .iter()
                    .filter_map(|r| r.metrics.iter().find(|m| m.name == metric.name))
                    .map(|m| m.value)
                    .collect();
                let value = median(&values);
                let judged = match metric.target {
                    Some(Target {
                        value: target,
                        goal: Goal::AtMost,
                    }) => Metric::at_most(&metric.name, value, &metric.unit, target),
                    Some(Target {
                        value: target,
                        goal: Goal::AtLeast,
                    }) => Metric::at_least(&metric.name, value, &metric.unit, target),
                    None => Metric::info(&metric.name, value, &metric.unit),
                };
                metrics.push(SummaryMetric {
                    name: judged.name,
                    value,
                    unit: judged.unit,
                    target: judged.target,
                    met: judged.met,
                    runs: values,
                });
            }
        }
        let unavailable = (runs.is_empty()).then(|| {
            errors
                .last()
                .cloned()
                .unwrap_or_else(|| "not run".to_owned())
        });
        Self {
            name: name.to_owned(),
            metrics,
            details: serde_json::json!({
                "runs": runs.iter().map(|r| &r.details).collect::<Vec<_>>(),
            }),
            unavailable,
            errors,
        }
    }

    /// A scenario this side cannot run, and why.
    pub(crate) fn unavailable(name: &str, reason: String) -> Self {
        Self {
            name: name.to_owned(),
            metrics: Vec::new(),
            details: serde_json::Value::Null,
            unavailable: Some(reason),
            errors: Vec::new(),
        }
    }
}

/// Median of the finite values (mean of the middle two for an even count); NaN if none.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return f64::NAN;
    }
    finite.sort_by(f64::total_cmp);
    let mid = finite.len() / 2;
    if finite.len() % 2 == 1 {
        finite[mid]
    } else {
        (finite[mid - 1] + finite[mid]) / 2.0
    }
}

/// A column of the table: a side's title and its summaries.
pub(crate) struct Column<'a> {
    pub(crate) title: String,
    pub(crate) summaries: &'a [Summary],
}

/// The final table, one line per metric of the first column:
/// `scenario | metric | A | B | A/B | target | A result` (without a second column:
/// `scenario | metric | value | target | result`). Values are medians, each run's value in
/// brackets after it.
pub(crate) fn table(a: &Column<'_>, b: Option<&Column<'_>>) -> String {
    let mut header = vec!["scenario".to_owned(), "metric".to_owned()];
    match b {
        Some(b) => header.extend([a.title.clone(), b.title.clone(), "A/B".to_owned()]),
        None => header.push(format!("value: {}", a.title)),
    }
    header.extend(["target".to_owned(), "result".to_owned()]);
    let mut rows = vec![header];
    for summary in a.summaries {
        let other = b.map(|b| b.summaries.iter().find(|o| o.name == summary.name));
        if let Some(reason) = &summary.unavailable {
            let mut row = vec![summary.name.clone(), "-".to_owned(), na(reason)];
            if let Some(other) = other {
                row.push(other.map_or_else(|| "-".to_owned(), describe_side));
                row.push("-".to_owned());
            }
            row.extend(["-".to_owned(), String::new()]);
            rows.push(row);
            continue;
        }
        for metric in &summary.metrics {
            let mut row = vec![summary.name.clone(), metric.name.clone(), cell(metric)];
            if let Some(other) = other {
                let theirs = other.and_then(|o| o.metrics.iter().find(|m| m.name == metric.name));
                row.push(match (other, theirs) {
                    (None, _) => "- (no bridge)".to_owned(),
                    (Some(o), _) if o.unavailable.is_some() => describe_side(o),
                    (Some(_), None) => "-".to_owned(),
                    (Some(_), Some(theirs)) => cell(theirs),
                });
                let ratio = theirs.map_or(f64::NAN, |t| metric.value / t.value);
                row.push(if ratio.is_finite() {
                    format!("{ratio:.2}")
                } else {
                    "-".to_owned()
                });
            }
            row.push(metric.target.map_or_else(
                || "-".to_owned(),
                |t| {
                    let op = match t.goal {
                        Goal::AtMost => "<=",
                        Goal::AtLeast => ">=",
                    };
                    format!("{op} {} {}", format_value(t.value), metric.unit)
                },
            ));
            row.push(
                match metric.met {
                    Some(true) => "met",
                    Some(false) => "MISSED",
                    None => "",
                }
                .to_owned(),
            );
            rows.push(row);
        }
    }
    render(&rows)
}

/// One metric of a scenario beside the same metric of the scenario it is compared with, on
/// the same side (e.g. `woh-upstream` beside `upstream`).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Beside {
    pub(crate) scenario: String,
    pub(crate) compared_with: String,
    pub(crate) metric: String,
    pub(crate) unit: String,
    pub(crate) value: f64,
    /// The compared scenario's median of the same metric; NaN when it has none.
    pub(crate) other: f64,
}

/// Every metric of each `(scenario, compared_with)` pair that both ran, from one column.
pub(crate) fn beside(column: &Column<'_>, pairs: &[(&str, &str)]) -> Vec<Beside> {
    let find = |name: &str| {
        column
            .summaries
            .iter()
            .find(|s| s.name == name && s.unavailable.is_none())
    };
    let mut rows = Vec::new();
    for (name, other_name) in pairs {
        let (Some(summary), Some(other)) = (find(name), find(other_name)) else {
            continue;
        };
        for metric in &summary.metrics {
            let theirs = other.metrics.iter().find(|m| m.name == metric.name);
            rows.push(Beside {
                scenario: summary.name.clone(),
                compared_with: other.name.clone(),
                metric: metric.name.clone(),
                unit: metric.unit.clone(),
                value: metric.value,
                other: theirs.map_or(f64::NAN, |t| t.value),
            });
        }
    }
    rows
}

/// The [`beside`] rows as a table: `scenario | metric | value | compared | ratio`.
pub(crate) fn beside_table(title: &str, rows: &[Beside]) -> String {
    let mut lines = vec![vec![
        "scenario".to_owned(),
        "metric".to_owned(),
        title.to_owned(),
        "beside".to_owned(),
        "ratio".to_owned(),
    ]];
    for row in rows {
        let ratio = row.value / row.other;
        lines.push(vec![
            row.scenario.clone(),
            row.metric.clone(),
            format!("{} {}", format_value(row.value), row.unit),
            if row.other.is_finite() {
                format!(
                    "{}: {} {}",
                    row.compared_with,
                    format_value(row.other),
                    row.unit
                )
            } else {
                format!("{}: -", row.compared_with)
            },
            if ratio.is_finite() {
                format!("{ratio:.2}")
            } else {
                "-".to_owned()
            },
        ]);
    }
    render(&lines)
}

/// `37.0 us [36.1 37.9 37.0]`: the median, then each run's value when there are several.
fn cell(metric: &SummaryMetric) -> String {
    let mut text = format!("{} {}", format_value(metric.value), metric.unit);
    if metric.runs.len() > 1 {
        let runs: Vec<String> = metric.runs.iter().map(|v| format_value(*v)).collect();
        let _ = write!(text, " [{}]", runs.join(" "));
    }
    text
}

/// A side with no figures for a scenario: `n/a: why`.
fn describe_side(summary: &Summary) -> String {
    summary
        .unavailable
        .as_deref()
        .map_or_else(|| "-".to_owned(), na)
}

fn na(reason: &str) -> String {
    const WIDTH: usize = 60;
    let reason: String = reason.chars().take(WIDTH).collect();
    format!("n/a: {reason}")
}

/// Aligns `rows` into columns separated by ` | `, with a rule under the header.
pub(crate) fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join(" | ").trim_end());
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            let _ = writeln!(out, "{}", rule.join("-|-"));
        }
    }
    out
}

/// Three significant figures or so, without exponent noise.
pub(crate) fn format_value(value: f64) -> String {
    if !value.is_finite() {
        return "n/a".to_owned();
    }
    let magnitude = value.abs();
    if magnitude >= 1000.0 {
        let rounded = value.round() as i64;
        // Thousands separators for rates.
        let digits = rounded.abs().to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if rounded < 0 {
            grouped.insert(0, '-');
        }
        grouped
    } else if magnitude >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// The `q` quantile (0..=1) of sorted durations, by the nearest-rank method.
pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let (year, month, day) = civil_from_days(days);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_convert() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_786), (2026, 11, 29));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn quantiles_use_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&sorted, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&sorted, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&sorted, 0.999), Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn targets_are_judged_by_their_goal() {
        assert_eq!(Metric::at_most("cpu", 7.9, "us", 8.0).met, Some(true));
        assert_eq!(Metric::at_most("cpu", 8.1, "us", 8.0).met, Some(false));
        assert_eq!(
            Metric::at_least("rate", 19_999.0, "/s", 20_000.0).met,
            Some(false)
        );
        assert_eq!(Metric::at_most("cpu", f64::NAN, "us", 8.0).met, Some(false));
        assert_eq!(format_value(1_234_567.0), "1,234,567");
        assert_eq!(format_value(7.891), "7.89");
    }

    #[test]
    fn medians_skip_missing_values() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, f64::NAN, 2.0, 3.0]), 2.5);
        assert!(median(&[f64::NAN]).is_nan());
    }

    #[test]
    fn runs_fold_into_medians_judged_against_targets() {
        let run = |cpu: f64| ScenarioResult {
            name: "upstream".to_owned(),
            metrics: vec![Metric::at_most("cpu", cpu, "us", 8.0)],
            details: serde_json::Value::Null,
        };
        let summary = Summary::fold("upstream", &[run(9.0), run(7.0), run(7.5)], Vec::new());
        assert_eq!(summary.metrics[0].value, 7.5);
        assert_eq!(summary.metrics[0].runs, vec![9.0, 7.0, 7.5]);
        assert_eq!(summary.metrics[0].met, Some(true));
        let peer = Summary::fold("upstream", &[run(15.0)], Vec::new());
        let a = [summary];
        let b = [peer];
        let text = table(
            &Column {
                title: "A (ours)".to_owned(),
                summaries: &a,
            },
            Some(&Column {
                title: "B (fermyon)".to_owned(),
                summaries: &b,
            }),
        );
        assert!(text.contains("7.50 us [9 7 7.50]"), "{text}");
        assert!(text.contains("| 0.50 |"), "{text}");
        let woh = Summary::fold(
            "woh-upstream",
            &[ScenarioResult {
                name: "woh-upstream".to_owned(),
                metrics: vec![
                    Metric::at_most("cpu", 3.75, "us", 5.0),
                    Metric::info("backend requests per message", 0.1, "req"),
                ],
                details: serde_json::Value::Null,
            }],
            Vec::new(),
        );
        let a = [a[0].clone(), woh];
        let rows = beside(
            &Column {
                title: "A (ours)".to_owned(),
                summaries: &a,
            },
            &[("woh-upstream", "upstream"), ("woh-roundtrip", "roundtrip")],
        );
        assert_eq!(rows.len(), 2, "one row per metric of pairs that both ran");
        assert_eq!((rows[0].value, rows[0].other), (3.75, 7.5));
        assert!(rows[1].other.is_nan());
        let text = beside_table("A (ours)", &rows);
        assert!(text.contains("upstream: 7.50 us | 0.50"), "{text}");
        assert!(text.contains("upstream: -       | -"), "{text}");
        let failed = Summary::fold("idle", &[], vec!["boom".to_owned()]);
        assert_eq!(failed.unavailable.as_deref(), Some("boom"));
    }
}
