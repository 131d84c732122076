//! Issue 12's targets, judged side by side: side A against side B (the original, given with
//! `--peer`). Most targets are relative ("at most half the original's CPU per message"), so
//! they can only be judged from both columns of one run; the absolute ones ride along.
//!
//! Each target is judged on the medians and, since the issue asks for "every target met in
//! three runs", on each round's pair (run i of A against run i of B, which ran next to each
//! other). For CPU targets the table also gives side A's kernel time per event: the part of
//! the cost that the syscalls of one HTTP/1.1 exchange per message fix, which no user-space
//! change removes.

use serde::Serialize;

use crate::report::{Column, Goal, Summary, SummaryMetric, format_value, render};

/// What one target compares.
enum Measure {
    /// Side A's value against a fixed bound.
    Absolute(f64),
    /// Side A's value over side B's against a bound.
    Ratio(f64),
}

/// One target of the issue.
struct Target {
    /// As the issue words it.
    text: &'static str,
    scenario: &'static str,
    /// The metric's name, or its start (names that carry a count, e.g. "RSS per connection at").
    metric: &'static str,
    goal: Goal,
    measure: Measure,
    /// The kernel share of the same cost, when the metric is a CPU cost.
    kernel_metric: Option<&'static str>,
}

/// Issue 12's table, row by row (the large-message row asks for figures, not a bound).
const TARGETS: [Target; 10] = [
    cpu_ratio(
        "upstream CPU <= half the original's",
        "upstream",
        "bridge CPU per message",
    ),
    cpu_absolute(
        "upstream CPU <= 10 us",
        "upstream",
        "bridge CPU per message",
    ),
    cpu_ratio(
        "downstream CPU <= half the original's",
        "downstream",
        "bridge CPU per message",
    ),
    cpu_absolute(
        "downstream CPU <= 10 us",
        "downstream",
        "bridge CPU per message",
    ),
    cpu_ratio(
        "round trip CPU <= half the original's",
        "roundtrip",
        "bridge CPU per round trip",
    ),
    Target {
        text: "round trip p99 <= 5 ms at 64 connections",
        scenario: "roundtrip",
        metric: "latency p99",
        goal: Goal::AtMost,
        measure: Measure::Absolute(5.0),
        kernel_metric: None,
    },
    Target {
        text: "idle memory <= 8 KiB per connection",
        scenario: "idle",
        metric: "RSS per connection at",
        goal: Goal::AtMost,
        measure: Measure::Absolute(8.0),
        kernel_metric: None,
    },
    Target {
        text: "handshakes >= 1.5x the original's rate",
        scenario: "idle",
        metric: "handshakes/s",
        goal: Goal::AtLeast,
        measure: Measure::Ratio(1.5),
        kernel_metric: None,
    },
    Target {
        text: "handshakes >= 20,000/s",
        scenario: "idle",
        metric: "handshakes/s",
        goal: Goal::AtLeast,
        measure: Measure::Absolute(20_000.0),
        kernel_metric: None,
    },
    Target {
        text: "CPU per message at 10,000 active <= 1.25x at 64",
        scenario: "growth",
        metric: "CPU per message,",
        goal: Goal::AtMost,
        measure: Measure::Absolute(1.25),
        kernel_metric: None,
    },
];

const fn cpu_ratio(text: &'static str, scenario: &'static str, metric: &'static str) -> Target {
    Target {
        text,
        scenario,
        metric,
        goal: Goal::AtMost,
        measure: Measure::Ratio(0.5),
        kernel_metric: Some(KERNEL_METRIC),
    }
}

const fn cpu_absolute(text: &'static str, scenario: &'static str, metric: &'static str) -> Target {
    Target {
        measure: Measure::Absolute(10.0),
        ..cpu_ratio(text, scenario, metric)
    }
}

/// The metric every message-rate scenario reports beside its CPU cost.
pub(crate) const KERNEL_METRIC: &str = "bridge kernel CPU per event";

/// One target's verdict, as written to the JSON file.
#[derive(Debug, Serialize)]
pub(crate) struct Verdict {
    pub(crate) target: &'static str,
    pub(crate) scenario: &'static str,
    pub(crate) metric: String,
    pub(crate) unit: String,
    /// Side A's median.
    pub(crate) a: f64,
    /// Side B's median (NaN when the target does not need it or B has none).
    pub(crate) b: f64,
    /// What is compared with the bound: A, or A over B.
    pub(crate) judged: f64,
    pub(crate) bound: f64,
    /// The bound in the metric's unit: for a ratio, bound times B.
    pub(crate) bound_in_unit: f64,
    pub(crate) met: bool,
    /// Rounds whose pair (A run i, B run i) meets the target, and rounds judged.
    pub(crate) rounds_met: usize,
    pub(crate) rounds: usize,
    /// Side A's kernel CPU per event (median), for CPU targets.
    pub(crate) a_kernel: Option<f64>,
}

/// Judges every target whose scenario side A ran (and side B, for a ratio).
pub(crate) fn judge(a: &Column<'_>, b: Option<&Column<'_>>) -> Vec<Verdict> {
    TARGETS
        .iter()
        .filter_map(|target| judge_one(target, a, b))
        .collect()
}

fn find<'s>(column: &'s Column<'_>, scenario: &str, metric: &str) -> Option<&'s SummaryMetric> {
    column
        .summaries
        .iter()
        .filter(|s: &&Summary| s.name == scenario && s.unavailable.is_none())
        .flat_map(|s| &s.metrics)
        .find(|m| m.name.starts_with(metric))
}

