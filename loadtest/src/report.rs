//! What a load-test run found, as data: written as `report.json`, `report.md` and a chart
//! `report.svg` (throughput, lag and latency over time) into the run's folder.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// The machine a run was measured on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_gb: f64,
    pub cpu: String,
    pub kernel: String,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// One second of a live run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the load started.
    pub t: f64,
    /// Events the generator sent in this second (per second).
    pub produced_per_s: f64,
    /// Events the engine read and decoded in this second (per second).
    pub consumed_per_s: f64,
    /// Events sent but not yet read by the engine, at the end of the second.
    pub lag: f64,
    /// Actions that reached the action topics in this second (per second).
    pub actions_per_s: f64,
    /// Event → action latency of the actions of this second (none when there were none).
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// The engine's resident memory, MB.
    pub rss_mb: f64,
    /// CPU the engine used in this second, in cores.
    pub engine_cores: f64,
}

/// A phase of a live run at one target rate (or a step of the rate search).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    /// Target input rate, events/s.
    pub target_rate: f64,
    /// From and to (seconds since the load started) of the part measured (after warm-up).
    pub from: f64,
    pub to: f64,
    /// Rate the generator achieved, events/s.
    pub produced_rate: f64,
    /// Rate the engine read, events/s.
    pub consumed_rate: f64,
    /// Lag at the start and at the end of the measured part, events.
    pub lag_start: f64,
    pub lag_end: f64,
    /// Event → action latency of the actions whose moment fell in the measured part.
    pub latency: Option<Percentiles>,
    /// Held: the engine kept up (lag not growing) with p99 ≤ 1 s.
    pub held: bool,
    /// Why not held, or anything worth saying.
    pub note: String,
}

/// Something that happened at an instant of a live run (drawn on the chart).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    pub t: f64,
    pub label: String,
}

/// One `kairos replay` measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplayRun {
    pub subscribers: u64,
    pub events: u64,
    pub workers: usize,
    pub households: bool,
    pub seconds: f64,
    pub events_per_s: f64,
    pub peak_rss_mb: f64,
    pub actions: u64,
    /// Planted moments and how many the replay decided (when checked).
    pub planted: Option<u64>,
    pub found: Option<u64>,
}

/// A whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `replay`, `kafka`, `spike` or `restart`.
    pub scenario: String,
    /// When it started, RFC 3339.
    pub started: String,
    /// The command line that ran it.
    pub command: String,
    pub machine: Machine,
    /// kairos's commit, Kafka's version, rustc, …
    pub versions: BTreeMap<String, String>,
    /// The world and the engine's settings.
    pub config: BTreeMap<String, String>,
    /// The headline numbers (e.g. `max_rate_held`, `recovery_s`), by name.
    pub results: BTreeMap<String, f64>,
    pub phases: Vec<Phase>,
    pub samples: Vec<Sample>,
    pub markers: Vec<Marker>,
    pub replays: Vec<ReplayRun>,
    /// Ground truth: planted moments, found, missing, not planted, duplicate actions.
    pub truth: BTreeMap<String, u64>,
    /// Whether the run passed its checks (truth, no duplicates), and what failed.
    pub passed: bool,
    pub failures: Vec<String>,
    /// What the numbers do not say by themselves (a fault campaign's timeline, the
    /// differences from a replay and why), one paragraph each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Markdown
// ---------------------------------------------------------------------------------------------

