//! progress: signs of life on long work — `kairos replay`, `kairos rules try`, `kairos report
//! uplift` and `kairos-loadtest generate`.
//!
//! A [`Progress`] is a handle of atomic counters that the threads doing the work bump as they
//! go: how much of the work is done out of its total (bytes of the input files read, or
//! subscriber-days generated), events read, and the newest event time seen. A [`Reporter`]
//! owns one and, on its own thread, draws a bar on stderr when stderr is a terminal, or writes
//! a plain line on stderr every few seconds when it is not (CI logs, `2> log`). Nothing goes to
//! stdout and nothing touches the output files, so outputs stay byte for byte what they were;
//! no subscriber number is ever shown.
//!
//! The rendering is pure ([`plain_line`], [`eta`], …), so it is unit-tested without a clock.
//!
//! `kairos-loadtest` compiles this same file (`#[path]` in `loadtest/src/lib.rs`): it cannot
//! depend on the `kairos` crate, whose tests depend on it, so this module uses nothing but
//! std, indicatif and kairos-model.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kairos_model::Millis;

/// How often a plain progress line is written when stderr is not a terminal.
pub const DEFAULT_LINE_INTERVAL: Duration = Duration::from_secs(5);

/// Overrides [`DEFAULT_LINE_INTERVAL`] (milliseconds): tests set it short to see a line soon.
pub const LINE_INTERVAL_ENV: &str = "KAIROS_PROGRESS_INTERVAL_MS";

/// How often the bar is redrawn on a terminal.
const BAR_REFRESH: Duration = Duration::from_millis(200);

/// The events-per-second figure is taken over about this long, so it follows the work's
/// current pace rather than its average since the start.
const RATE_WINDOW: Duration = Duration::from_secs(2);

/// What the work's done and total count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Bytes of input files read (compressed bytes for `.gz`: the file's own size).
    Bytes,
    /// Items of work, named (`subscriber-days`).
    Items(&'static str),
}

/// A handle of the work's counters, cheap to clone and share with the threads doing it.
#[derive(Clone, Debug)]
pub struct Progress {
    counters: Arc<Counters>,
}

#[derive(Debug)]
struct Counters {
    done: AtomicU64,
    total: AtomicU64,
    events: AtomicU64,
    /// The newest event time seen, plus one; 0 while none has been seen.
    newest_event: AtomicU64,
    /// The current step (e.g. `candidate rules 1/3`) and when it began: rates and the ETA
    /// are of the step, since each step reads its input from the start.
    step: Mutex<Step>,
}

#[derive(Debug, Clone)]
struct Step {
    name: Option<String>,
    began: Instant,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress::new()
    }
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            counters: Arc::new(Counters {
                done: AtomicU64::new(0),
                total: AtomicU64::new(0),
                events: AtomicU64::new(0),
                newest_event: AtomicU64::new(0),
                step: Mutex::new(Step {
                    name: None,
                    began: Instant::now(),
                }),
            }),
        }
    }

    /// Starts (or starts again) reading a work of `total` units: the counters go back to 0
    /// and the clock of rates and ETA restarts.
    pub fn begin(&self, total: u64) {
        let c = &self.counters;
        c.step.lock().unwrap_or_else(|p| p.into_inner()).began = Instant::now();
        c.done.store(0, Ordering::Relaxed);
        c.events.store(0, Ordering::Relaxed);
        c.newest_event.store(0, Ordering::Relaxed);
        c.total.store(total, Ordering::Relaxed);
    }

    /// Names the step the work is in (`published rules 2/3`), shown after the label.
    pub fn set_step(&self, name: impl Into<String>) {
        self.counters.step.lock().unwrap_or_else(|p| p.into_inner()).name = Some(name.into());
    }

    /// Counts `units` more of the work done.
    pub fn add_done(&self, units: u64) {
        self.counters.done.fetch_add(units, Ordering::Relaxed);
    }

    /// Counts `events` more events read (or written).
    pub fn add_events(&self, events: u64) {
        self.counters.events.fetch_add(events, Ordering::Relaxed);
    }

    /// Records an event time seen; the newest one is shown.
    pub fn saw_event_time(&self, ts: Millis) {
        self.counters
            .newest_event
            .fetch_max(ts.saturating_add(1), Ordering::Relaxed);
    }

    /// The counters as they stand now.
    pub fn snapshot(&self) -> Snapshot {
        let c = &self.counters;
        let step = c.step.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let newest = c.newest_event.load(Ordering::Relaxed);
        Snapshot {
            step: step.name,
            done: c.done.load(Ordering::Relaxed),
            total: c.total.load(Ordering::Relaxed),
            events: c.events.load(Ordering::Relaxed),
            newest_event: newest.checked_sub(1),
            elapsed: step.began.elapsed(),
        }
    }
}