fn judge_one(target: &Target, a: &Column<'_>, b: Option<&Column<'_>>) -> Option<Verdict> {
    let ours = find(a, target.scenario, target.metric)?;
    let theirs = b.and_then(|b| find(b, target.scenario, target.metric));
    let passes = |value: f64, bound: f64| {
        value.is_finite()
            && match target.goal {
                Goal::AtMost => value <= bound,
                Goal::AtLeast => value >= bound,
            }
    };
    let (judged, bound, bound_in_unit, per_round): (f64, f64, f64, Vec<f64>) = match target.measure
    {
        Measure::Absolute(bound) => (ours.value, bound, bound, ours.runs.clone()),
        Measure::Ratio(bound) => {
            let theirs = theirs?;
            let pairs = ours
                .runs
                .iter()
                .zip(&theirs.runs)
                .map(|(a, b)| a / b)
                .collect();
            (
                ours.value / theirs.value,
                bound,
                bound * theirs.value,
                pairs,
            )
        }
    };
    let a_kernel = target
        .kernel_metric
        .and_then(|name| find(a, target.scenario, name))
        .map(|m| m.value);
    Some(Verdict {
        target: target.text,
        scenario: target.scenario,
        metric: ours.name.clone(),
        unit: ours.unit.clone(),
        a: ours.value,
        b: theirs.map_or(f64::NAN, |t| t.value),
        judged,
        bound,
        bound_in_unit,
        met: passes(judged, bound),
        rounds_met: per_round.iter().filter(|v| passes(**v, bound)).count(),
        rounds: per_round.len(),
        a_kernel,
    })
}

/// The verdicts as a text table: target, A, B, what is judged, the bound in the metric's
/// unit, side A's kernel time where it applies, and the result with rounds met.
pub(crate) fn table(verdicts: &[Verdict]) -> String {
    let mut rows = vec![
        [
            "target (issue 12)",
            "A",
            "B",
            "judged",
            "bound",
            "A's kernel part",
            "result",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for v in verdicts {
        let unit = |x: f64| {
            if x.is_finite() {
                format!("{} {}", format_value(x), v.unit)
            } else {
                "-".to_owned()
            }
        };
        let judged = if v.b.is_finite() && v.judged != v.a {
            format!("A/B {:.2}", v.judged)
        } else {
            unit(v.judged)
        };
        let kernel = v.a_kernel.map_or_else(String::new, |k| {
            let over = if k > v.bound_in_unit {
                " (over the bound alone)"
            } else {
                ""
            };
            format!("{}{over}", unit(k))
        });
        rows.push(vec![
            v.target.to_owned(),
            unit(v.a),
            unit(v.b),
            judged,
            unit(v.bound_in_unit),
            kernel,
            format!(
                "{} ({} of {} rounds)",
                if v.met { "met" } else { "MISSED" },
                v.rounds_met,
                v.rounds
            ),
        ]);
    }
    render(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Metric, ScenarioResult};

    fn column(runs: &[(f64, f64, f64)]) -> Vec<Summary> {
        let results: Vec<ScenarioResult> = runs
            .iter()
            .map(|(cpu, kernel, p99)| ScenarioResult {
                name: "roundtrip".to_owned(),
                metrics: vec![
                    Metric::info("bridge CPU per round trip", *cpu, "us"),
                    Metric::info(KERNEL_METRIC, *kernel, "us"),
                    Metric::info("latency p99", *p99, "ms"),
                ],
                details: serde_json::Value::Null,
            })
            .collect();
        vec![Summary::fold("roundtrip", &results, Vec::new())]
    }

    #[test]
    fn ratios_are_judged_on_medians_and_on_each_round() {
        let ours = column(&[(10.0, 7.0, 4.0), (13.0, 8.0, 6.0), (12.0, 7.5, 4.5)]);
        let theirs = column(&[(20.0, 9.0, 5.0), (24.0, 9.0, 5.0), (22.0, 9.0, 5.0)]);
        let a = Column {
            title: "A".to_owned(),
            summaries: &ours,
        };
        let b = Column {
            title: "B".to_owned(),
            summaries: &theirs,
        };
        let verdicts = judge(&a, Some(&b));
        assert_eq!(verdicts.len(), 2, "{verdicts:?}");
        let cpu = &verdicts[0];
        assert!((cpu.judged - 12.0 / 22.0).abs() < 1e-9);
        assert!(!cpu.met);
        // 10/20 = 0.5 met; 13/24 and 12/22 not.
        assert_eq!((cpu.rounds_met, cpu.rounds), (1, 3));
        assert_eq!(cpu.bound_in_unit, 11.0);
        assert_eq!(cpu.a_kernel, Some(7.5));
        let p99 = &verdicts[1];
        assert!(p99.met);
        assert_eq!((p99.rounds_met, p99.rounds), (2, 3));
        let text = table(&verdicts);
        assert!(text.contains("MISSED (1 of 3 rounds)"), "{text}");
        assert!(text.contains("met (2 of 3 rounds)"), "{text}");
    }

    #[test]
    fn a_ratio_needs_the_other_side() {
        let ours = column(&[(10.0, 7.0, 4.0)]);
        let a = Column {
            title: "A".to_owned(),
            summaries: &ours,
        };
        let verdicts = judge(&a, None);
        assert_eq!(verdicts.len(), 1);
        assert_eq!(
            verdicts[0].target,
            "round trip p99 <= 5 ms at 64 connections"
        );
    }
}