/// The report as Markdown (`report.md`): the run, its machine and settings, its headline
/// results, phases, replays and ground truth, and whether it passed. Empty sections are left out.
pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let scenario = if report.scenario.is_empty() {
        "run"
    } else {
        report.scenario.as_str()
    };
    let _ = write!(out, "# Load test: {}", one_line(scenario));
    if !report.started.is_empty() {
        let _ = write!(out, " — {}", one_line(&report.started));
    }
    out.push_str("\n\n");

    if !report.command.trim().is_empty() {
        let fence = fence_for(&report.command);
        let _ = writeln!(out, "{fence}sh\n{}\n{fence}\n", report.command.trim_end());
    }

    let mut machine = Vec::new();
    let m = &report.machine;
    if *m != Machine::default() {
        machine.push(vec!["Cores".to_string(), fmt_int(m.cores as u64)]);
        machine.push(vec!["Memory".to_string(), format!("{} GB", fmt_num(m.memory_gb))]);
        machine.push(vec!["CPU".to_string(), m.cpu.clone()]);
        machine.push(vec!["Kernel".to_string(), m.kernel.clone()]);
    }
    machine.extend(report.versions.iter().map(|(k, v)| vec![k.clone(), v.clone()]));
    section(&mut out, "Machine and versions", &["Name", "Value"], "ll", &machine);

    let config: Vec<_> = report.config.iter().map(|(k, v)| vec![k.clone(), v.clone()]).collect();
    section(&mut out, "Config", &["Setting", "Value"], "ll", &config);

    let results: Vec<_> = report
        .results
        .iter()
        .map(|(k, v)| vec![k.clone(), fmt_num(*v)])
        .collect();
    section(&mut out, "Results", &["Result", "Value"], "lr", &results);

    let phases: Vec<_> = report.phases.iter().map(phase_row).collect();
    section(
        &mut out,
        "Phases",
        &[
            "Phase",
            "Target ev/s",
            "Produced ev/s",
            "Consumed ev/s",
            "Lag start → end",
            "Latencies",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "Held",
            "Note",
        ],
        "lrrrrrrrrrrcl",
        &phases,
    );

    if !report.samples.is_empty() {
        out.push_str("## Over time\n\n![chart](report.svg)\n\n");
    }

    let replays: Vec<_> = report.replays.iter().map(replay_row).collect();
    section(
        &mut out,
        "Replays",
        &[
            "Subscribers",
            "Events",
            "Workers",
            "Households",
            "Seconds",
            "Events/s",
            "Peak RSS MB",
            "Actions",
            "Planted / found",
        ],
        "rrrcrrrrr",
        &replays,
    );

    let truth: Vec<_> = report.truth.iter().map(|(k, v)| vec![k.clone(), fmt_int(*v)]).collect();
    section(&mut out, "Ground truth", &["Check", "Count"], "lr", &truth);

    if !report.notes.is_empty() {
        out.push_str("## Notes\n\n");
        for note in &report.notes {
            let _ = writeln!(out, "- {}", note.trim());
        }
        out.push('\n');
    }

    let _ = writeln!(out, "## Outcome\n\nPassed: {}\n", yes_no(report.passed));
    if !report.failures.is_empty() {
        out.push_str("Failures:\n\n");
        for failure in &report.failures {
            let _ = writeln!(out, "- {}", one_line(failure));
        }
        out.push('\n');
    }

    let len = out.trim_end().len();
    out.truncate(len);
    out.push('\n');
    out
}

/// A row of the phases table.
fn phase_row(p: &Phase) -> Vec<String> {
    let mut row = vec![
        p.name.clone(),
        fmt_num(p.target_rate),
        fmt_num(p.produced_rate),
        fmt_num(p.consumed_rate),
        format!("{} → {}", fmt_num(p.lag_start), fmt_num(p.lag_end)),
    ];
    match &p.latency {
        Some(l) => {
            row.push(fmt_int(l.count));
            row.extend([l.p50, l.p90, l.p99, l.p999, l.max].map(fmt_num));
        }
        None => row.extend(std::iter::repeat_n("—".to_string(), 6)),
    }
    row.push(yes_no(p.held).to_string());
    row.push(p.note.clone());
    row
}

/// A row of the replays table.
fn replay_row(r: &ReplayRun) -> Vec<String> {
    let opt = |n: Option<u64>| n.map_or_else(|| "—".to_string(), fmt_int);
    let truth = match (r.planted, r.found) {
        (None, None) => "—".to_string(),
        (planted, found) => format!("{} / {}", opt(planted), opt(found)),
    };
    vec![
        fmt_int(r.subscribers),
        fmt_int(r.events),
        fmt_int(r.workers as u64),
        if r.households { "on" } else { "off" }.to_string(),
        fmt_num(r.seconds),
        fmt_num(r.events_per_s),
        fmt_num(r.peak_rss_mb),
        fmt_int(r.actions),
        truth,
    ]
}

/// Writes `## title` and a table of `rows`, or nothing when there are no rows. `align` has one
/// letter per column: `l`eft, `r`ight or `c`entre.
fn section(out: &mut String, title: &str, header: &[&str], align: &str, rows: &[Vec<String>]) {
    if rows.is_empty() {
        return;
    }
    debug_assert_eq!(header.len(), align.len());
    let _ = writeln!(out, "## {title}\n");
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let rule: Vec<&str> = align
        .chars()
        .map(|a| match a {
            'r' => "---:",
            'c' => ":---:",
            _ => "---",
        })
        .collect();
    let _ = writeln!(out, "|{}|", rule.join("|"));
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push('\n');
}

/// Text made safe for a Markdown table cell: on one line, with `|` escaped.
fn cell(text: &str) -> String {
    one_line(text).replace('|', "\\|")
}

/// Text on one line: line breaks become spaces.
fn one_line(text: &str) -> String {
    text.trim().replace(['\r', '\n'], " ")
}