/// The counters of a [`Progress`] at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub step: Option<String>,
    pub done: u64,
    pub total: u64,
    pub events: u64,
    pub newest_event: Option<Millis>,
    /// Since the step began.
    pub elapsed: Duration,
}

/// How long the rest of the work should take at the pace so far: `None` before anything is
/// done, or when the total is not known.
pub fn eta(done: u64, total: u64, elapsed: Duration) -> Option<Duration> {
    if done == 0 || total == 0 {
        return None;
    }
    let remaining = total.saturating_sub(done) as f64;
    Some(Duration::from_secs_f64(elapsed.as_secs_f64() * remaining / done as f64))
}

/// Events per second between two snapshots of the same step (`earlier` may be `None`, or of
/// a step that has since begun again: then the average since the step began).
pub fn events_per_second(earlier: Option<&Snapshot>, now: &Snapshot) -> f64 {
    let (events, seconds) = match earlier {
        Some(e) if e.elapsed < now.elapsed && e.events <= now.events && e.step == now.step => {
            (now.events - e.events, (now.elapsed - e.elapsed).as_secs_f64())
        }
        _ => (now.events, now.elapsed.as_secs_f64()),
    };
    if seconds > 0.0 {
        events as f64 / seconds
    } else {
        0.0
    }
}

/// `12s`, `3m 36s`, `1h 02m`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

/// `1,234,567`.
pub fn format_count(n: u64) -> String {
    group_thousands(&n.to_string())
}

/// ASCII digits with a comma every three from the right (the load-test reports use it too).
pub fn group_thousands(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `512 B`, `1.5 KiB`, `120.5 MiB`, `2.00 GiB`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let decimals = if value >= 100.0 { 1 } else { 2 };
    format!("{value:.decimals$} {}", UNITS[unit])
}

/// An amount of the work in its unit.
fn amount(unit: Unit, n: u64) -> String {
    match unit {
        Unit::Bytes => format_bytes(n),
        Unit::Items(_) => format_count(n),
    }
}

/// Event time to the second: `2026-07-14T08:00:00Z`.
fn event_time(ts: Millis) -> String {
    kairos_model::time::format_rfc3339(ts - ts % 1000)
}

/// The work done out of its total: `120.5 MiB of 480.0 MiB (25 %)`, `3,000 of 10,000
/// subscriber-days (30 %)`; without a total, what is done.
fn position(unit: Unit, s: &Snapshot) -> String {
    let name = match unit {
        Unit::Bytes => String::new(),
        Unit::Items(name) => format!(" {name}"),
    };
    if s.total == 0 {
        return format!("{}{name}", amount(unit, s.done));
    }
    let percent = (s.done.min(s.total) as f64 * 100.0 / s.total as f64).floor();
    format!(
        "{} of {}{name} ({percent:.0} %)",
        amount(unit, s.done),
        amount(unit, s.total)
    )
}

/// What is left: `about 3m 36s left`, `finishing` once the input is all done (the engine
/// still decides what waits and writes its outputs), or nothing before an estimate exists.
fn remaining(s: &Snapshot) -> Option<String> {
    if s.total > 0 && s.done >= s.total {
        return Some("finishing".to_string());
    }
    eta(s.done, s.total, s.elapsed).map(|left| format!("about {} left", format_duration(left)))
}