/// A code fence longer than any run of backticks in `text` (at least three).
fn fence_for(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// A number for a table: `1,234,567` when whole, `1,234.57` otherwise.
pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let text = if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{:.0}", x.abs())
    } else {
        format!("{:.2}", x.abs())
    };
    let (int, frac) = match text.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (text.as_str(), None),
    };
    let negative = x < 0.0 && text.bytes().any(|b| matches!(b, b'1'..=b'9'));
    let mut out = String::with_capacity(text.len() + text.len() / 3 + 1);
    if negative {
        out.push('-');
    }
    out.push_str(&crate::progress::group_thousands(int));
    if let Some(frac) = frac {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// A whole number with thousands separators: `1,234,567`.
pub fn fmt_int(n: u64) -> String {
    crate::progress::format_count(n)
}

// ---------------------------------------------------------------------------------------------
// SVG chart
// ---------------------------------------------------------------------------------------------

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 720.0;
/// Room left of the plots for the y labels, and right of them.
const LEFT: f64 = 72.0;
const RIGHT: f64 = 24.0;
/// Room above the first panel for the markers' labels (two rows).
const TOP: f64 = 36.0;
/// Room above each plot for its title and legend, and below it for the x labels.
const TITLE_H: f64 = 24.0;
const TICKS_H: f64 = 22.0;
/// Room below the last panel for the x axis's name.
const BOTTOM: f64 = 22.0;

const PRODUCED_COLOUR: &str = "#1f77b4";
const CONSUMED_COLOUR: &str = "#ff7f0e";
const LAG_COLOUR: &str = "#2ca02c";
const P50_COLOUR: &str = "#9467bd";
const P99_COLOUR: &str = "#d62728";
const THRESHOLD_COLOUR: &str = "#b22222";
const MARKER_COLOUR: &str = "#666666";

/// A bound on the ticks of an axis, whatever the data (huge or odd values).
const MAX_TICKS: usize = 20;

/// The one-second latency threshold, ms.
const ONE_SECOND_MS: f64 = 1000.0;

/// One line of a panel: a value (or none) at each sample.
struct Series {
    name: &'static str,
    colour: &'static str,
    points: Vec<(f64, Option<f64>)>,
}

/// One of the stacked panels.
struct Panel {
    title: &'static str,
    series: Vec<Series>,
    /// Labels a y tick.
    label: fn(f64) -> String,
    /// Whether to take the y range to at least 1 s and draw the 1 s line.
    latency: bool,
}

/// The x axis shared by the panels: seconds from `from` to `to`.
struct XAxis {
    from: f64,
    to: f64,
    ticks: Vec<f64>,
}

impl XAxis {
    fn px(&self, t: f64) -> f64 {
        LEFT + (t - self.from) / (self.to - self.from) * (WIDTH - LEFT - RIGHT)
    }
}

/// A chart of the run over time (`report.svg`): throughput, lag and event → action latency in
/// three stacked panels sharing the time axis, with the markers as dashed vertical lines.
/// Self-contained: no scripts, styles, fonts or links. With no samples, a small SVG saying so.
pub fn svg(report: &Report) -> String {
    let mut samples: Vec<&Sample> = report.samples.iter().filter(|s| s.t.is_finite()).collect();
    if samples.is_empty() {
        return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"300\" height=\"60\" viewBox=\"0 0 300 60\" \
                font-family=\"sans-serif\" font-size=\"14\">\n\
                <rect width=\"300\" height=\"60\" fill=\"#ffffff\"/>\n\
                <text x=\"150\" y=\"35\" text-anchor=\"middle\" fill=\"#333333\">no samples</text>\n</svg>\n"
            .to_string();
    }
    samples.sort_by(|a, b| a.t.total_cmp(&b.t));
    let mut markers: Vec<&Marker> = report.markers.iter().filter(|m| m.t.is_finite()).collect();
    markers.sort_by(|a, b| a.t.total_cmp(&b.t));

    // Time from the start of the load (or earlier) to the last sample or marker.
    let times = || samples.iter().map(|s| s.t).chain(markers.iter().map(|m| m.t));
    let from = times().fold(0.0, f64::min);
    let mut to = times().fold(from, f64::max);
    if to - from < 1e-9 {
        to = from + 1.0;
    }
    let step = nice_step((to - from) / 8.0, &[1.0, 2.0, 5.0, 10.0]);
    let ticks = (0..MAX_TICKS)
        .map(|i| ((from / step).ceil() + i as f64) * step)
        .take_while(|t| *t <= to + step * 1e-9)
        .collect();
    let x = XAxis { from, to, ticks };

    let series = |name, colour, value: fn(&Sample) -> Option<f64>| Series {
        name,
        colour,
        points: samples.iter().map(|s| (s.t, value(s))).collect(),
    };
    let panels = [
        Panel {
            title: "throughput (events/s)",
            series: vec![
                series("produced", PRODUCED_COLOUR, |s| Some(s.produced_per_s)),
                series("consumed", CONSUMED_COLOUR, |s| Some(s.consumed_per_s)),
            ],
            label: compact,
            latency: false,
        },
        Panel {
            title: "lag (events)",
            series: vec![series("lag", LAG_COLOUR, |s| Some(s.lag))],
            label: compact,
            latency: false,
        },
        Panel {
            title: "event → action latency (ms)",
            series: vec![
                series("p50", P50_COLOUR, |s| s.latency_p50_ms),
                series("p99", P99_COLOUR, |s| s.latency_p99_ms),
            ],
            label: millis,
            latency: true,
        },
    ];

    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(
        out,
        "<title>{}</title>",
        escape(&format!("{} {}", report.scenario, report.started))
    );
    let _ = writeln!(out, "<rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#ffffff\"/>");

    let plot_h = (HEIGHT - TOP - BOTTOM - 3.0 * (TITLE_H + TICKS_H)) / 3.0;
    for (i, panel) in panels.iter().enumerate() {
        let top = TOP + TITLE_H + i as f64 * (TITLE_H + plot_h + TICKS_H);
        draw_panel(&mut out, panel, &x, &markers, top, plot_h);
    }
    draw_marker_labels(&mut out, &x, &markers);
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#333333\">time (s)</text>",
        LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        HEIGHT - 6.0
    );
    out.push_str("</svg>\n");
    out
}

/// Draws a panel whose plot spans `top` to `top + height`: title, legend, axes, ticks, grid,
/// the markers' lines and the series.
fn draw_panel(out: &mut String, panel: &Panel, x: &XAxis, markers: &[&Marker], top: f64, height: f64) {
    let (left, right, bottom) = (LEFT, WIDTH - RIGHT, top + height);
    let values = || {
        panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter_map(|p| p.1))
            .filter(|v| v.is_finite())
    };
    let mut lo = values().fold(0.0, f64::min);
    let mut hi = values().fold(0.0, f64::max);
    if panel.latency && hi >= ONE_SECOND_MS / 2.0 {
        hi = hi.max(ONE_SECOND_MS);
    }
    if hi - lo < 1e-12 {
        hi = lo + 1.0;
    }
    let step = nice_step((hi - lo) / 4.0, &[1.0, 2.0, 2.5, 5.0, 10.0]);
    lo = (lo / step + 1e-9).floor() * step;
    hi = (hi / step - 1e-9).ceil() * step;
    let py = |v: f64| bottom - (v - lo) / (hi - lo) * height;

    let _ = writeln!(
        out,
        "<text x=\"{left}\" y=\"{:.1}\" font-size=\"13\" font-weight=\"bold\" fill=\"#222222\">{}</text>",
        top - 8.0,
        escape(panel.title)
    );
    if panel.series.len() > 1 {
        let mut end = right;
        for s in panel.series.iter().rev() {
            let text_w = text_width(s.name, 11.0);
            let _ = writeln!(
                out,
                "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{}\" stroke-width=\"2\"/>\n\
                 <text x=\"{end:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#333333\">{}</text>",
                end - text_w - 22.0,
                end - text_w - 6.0,
                s.colour,
                top - 8.0,
                escape(s.name),
                y = top - 12.0,
            );
            end -= text_w + 34.0;
        }
    }

    // Grid and y ticks.
    let count = ((hi - lo) / step).round().min(MAX_TICKS as f64) as usize;
    for i in 0..=count {
        let v = lo + i as f64 * step;
        let y = py(v);
        let _ = writeln!(
            out,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{right}\" y2=\"{y:.1}\" stroke=\"#e5e5e5\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#333333\">{}</text>",
            left - 6.0,
            y + 4.0,
            escape(&(panel.label)(v))
        );
    }
    // X ticks.
    for &t in &x.ticks {
        let px = x.px(t);
        let _ = writeln!(
            out,
            "<line x1=\"{px:.1}\" y1=\"{bottom:.1}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#333333\"/>\n\
             <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#333333\">{}</text>",
            bottom + 4.0,
            bottom + 15.0,
            escape(&trim_num(t))
        );
    }
    // Axes.
    let _ = writeln!(
        out,
        "<path fill=\"none\" stroke=\"#333333\" d=\"M{left},{top:.1} L{left},{bottom:.1} L{right},{bottom:.1}\"/>"
    );
    if panel.latency && hi >= ONE_SECOND_MS && lo <= ONE_SECOND_MS {
        let y = py(ONE_SECOND_MS);
        let _ = writeln!(
            out,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{right}\" y2=\"{y:.1}\" stroke=\"{THRESHOLD_COLOUR}\" \
             stroke-dasharray=\"6 4\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{THRESHOLD_COLOUR}\">1 s</text>",
            left + 4.0,
            // Above the line, or below it when the line is the top of the plot.
            if y - top < 14.0 { y + 13.0 } else { y - 4.0 }
        );
    }
    for m in markers {
        let px = x.px(m.t);
        let _ = writeln!(
            out,
            "<line x1=\"{px:.1}\" y1=\"{top:.1}\" x2=\"{px:.1}\" y2=\"{bottom:.1}\" stroke=\"{MARKER_COLOUR}\" \
             stroke-dasharray=\"4 3\"/>"
        );
    }

    // The series: a polyline per unbroken run of points, a dot for a lone point.
    for s in &panel.series {
        let mut run: Vec<(f64, f64)> = Vec::new();
        let points = s
            .points
            .iter()
            .map(|&(t, v)| v.filter(|v| v.is_finite()).map(|v| (t, v)));
        for point in points.chain(std::iter::once(None)) {
            match point {
                Some((t, v)) => run.push((x.px(t), py(v))),
                None => {
                    draw_run(out, s.colour, &run);
                    run.clear();
                }
            }
        }
    }
    if values().next().is_none() {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#999999\">no data</text>",
            (left + right) / 2.0,
            top + height / 2.0
        );
    }
}