/// The label and the step: `kairos rules try [published rules 2/3]`.
fn heading(label: &str, s: &Snapshot) -> String {
    match &s.step {
        Some(step) => format!("{label} [{step}]"),
        None => label.to_string(),
    }
}

/// The line written every few seconds when stderr is not a terminal:
///
/// ```text
/// kairos replay: 1,234,567 events (412,345/s), 120.5 MiB of 480.0 MiB (25 %), event time 2026-07-14T08:00:00Z, 1m 12s in, about 3m 36s left
/// ```
pub fn plain_line(label: &str, unit: Unit, s: &Snapshot, rate: f64) -> String {
    let mut line = format!(
        "{}: {} events ({}/s), {}",
        heading(label, s),
        format_count(s.events),
        format_count(rate.round() as u64),
        position(unit, s)
    );
    if let Some(ts) = s.newest_event {
        line.push_str(&format!(", event time {}", event_time(ts)));
    }
    line.push_str(&format!(", {} in", format_duration(s.elapsed)));
    if let Some(left) = remaining(s) {
        line.push_str(&format!(", {left}"));
    }
    line
}

/// The text beside the bar on a terminal (the bar itself shows the share done).
pub fn bar_message(unit: Unit, s: &Snapshot, rate: f64) -> String {
    let mut message = format!(
        "{} · {} events · {}/s",
        position(unit, s),
        format_count(s.events),
        format_count(rate.round() as u64)
    );
    if let Some(ts) = s.newest_event {
        message.push_str(&format!(" · {}", event_time(ts)));
    }
    if let Some(left) = remaining(s) {
        message.push_str(&format!(" · {left}"));
    }
    message
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Display {
    /// Not at all (`--no-progress`): nothing is counted either.
    Off,
    /// A bar on the terminal, redrawn in place.
    Bar,
    /// A plain line on stderr at this interval.
    Lines(Duration),
}

impl Display {
    /// A bar when stderr is a terminal, otherwise a line every [`DEFAULT_LINE_INTERVAL`] (or
    /// every [`LINE_INTERVAL_ENV`] milliseconds); [`Display::Off`] when not `enabled`.
    pub fn choose(enabled: bool) -> Display {
        if !enabled {
            Display::Off
        } else if std::io::stderr().is_terminal() {
            Display::Bar
        } else {
            Display::Lines(line_interval(std::env::var(LINE_INTERVAL_ENV).ok().as_deref()))
        }
    }
}

/// The plain lines' interval from [`LINE_INTERVAL_ENV`]'s value: the default when unset or
/// not a whole number of milliseconds above 0.
pub fn line_interval(value: Option<&str>) -> Duration {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map_or(DEFAULT_LINE_INTERVAL, Duration::from_millis)
}

/// Shows a [`Progress`] on stderr from its own thread until [`Reporter::finish`] (or drop).
#[derive(Debug)]
pub struct Reporter {
    progress: Option<Progress>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Reporter {
    /// Starts showing a new [`Progress`] as `display` says, headed `label` (`kairos replay`).
    /// With [`Display::Off`], or when the thread cannot start, nothing is shown and
    /// [`Reporter::progress`] is `None`.
    pub fn start(label: &'static str, unit: Unit, display: Display) -> Reporter {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        if display == Display::Off {
            return Reporter {
                progress: None,
                stop,
                thread: None,
            };
        }
        let progress = Progress::new();
        let shown = progress.clone();
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("kairos-progress".into())
            .spawn(move || match display {
                Display::Bar => draw_bar(label, unit, &shown, &stopped),
                Display::Lines(interval) => write_lines(label, unit, &shown, &stopped, interval),
                Display::Off => {}
            })
            // Progress is a nicety: without its thread the work still runs, unreported.
            .ok();
        Reporter {
            progress: thread.is_some().then_some(progress),
            stop,
            thread,
        }
    }

    /// The handle to give the work, `None` when nothing is shown.
    pub fn progress(&self) -> Option<Progress> {
        self.progress.clone()
    }

    /// Stops showing progress (the bar is cleared, so what the command prints next stands
    /// alone).
    pub fn finish(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Waits up to `interval` for the stop signal; true when stopped.
fn wait_stop(stop: &(Mutex<bool>, Condvar), interval: Duration) -> bool {
    let (stopped, wake) = stop;
    let guard = stopped.lock().unwrap_or_else(|p| p.into_inner());
    let (guard, _) = wake
        .wait_timeout_while(guard, interval, |stopped| !*stopped)
        .unwrap_or_else(|p| p.into_inner());
    *guard
}

fn write_lines(label: &str, unit: Unit, progress: &Progress, stop: &(Mutex<bool>, Condvar), interval: Duration) {
    let mut earlier: Option<Snapshot> = None;
    while !wait_stop(stop, interval) {
        let now = progress.snapshot();
        eprintln!(
            "{}",
            plain_line(label, unit, &now, events_per_second(earlier.as_ref(), &now))
        );
        earlier = Some(now);
    }
}

fn draw_bar(label: &str, unit: Unit, progress: &Progress, stop: &(Mutex<bool>, Condvar)) {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {percent:>3}% {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    // The rate is taken against a snapshot about RATE_WINDOW old.
    let mut earlier: Option<Snapshot> = None;
    while !wait_stop(stop, BAR_REFRESH) {
        let now = progress.snapshot();
        let rate = events_per_second(earlier.as_ref(), &now);
        bar.set_prefix(heading(label, &now));
        bar.set_length(now.total.max(1));
        bar.set_position(now.done.min(now.total));
        bar.set_message(bar_message(unit, &now, rate));
        let stale = earlier
            .as_ref()
            .is_none_or(|e| e.step != now.step || now.elapsed.saturating_sub(e.elapsed) >= RATE_WINDOW);
        if stale {
            earlier = Some(now);
        }
    }
    bar.finish_and_clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(done: u64, total: u64, events: u64, secs: u64) -> Snapshot {
        Snapshot {
            step: None,
            done,
            total,
            events,
            newest_event: None,
            elapsed: Duration::from_secs(secs),
        }
    }

    #[test]
    fn eta_is_the_rest_at_the_pace_so_far() {
        assert_eq!(eta(0, 100, Duration::from_secs(5)), None, "nothing done yet");
        assert_eq!(eta(10, 0, Duration::from_secs(5)), None, "no total");
        assert_eq!(eta(25, 100, Duration::from_secs(60)), Some(Duration::from_secs(180)));
        assert_eq!(eta(100, 100, Duration::from_secs(60)), Some(Duration::ZERO));
        assert_eq!(
            eta(150, 100, Duration::from_secs(60)),
            Some(Duration::ZERO),
            "past the total"
        );
    }

    #[test]
    fn numbers_and_durations_read_as_people_write_them() {
        assert_eq!(format_count(0), "0");
        assert_eq!(format_count(999), "999");
        assert_eq!(format_count(1000), "1,000");
        assert_eq!(format_count(1_234_567), "1,234,567");
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.50 KiB");
        assert_eq!(format_bytes(120 * 1024 * 1024 + 512 * 1024), "120.5 MiB");
        assert_eq!(format_bytes(2 << 30), "2.00 GiB");
        assert_eq!(format_duration(Duration::from_millis(12_900)), "12s");
        assert_eq!(format_duration(Duration::from_secs(216)), "3m 36s");
        assert_eq!(format_duration(Duration::from_secs(3600 + 125)), "1h 02m");
    }

    #[test]
    fn plain_line_of_a_replay() {
        let mut s = snapshot(120 * 1024 * 1024 + 512 * 1024, 480 * 1024 * 1024, 1_234_567, 72);
        s.newest_event = Some(kairos_model::time::parse_rfc3339("2026-07-14T08:00:00.750Z").unwrap());
        assert_eq!(
            plain_line("kairos replay", Unit::Bytes, &s, 412_345.4),
            "kairos replay: 1,234,567 events (412,345/s), 120.5 MiB of 480.0 MiB (25 %), \
             event time 2026-07-14T08:00:00Z, 1m 12s in, about 3m 34s left"
        );
    }

    #[test]
    fn plain_line_before_anything_is_read_and_once_all_is() {
        let s = snapshot(0, 4096, 0, 0);
        assert_eq!(
            plain_line("kairos replay", Unit::Bytes, &s, 0.0),
            "kairos replay: 0 events (0/s), 0 B of 4.00 KiB (0 %), 0s in"
        );
        let s = snapshot(4096, 4096, 50, 3);
        assert!(plain_line("kairos replay", Unit::Bytes, &s, 0.0).ends_with("3s in, finishing"));
        let s = snapshot(10, 0, 50, 3);
        assert_eq!(
            plain_line("x", Unit::Items("files"), &s, 1.0),
            "x: 50 events (1/s), 10 files, 3s in",
            "no total: no share, no ETA"
        );
    }

    #[test]
    fn plain_line_of_a_step_in_items() {
        let mut s = snapshot(3_000, 10_000, 120_000, 30);
        s.step = Some("published rules 2/3".into());
        assert_eq!(
            plain_line("kairos-loadtest generate", Unit::Items("subscriber-days"), &s, 4000.0),
            "kairos-loadtest generate [published rules 2/3]: 120,000 events (4,000/s), \
             3,000 of 10,000 subscriber-days (30 %), 30s in, about 1m 10s left"
        );
        assert_eq!(
            bar_message(Unit::Items("subscriber-days"), &s, 4000.0),
            "3,000 of 10,000 subscriber-days (30 %) · 120,000 events · 4,000/s · about 1m 10s left"
        );
    }

    #[test]
    fn rate_is_over_the_last_interval_of_the_same_step() {
        let earlier = snapshot(0, 0, 1_000, 10);
        let now = snapshot(0, 0, 6_000, 15);
        assert_eq!(events_per_second(Some(&earlier), &now), 1_000.0);
        assert_eq!(events_per_second(None, &now), 400.0, "average since the step began");
        let restarted = snapshot(0, 0, 500, 1);
        assert_eq!(events_per_second(Some(&now), &restarted), 500.0, "a new step");
        assert_eq!(events_per_second(None, &snapshot(0, 0, 0, 0)), 0.0);
    }

    #[test]
    fn interval_from_the_environment() {
        assert_eq!(line_interval(None), DEFAULT_LINE_INTERVAL);
        assert_eq!(line_interval(Some("200")), Duration::from_millis(200));
        assert_eq!(line_interval(Some("0")), DEFAULT_LINE_INTERVAL);
        assert_eq!(line_interval(Some("soon")), DEFAULT_LINE_INTERVAL);
    }

    #[test]
    fn counters_are_shared_and_begin_resets_them() {
        let progress = Progress::new();
        let worker = progress.clone();
        worker.begin(100);
        worker.add_done(40);
        worker.add_events(7);
        worker.saw_event_time(5_000);
        worker.saw_event_time(2_000);
        let s = progress.snapshot();
        assert_eq!((s.done, s.total, s.events, s.newest_event), (40, 100, 7, Some(5_000)));
        progress.set_step("second");
        worker.begin(10);
        let s = progress.snapshot();
        assert_eq!((s.done, s.total, s.events, s.newest_event), (0, 10, 0, None));
        assert_eq!(s.step.as_deref(), Some("second"));
    }

    #[test]
    fn a_reporter_writes_nothing_to_count_when_off() {
        let reporter = Reporter::start("x", Unit::Bytes, Display::Off);
        assert!(reporter.progress().is_none());
        reporter.finish();
        let reporter = Reporter::start("x", Unit::Bytes, Display::Lines(Duration::from_secs(60)));
        assert!(reporter.progress().is_some());
        reporter.finish();
    }
}