/// Draws an unbroken run of plotted points: a polyline, or a dot when it is a single point.
fn draw_run(out: &mut String, colour: &str, run: &[(f64, f64)]) {
    match run {
        [] => {}
        [(x, y)] => {
            let _ = writeln!(out, "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"{colour}\"/>");
        }
        _ => {
            let points: Vec<String> = run.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" stroke-linejoin=\"round\" \
                 points=\"{}\"/>",
                points.join(" ")
            );
        }
    }
}

/// Writes the markers' labels above the first panel, on a second row when they would overlap.
fn draw_marker_labels(out: &mut String, x: &XAxis, markers: &[&Marker]) {
    let mut row_ends = [f64::NEG_INFINITY; 2];
    for m in markers {
        let w = text_width(&m.label, 11.0);
        let start = (x.px(m.t) - w / 2.0).clamp(2.0, (WIDTH - 2.0 - w).max(2.0));
        let row = row_ends.iter().position(|end| start > end + 6.0).unwrap_or_else(|| {
            // Both rows are taken here: use the one that frees up first.
            usize::from(row_ends[1] < row_ends[0])
        });
        row_ends[row] = start + w;
        let _ = writeln!(
            out,
            "<text x=\"{start:.1}\" y=\"{:.1}\" fill=\"{MARKER_COLOUR}\">{}</text>",
            14.0 + 14.0 * row as f64,
            escape(&m.label)
        );
    }
}

/// A rough width of `text` in pixels (no font metrics at hand).
fn text_width(text: &str, font_size: f64) -> f64 {
    text.chars().count() as f64 * font_size * 0.6
}

/// The smallest of `candidates` × a power of ten that is at least `raw` (> 0).
fn nice_step(raw: f64, candidates: &[f64]) -> f64 {
    if !raw.is_finite() || raw <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let normal = raw / magnitude;
    candidates
        .iter()
        .find(|&&c| normal <= c * (1.0 + 1e-9))
        .map_or(10.0 * magnitude, |c| c * magnitude)
}

/// A compact count: `250k`, `1.2M`, `3G`, `12.5`.
fn compact(v: f64) -> String {
    let (scaled, suffix) = match v.abs() {
        a if a >= 1e9 => (v / 1e9, "G"),
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e3 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    format!("{}{suffix}", trim_num(scaled))
}

/// Milliseconds: `800 ms`, `1.5 s`.
fn millis(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{} s", trim_num(v / 1000.0))
    } else {
        format!("{} ms", trim_num(v))
    }
}

/// A number with at most two decimals and no trailing zeros: `12`, `0.25`, `1.5`.
fn trim_num(v: f64) -> String {
    let text = format!("{v:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_string()
    } else {
        text.to_string()
    }
}

/// Text made safe for SVG text and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\t' && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64, produced: f64, lag: f64, p50: Option<f64>, p99: Option<f64>) -> Sample {
        Sample {
            t,
            produced_per_s: produced,
            consumed_per_s: produced * 0.9,
            lag,
            actions_per_s: 10.0,
            latency_p50_ms: p50,
            latency_p99_ms: p99,
            rss_mb: 512.0,
            engine_cores: 1.5,
        }
    }

    fn full_report() -> Report {
        Report {
            scenario: "kafka".into(),
            started: "2024-06-01T10:00:00Z".into(),
            command: "kairos-loadtest kafka --rate 250000".into(),
            machine: Machine {
                cores: 16,
                memory_gb: 62.5,
                cpu: "AMD EPYC".into(),
                kernel: "6.8.0".into(),
            },
            versions: BTreeMap::from([("kairos".into(), "3d926c7".into())]),
            config: BTreeMap::from([("subscribers".into(), "1000000".into())]),
            results: BTreeMap::from([("max_rate_held".into(), 250_000.0), ("recovery_s".into(), 12.345_6)]),
            phases: vec![Phase {
                name: "250k".into(),
                target_rate: 250_000.0,
                from: 30.0,
                to: 90.0,
                produced_rate: 249_876.5,
                consumed_rate: 249_000.0,
                lag_start: 0.0,
                lag_end: 1234.0,
                latency: Some(Percentiles {
                    count: 12_345,
                    p50: 12.5,
                    p90: 40.0,
                    p99: 250.25,
                    p999: 900.0,
                    max: 1500.0,
                }),
                held: true,
                note: "steady | fine".into(),
            }],
            samples: (0..60)
                .map(|i| sample(f64::from(i), 250_000.0, 100.0 * f64::from(i), Some(10.0), Some(800.0)))
                .collect(),
            markers: vec![Marker {
                t: 30.0,
                label: "kill -9 <engine>".into(),
            }],
            replays: vec![ReplayRun {
                subscribers: 100_000,
                events: 12_345_678,
                workers: 2,
                households: true,
                seconds: 31.4,
                events_per_s: 393_174.5,
                peak_rss_mb: 1024.0,
                actions: 4321,
                planted: Some(500),
                found: Some(498),
            }],
            truth: BTreeMap::from([("planted".into(), 500), ("missing".into(), 2)]),
            passed: false,
            failures: vec!["2 planted moments missing".into()],
            notes: vec!["A note.".into()],
        }
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(999.0), "999");
        assert_eq!(fmt_num(1_234_567.0), "1,234,567");
        assert_eq!(fmt_num(-1234.5), "-1,234.50");
        assert_eq!(fmt_num(999.999), "1,000.00");
        assert_eq!(fmt_num(-0.001), "0.00");
        assert_eq!(fmt_int(1_000), "1,000");
        assert_eq!(fmt_int(12), "12");
    }

    #[test]
    fn markdown_has_every_section_with_formatted_numbers() {
        let md = markdown(&full_report());
        assert!(md.starts_with("# Load test: kafka — 2024-06-01T10:00:00Z\n"), "{md}");
        assert!(md.contains("```sh\nkairos-loadtest kafka --rate 250000\n```"), "{md}");
        assert!(md.contains("| Cores | 16 |"), "{md}");
        assert!(md.contains("| Memory | 62.50 GB |"), "{md}");
        assert!(md.contains("| kairos | 3d926c7 |"), "{md}");
        assert!(md.contains("| subscribers | 1000000 |"), "{md}");
        assert!(md.contains("| max_rate_held | 250,000 |"), "{md}");
        assert!(md.contains("| recovery_s | 12.35 |"), "{md}");
        assert!(
            md.contains(
                "| 250k | 250,000 | 249,876.50 | 249,000 | 0 → 1,234 | 12,345 | 12.50 | 40 | 250.25 | 900 | 1,500 | yes \
                 | steady \\| fine |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| 100,000 | 12,345,678 | 2 | on | 31.40 | 393,174.50 | 1,024 | 4,321 | 500 / 498 |"),
            "{md}"
        );
        assert!(md.contains("| missing | 2 |"), "{md}");
        assert!(md.contains("![chart](report.svg)"), "{md}");
        assert!(md.contains("Passed: no\n"), "{md}");
        assert!(md.contains("- 2 planted moments missing\n"), "{md}");
        // The columns of each table line up with its header.
        for table in md.split("\n\n").filter(|b| b.starts_with('|')) {
            let columns: Vec<usize> = table
                .lines()
                .map(|l| l.replace("\\|", "").matches('|').count())
                .collect();
            assert!(columns.iter().all(|c| *c == columns[0]), "{table}");
        }
    }

    #[test]
    fn markdown_leaves_out_empty_sections() {
        let report = Report {
            scenario: "replay".into(),
            passed: true,
            ..Report::default()
        };
        let md = markdown(&report);
        assert_eq!(md, "# Load test: replay\n\n## Outcome\n\nPassed: yes\n");
        let mut with_phase = report.clone();
        with_phase.phases.push(Phase {
            name: "x".into(),
            ..Phase::default()
        });
        let md = markdown(&with_phase);
        assert!(
            md.contains("| x | 0 | 0 | 0 | 0 → 0 | — | — | — | — | — | — | no |  |"),
            "{md}"
        );
        for absent in [
            "```",
            "## Machine",
            "## Config",
            "## Results",
            "## Replays",
            "## Ground truth",
            "![chart]",
            "Failures",
        ] {
            assert!(!md.contains(absent), "{absent} in {md}");
        }
    }

    #[test]
    fn markdown_fences_a_command_with_backticks() {
        let report = Report {
            command: "echo ```x```".into(),
            ..Report::default()
        };
        assert!(markdown(&report).contains("````sh\necho ```x```\n````\n"));
    }

    /// Checks that `svg` is well-formed as far as this module writes it: every tag closed in
    /// order, one root `svg`, quoted attributes, no raw `<`, `>` or `&` in text or attributes.
    fn check_well_formed(svg: &str) -> Result<(), String> {
        fn check_text(text: &str) -> Result<(), String> {
            if text.contains('>') {
                return Err(format!("raw > in {text:?}"));
            }
            for (i, _) in text.match_indices('&') {
                let rest = &text[i..];
                if !["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"]
                    .iter()
                    .any(|e| rest.starts_with(e))
                {
                    return Err(format!("raw & in {text:?}"));
                }
            }
            Ok(())
        }
        let svg = svg.trim();
        if !svg.starts_with("<svg ") || !svg.ends_with("</svg>") {
            return Err("not an <svg> document".into());
        }
        let (mut stack, mut roots, mut rest) = (Vec::new(), 0, svg);
        while let Some(open) = rest.find('<') {
            check_text(&rest[..open])?;
            let close = open + rest[open..].find('>').ok_or("unclosed <")?;
            let tag = &rest[open + 1..close];
            if tag.contains('<') || tag.matches('"').count() % 2 != 0 {
                return Err(format!("bad tag <{tag}>"));
            }
            if let Some(name) = tag.strip_prefix('/') {
                match stack.pop() {
                    Some(open) if open == name => {}
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
            } else {
                let name = tag.split(|c: char| c.is_whitespace() || c == '/').next().unwrap_or("");
                if name.is_empty() {
                    return Err(format!("nameless tag <{tag}>"));
                }
                let quoted: String = tag.split('"').skip(1).step_by(2).collect();
                check_text(&quoted)?;
                if stack.is_empty() {
                    roots += 1;
                }
                if !tag.ends_with('/') {
                    stack.push(name);
                }
            }
            rest = &rest[close + 1..];
        }
        check_text(rest)?;
        match (stack.is_empty(), roots) {
            (true, 1) => Ok(()),
            _ => Err(format!("unclosed {stack:?} or {roots} roots")),
        }
    }

    fn polylines(svg: &str, colour: &str) -> usize {
        svg.lines()
            .filter(|l| l.starts_with("<polyline") && l.contains(&format!("stroke=\"{colour}\"")))
            .count()
    }

    fn has_threshold(svg: &str) -> bool {
        svg.contains(&format!("stroke=\"{THRESHOLD_COLOUR}\" stroke-dasharray")) && svg.contains(">1 s</text>")
    }

    #[test]
    fn checker_rejects_broken_markup() {
        assert!(check_well_formed("<svg a=\"1\"><g><line/></g></svg>").is_ok());
        assert!(check_well_formed("<svg><g></svg>").is_err());
        assert!(check_well_formed("<svg><text>a < b</text></svg>").is_err());
        assert!(check_well_formed("<svg><text>a & b</text></svg>").is_err());
        assert!(check_well_formed("<svg></svg><svg></svg>").is_err());
    }

    #[test]
    fn svg_draws_three_panels_a_line_per_series_and_the_markers() {
        let svg = svg(&full_report());
        check_well_formed(&svg).unwrap();
        assert!(svg.contains("width=\"900\" height=\"720\""));
        for title in ["throughput (events/s)", "lag (events)", "event → action latency (ms)"] {
            assert_eq!(svg.matches(&format!(">{title}</text>")).count(), 1, "{title}");
        }
        for colour in [PRODUCED_COLOUR, CONSUMED_COLOUR, LAG_COLOUR, P50_COLOUR, P99_COLOUR] {
            assert_eq!(polylines(&svg, colour), 1, "{colour}");
        }
        assert!(svg.contains(">produced</text>") && svg.contains(">consumed</text>") && svg.contains(">p99</text>"));
        // The marker: its label once, escaped; a dashed line in each panel.
        assert_eq!(svg.matches(">kill -9 &lt;engine&gt;</text>").count(), 1);
        assert!(!svg.contains("<engine>"));
        assert_eq!(
            svg.matches(&format!("stroke=\"{MARKER_COLOUR}\" stroke-dasharray"))
                .count(),
            3
        );
        // Compact y labels: throughput up to 250k (ticks of 100k), lag up to 5.9k, p99 800 ms → the axis reaches 1 s.
        assert!(svg.contains(">200k</text>"), "{svg}");
        assert!(svg.contains(">6k</text>"), "{svg}");
        assert!(svg.contains(">500 ms</text>"), "{svg}");
        assert!(has_threshold(&svg));
        for forbidden in ["<script", "href", "url(", "<style", "@import", "NaN", "inf"] {
            assert!(!svg.contains(forbidden), "{forbidden}");
        }
    }

    #[test]
    fn svg_one_second_line_only_when_latency_nears_it() {
        let mut report = full_report();
        for s in &mut report.samples {
            s.latency_p99_ms = Some(50.0);
        }
        let low = svg(&report);
        check_well_formed(&low).unwrap();
        assert!(!has_threshold(&low));
        assert!(low.contains(">40 ms</text>") && low.contains(">60 ms</text>"), "{low}");
        assert!(!low.contains(">1 s</text>"));
        for s in &mut report.samples {
            s.latency_p99_ms = Some(5000.0);
        }
        let high = svg(&report);
        check_well_formed(&high).unwrap();
        assert!(has_threshold(&high));
        assert!(high.contains(">4 s</text>") && high.contains(">6 s</text>"));
    }

    #[test]
    fn svg_breaks_a_line_where_latency_is_missing() {
        let mut report = full_report();
        report.samples[20].latency_p99_ms = None;
        report.samples[21].latency_p99_ms = None;
        report.samples[40].latency_p50_ms = None;
        report.samples[59].latency_p50_ms = None;
        let svg = svg(&report);
        check_well_formed(&svg).unwrap();
        assert_eq!(polylines(&svg, P99_COLOUR), 2);
        assert_eq!(polylines(&svg, P50_COLOUR), 2);
        assert_eq!(polylines(&svg, PRODUCED_COLOUR), 1);
    }

    #[test]
    fn svg_handles_zeros_a_single_sample_and_none() {
        let zeros = Report {
            samples: (0..5).map(|i| sample(f64::from(i), 0.0, 0.0, None, None)).collect(),
            ..Report::default()
        };
        let svg_zeros = svg(&zeros);
        check_well_formed(&svg_zeros).unwrap();
        assert!(!svg_zeros.contains("NaN") && !svg_zeros.contains("inf"));
        assert_eq!(polylines(&svg_zeros, PRODUCED_COLOUR), 1);
        assert_eq!(polylines(&svg_zeros, P99_COLOUR), 0);
        assert!(svg_zeros.contains(">no data</text>"));

        let single = Report {
            samples: vec![sample(0.0, 1000.0, 5.0, Some(3.0), Some(7.0))],
            ..Report::default()
        };
        let svg_single = svg(&single);
        check_well_formed(&svg_single).unwrap();
        assert!(!svg_single.contains("NaN") && !svg_single.contains("inf"));
        assert_eq!(svg_single.matches("<circle").count(), 5);

        let huge = Report {
            samples: vec![
                sample(0.0, 1e300, -1e308, None, None),
                sample(1e15, 1.0, 1e308, None, None),
            ],
            ..Report::default()
        };
        check_well_formed(&svg(&huge)).unwrap();

        let empty = svg(&Report {
            markers: vec![Marker {
                t: 1.0,
                label: "x".into(),
            }],
            ..Report::default()
        });
        check_well_formed(&empty).unwrap();
        assert!(empty.contains(">no samples</text>"));
        assert!(!empty.contains("<polyline"));
    }

    #[test]
    fn y_axes_have_four_or_five_ticks() {
        for max in [0.3, 1.0, 7.0, 10.0, 999.0, 1000.0, 1234.0, 250_000.0, 1.2e6, 3e7] {
            let step = nice_step(max / 4.0, &[1.0, 2.0, 2.5, 5.0, 10.0]);
            let intervals = (max / step - 1e-9).ceil();
            assert!((3.0..=4.0).contains(&intervals), "{max}: step {step}");
        }
        assert_eq!(compact(250_000.0), "250k");
        assert_eq!(compact(1_200_000.0), "1.2M");
        assert_eq!(compact(1_250_000.0), "1.25M");
        assert_eq!(compact(0.0), "0");
        assert_eq!(millis(800.0), "800 ms");
        assert_eq!(millis(1500.0), "1.5 s");
        assert_eq!(escape("a&b<c>\"d'"), "a&amp;b&lt;c&gt;&quot;d&#39;");
    }
}
