//! `kairos-loadtest`: the seeded event generator (and, later, the load harness).

use kairos_loadtest::churn::{ChurnLayer, ChurnSpec, Offers};
use kairos_loadtest::harness::engine::EngineSpec;
use kairos_loadtest::harness::feed::Step;
use kairos_loadtest::harness::{self, replay::ReplaySpec, LiveSpec};
use kairos_loadtest::households::{HouseholdSpec, Noise, Population};
use kairos_loadtest::progress::{Display, Reporter, Unit};
use kairos_loadtest::{score, truth, world};

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kairos-loadtest",
    about = "Synthetic operator worlds and load tests for kairos"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a seeded synthetic world's events as JSON Lines (.jsonl or .jsonl.gz).
    Generate {
        /// Output file; `.gz` compresses.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        subscribers: u64,
        #[arg(long, default_value_t = 1)]
        days: u32,
        /// First day (UTC), YYYY-MM-DD.
        #[arg(long, default_value = "2026-07-01")]
        start: NaiveDate,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Average events per subscriber per day.
        #[arg(long, default_value_t = 40)]
        events_per_day: u32,
        /// Share of subscribers who travel abroad on a given day.
        #[arg(long, default_value_t = 0.03)]
        travel_rate: f64,
        /// Share of invalid lines planted on purpose.
        #[arg(long, default_value_t = 0.001)]
        invalid_rate: f64,
        /// Share of lines written twice in a row (an at-least-once source's duplicates).
        #[arg(long, default_value_t = 0.0)]
        duplicate_rate: f64,
        /// Group subscribers into true households and plant their evidence (and the noise);
        /// `false` gives the world without households of before.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        households: bool,
        /// The largest household (1–7; the default world has none of 7).
        #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u8).range(1..=7))]
        max_household_size: u8,
        /// Draw the world's household parameters (sizes, link rates, how much families call,
        /// friends, colleagues, the service line, cells, flats) from ranges with this seed,
        /// instead of the default world's.
        #[arg(long)]
        params_seed: Option<u64>,
        /// Also write the true households, one JSON line per subscriber (`.gz` compresses).
        #[arg(long)]
        truth: Option<PathBuf>,
        /// Also write the moments the world plants for the four default rules, one JSON line
        /// each (`rule`, `msisdn`, `moment_ts`), for `kairos-loadtest check`.
        #[arg(long)]
        moments: Option<PathBuf>,
        /// Plant churners (decline, complaints, contract ends, prepaid lines drying up,
        /// households leaving together) and the same signals as noise among stayers: the
        /// default world's rates, or with `--params-seed` rates drawn from ranges.
        #[arg(long)]
        churn: bool,
        /// With `--churn`: also write who was planted to leave, when and why, one JSON line
        /// per subscriber (`.gz` compresses).
        #[arg(long)]
        churn_truth: Option<PathBuf>,
        /// Show no progress on stderr (by default a bar on a terminal, otherwise a line
        /// every 5 s; KAIROS_PROGRESS_INTERVAL_MS changes the interval).
        #[arg(long)]
        no_progress: bool,
    },
    /// Checks a replay's (or a run's) decisions against the moments a world planted: every
    /// planted moment decided, and no other moment of the default rules. Exits 1 when not.
    Check {
        /// The moments written by `generate --moments`.
        #[arg(long)]
        moments: PathBuf,
        /// `decisions.jsonl` of `kairos replay` (or the decisions topic, one JSON per line).
        #[arg(long)]
        decisions: PathBuf,
    },
    /// `kairos replay` of generated worlds: events/s and peak memory for each number of
    /// workers, households on and off; decisions checked against the planted moments.
    Replay {
        /// World sizes (subscribers), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "100000")]
        subscribers: Vec<u64>,
        /// Worker counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        workers: Vec<usize>,
        /// Households on, off, or both (`true,false`).
        #[arg(long, value_delimiter = ',', default_value = "true")]
        households: Vec<bool>,
        #[arg(long, default_value_t = 40)]
        events_per_day: u32,
        #[arg(long, default_value_t = 1)]
        days: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Share of events written twice in a row (an at-least-once source's duplicates).
        #[arg(long, default_value_t = 0.0)]
        duplicate_rate: f64,
        /// Where generated worlds are kept for the next run.
        #[arg(long, default_value = "/tmp/kairos-loadtest/worlds")]
        cache: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Where a replay's bytes are: its peak RSS, then the heap at its peak under heaptrack,
    /// cut into the engine's components (usage windows, contact history, household evidence,
    /// the graph's arrangements, timely's channels, …), in bytes a subscriber.
    Memory {
        #[arg(long, default_value_t = 100_000)]
        subscribers: u64,
        #[arg(long, default_value_t = 1)]
        days: u32,
        #[arg(long, default_value_t = 40)]
        events_per_day: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        households: bool,
        /// The heaptrack program.
        #[arg(long, default_value = "heaptrack")]
        heaptrack: PathBuf,
        /// The kairos traced under heaptrack: one built on the system allocator
        /// (`cargo build -p kairos --no-default-features`; loadtest/run memory builds it).
        /// The peak RSS is the default build's, from --kairos.
        #[arg(long)]
        traced_kairos: Option<PathBuf>,
        #[arg(long, default_value = "/tmp/kairos-loadtest/worlds")]
        cache: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// The rate search: the generator produces into the local broker at each rate in turn
    /// while `kairos run` consumes; each step's throughput, lag and event → action latency;
    /// stops after the first step the engine does not hold (lag growing or p99 over target).
    Kafka {
        /// Rates to try, events/s, comma-separated, in order.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "25000,50000,100000,150000,200000,300000"
        )]
        rates: Vec<f64>,
        /// Seconds per rate (the first `--warmup` of them not measured).
        #[arg(long, default_value_t = 40.0)]
        step_secs: f64,
        #[command(flatten)]
        live: Live,
    },
    /// A spike: `--rate` for `--before` seconds, `--factor` times it for `--spike-secs`, then
    /// `--rate` again for `--after`; how long until lag and latency are back to steady.
    Spike {
        #[arg(long, default_value_t = 50000.0)]
        rate: f64,
        #[arg(long, default_value_t = 3.0)]
        factor: f64,
        #[arg(long, default_value_t = 30.0)]
        before: f64,
        #[arg(long, default_value_t = 60.0)]
        spike_secs: f64,
        #[arg(long, default_value_t = 120.0)]
        after: f64,
        #[command(flatten)]
        live: Live,
    },
    /// `kill -9` the engine under load after `--before` seconds and start it again at once;
    /// how long until it processes again and until lag and latency are back to steady; no
    /// action lost or repeated.
    Restart {
        #[arg(long, default_value_t = 50000.0)]
        rate: f64,
        #[arg(long, default_value_t = 30.0)]
        before: f64,
        #[arg(long, default_value_t = 90.0)]
        after: f64,
        #[command(flatten)]
        live: Live,
    },
    /// The fault campaign, against a Kafka broker of its own (`scripts/kafka` on
    /// `--broker-port`, never the shared one): under load, with the engine's default allowed
    /// lateness, `kill -9` and restart, broker restarts (short, and one outage longer than the
    /// delivery timeout), SIGSTOP/SIGCONT pauses, an event stamped in 2999 and a partition of
    /// garbage, at instants drawn from `--seed` (from the clock when not given; printed).
    /// Then every output topic is read back: no action lost or repeated, no decision or dead
    /// letter repeated, every planted moment decided, the actions those of a replay of what
    /// was sent (except where events were applied late, counted). Exits 1 when a check fails.
    Faults {
        /// Events per second of the load.
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10_000)]
        subscribers: u64,
        #[arg(long, default_value_t = 40)]
        events_per_day: u32,
        /// The world's seed (the faults have their own, `--seed`).
        #[arg(long, default_value_t = 1)]
        world_seed: u64,
        /// The campaign's seed: the order of the faults, the instants between them, the
        /// pauses' lengths. Default: from the clock.
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value_t = 50)]
        kills: usize,
        /// Broker restarts (stop, start at once: shorter than the delivery timeout).
        #[arg(long, default_value_t = 2)]
        short_restarts: usize,
        /// Seconds the broker stays away in the long outage (0: none). Make it longer than the
        /// engine's delivery timeout (60 s by default; see --delivery-timeout-ms).
        #[arg(long, default_value_t = 360.0)]
        long_outage_secs: f64,
        /// SIGSTOP/SIGCONT pauses of the engine.
        #[arg(long, default_value_t = 5)]
        pauses: usize,
        /// Shortest and longest pause, seconds.
        #[arg(long, value_delimiter = ',', default_value = "1,8")]
        pause_secs: Vec<f64>,
        /// Shortest and longest stretch of load before each fault, seconds.
        #[arg(long, value_delimiter = ',', default_value = "2,8")]
        gap_secs: Vec<f64>,
        /// Garbage messages (not JSON) sent to an input partition of their own (0: none).
        #[arg(long, default_value_t = 2000)]
        garbage: usize,
        /// The engine's `[kafka] delivery_timeout_ms` (default: the engine's own, 60 s).
        #[arg(long)]
        delivery_timeout_ms: Option<u64>,
        /// Whether actions that differ from the replay without a late event to explain them
        /// fail the run (`false`: reported as notes; lost or duplicated records always fail).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        fail_on_differences: bool,
        /// The campaign's broker's port on 127.0.0.1 (its controller takes the next one).
        #[arg(long, default_value_t = 19392)]
        broker_port: u16,
        /// The broker's data folder (default: `broker` in --out; removed at the end).
        #[arg(long)]
        broker_dir: Option<PathBuf>,
        /// Keep the broker's data folder at the end.
        #[arg(long)]
        keep_broker: bool,
        /// `scripts/kafka`.
        #[arg(long, default_value = "scripts/kafka")]
        kafka_script: PathBuf,
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        households: bool,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Partitions of the input topic (the garbage partition comes on top).
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        #[command(flatten)]
        common: Common,
    },
    /// Households on worlds kairos was not tuned on: generates worlds whose parameters are
    /// drawn from ranges, replays each with `kairos replay`, scores it against its truth and
    /// against the hard-links-only baseline; writes report.md / report.json (each world, the
    /// mean and the worst).
    HouseholdsEval {
        #[arg(long, default_value_t = 5)]
        worlds: u32,
        /// World k's parameters are drawn with seed `params_seed + k`.
        #[arg(long, default_value_t = 1)]
        params_seed: u64,
        #[arg(long, default_value_t = 20_000)]
        subscribers: u64,
        #[arg(long, default_value_t = 28)]
        days: u32,
        #[arg(long, default_value_t = 20)]
        events_per_day: u32,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Keep each world's events file.
        #[arg(long)]
        keep: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Fit the weights of churn.toml on generated worlds of known churners (each world's
    /// churn and households drawn from ranges by its seed): `kairos report churn` scores each
    /// world 30 days before its end with the rules folder's factors, and an L2-penalised
    /// logistic regression of who left within 30 days gives the intercept and the weights,
    /// written into --write (comments, factors and threshold kept; `fitted` says from what).
    FitChurn {
        #[arg(long, default_value_t = 3)]
        worlds: u32,
        /// World k's parameters are drawn with seed `params_seed + k`.
        #[arg(long, default_value_t = 100)]
        params_seed: u64,
        #[arg(long, default_value_t = 20_000)]
        subscribers: u64,
        #[arg(long, default_value_t = 90)]
        days: u32,
        #[arg(long, default_value_t = 3)]
        events_per_day: u32,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// The L2 penalty on the weights (not on the intercept).
        #[arg(long, default_value_t = 1.0)]
        penalty: f64,
        /// The churn.toml to write (default: the rules folder's).
        #[arg(long)]
        write: Option<PathBuf>,
        /// Fit on these `scores.jsonl` files of `kairos report churn` (your own history, or
        /// worlds scored before) instead of generating worlds.
        #[arg(long, num_args = 1..)]
        scores: Vec<PathBuf>,
        /// Keep each world's events file.
        #[arg(long)]
        keep: bool,
        #[command(flatten)]
        common: Common,
    },
    /// The churn loop on worlds the weights were not fitted on: generate, replay, hand the
    /// retention actions sent back to the generator, generate again with churners saved at the
    /// planted rate, and `kairos report churn`: AUC, top-decile lift, the stage distribution,
    /// and the retention reduction measured beside the one planted.
    ChurnEval {
        #[arg(long, default_value_t = 1)]
        worlds: u32,
        #[arg(long, default_value_t = 1)]
        params_seed: u64,
        #[arg(long, default_value_t = 50_000)]
        subscribers: u64,
        #[arg(long, default_value_t = 90)]
        days: u32,
        #[arg(long, default_value_t = 3)]
        events_per_day: u32,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        #[arg(long)]
        keep: bool,
        /// Also replay each world's first pass without the lifecycle features (one catch-all
        /// stage, no churn factors): events/s and peak memory with and without them.
        #[arg(long)]
        cost: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Score reconstructed households against the true ones (pairwise precision, recall, F1,
    /// exact households, decision makers).
    ScoreHouseholds {
        /// The truth written by `generate --truth`.
        #[arg(long)]
        truth: PathBuf,
        /// The reconstruction: one JSON line per subscriber with `msisdn` and `household`.
        #[arg(long)]
        got: PathBuf,
        /// Print the score as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// What every harness scenario takes.
#[derive(Args, Clone)]
struct Common {
    /// The `kairos` binary (default: the one beside this program).
    #[arg(long)]
    kairos: Option<PathBuf>,
    #[arg(long, default_value = "rules")]
    rules: PathBuf,
    /// The report's folder (default: /tmp/kairos-loadtest/<scenario>-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl Common {
    fn binary(&self) -> Result<PathBuf> {
        match &self.kairos {
            Some(path) => Ok(path.clone()),
            None => Ok(std::env::current_exe()?.with_file_name("kairos")),
        }
    }

    fn out(&self, scenario: &str) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            PathBuf::from(format!(
                "/tmp/kairos-loadtest/{scenario}-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%S")
            ))
        })
    }
}

/// Writes `records` to `path` (`.gz` compresses), one JSON line each.
fn write_json_lines<T: serde::Serialize>(path: &Path, records: impl IntoIterator<Item = T>) -> Result<()> {
    let mut writer = create(path)?;
    for record in records {
        serde_json::to_writer(&mut writer, &record)
            .map_err(std::io::Error::from)
            .and_then(|()| writer.write_all(b"\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    writer
        .flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The churn harness's spec from the command's arguments.
fn churn_spec(
    common: &Common,
    scenario: &str,
    (worlds, params_seed, subscribers, days, events_per_day, workers, keep): (u32, u64, u64, u32, u32, usize, bool),
) -> Result<kairos_loadtest::harness::churn_eval::ChurnEvalSpec> {
    Ok(kairos_loadtest::harness::churn_eval::ChurnEvalSpec {
        binary: common.binary()?,
        rules: common.rules.clone(),
        out: common.out(scenario),
        worlds,
        params_seed,
        subscribers,
        days,
        events_per_day,
        workers,
        horizon_days: 30,
        keep,
        cost: false,
        command: command_line(),
    })
}

/// What the live scenarios take.
#[derive(Args, Clone)]
struct Live {
    #[arg(long, default_value = "127.0.0.1:19092")]
    brokers: String,
    #[arg(long, default_value_t = 100_000)]
    subscribers: u64,
    /// Events per subscriber per day of the world sent round and round.
    #[arg(long, default_value_t = 40)]
    events_per_day: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of events sent twice in a row (an at-least-once source's duplicates).
    #[arg(long, default_value_t = 0.0)]
    duplicate_rate: f64,
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    households: bool,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Partitions of the input topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Seconds at the start of each step not measured.
    #[arg(long, default_value_t = 10.0)]
    warmup: f64,
    /// The latency target, ms (p99).
    #[arg(long, default_value_t = 1000.0)]
    max_p99_ms: f64,
    #[command(flatten)]
    common: Common,
}

impl Live {
    fn spec(&self, scenario: &str, schedule: Vec<Step>) -> Result<LiveSpec> {
        Ok(LiveSpec {
            scenario: scenario.into(),
            command: command_line(),
            engine: EngineSpec {
                binary: self.common.binary()?,
                brokers: self.brokers.clone(),
                workers: self.workers,
                rules: std::path::absolute(&self.common.rules)?,
                households: self.households,
                engine_extra: String::new(),
            },
            world: world_spec(self.subscribers, 1, self.seed, self.events_per_day, self.duplicate_rate),
            households: self.households,
            partitions: self.partitions,
            out: self.common.out(scenario),
            schedule,
            warmup: self.warmup,
            kill_at: None,
            max_p99_ms: self.max_p99_ms,
            stop_when_not_held: false,
        })
    }
}

fn world_spec(subscribers: u64, days: u32, seed: u64, events_per_day: u32, duplicate_rate: f64) -> world::WorldSpec {
    world::WorldSpec {
        subscribers,
        days,
        start: NaiveDate::from_ymd_opt(2026, 7, 1).expect("a date"),
        seed,
        events_per_day,
        travel_rate: 0.03,
        invalid_rate: 0.001,
        duplicate_rate,
    }
}

fn command_line() -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(first) = args.first_mut() {
        *first = "kairos-loadtest".into();
    }
    args.join(" ")
}

fn step(name: impl Into<String>, rate: f64, secs: f64) -> Step {
    Step {
        name: name.into(),
        rate,
        secs,
    }
}

/// Prints where the report is and fails when the run's checks did not pass.
fn finish(report: &kairos_loadtest::report::Report) -> Result<()> {
    for (name, value) in &report.results {
        println!("{name}: {value}");
    }
    for (name, value) in &report.truth {
        println!("truth {name}: {value}");
    }
    if !report.passed {
        bail!("the run failed its checks: {}", report.failures.join("; "));
    }
    Ok(())
}

/// A writer for `path`, compressing when it ends in `.gz`.
fn create(path: &Path) -> Result<Box<dyn Write>> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(if path.extension().is_some_and(|x| x == "gz") {
        Box::new(BufWriter::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::fast(),
        )))
    } else {
        Box::new(BufWriter::new(file))
    })
}

/// A reader for `path`, decompressing when it ends in `.gz`.
fn open(path: &Path) -> Result<Box<dyn BufRead>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(if path.extension().is_some_and(|x| x == "gz") {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    })
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Generate {
            out,
            subscribers,
            days,
            start,
            seed,
            events_per_day,
            travel_rate,
            invalid_rate,
            duplicate_rate,
            households,
            max_household_size,
            params_seed,
            truth,
            moments,
            churn,
            churn_truth,
            no_progress,
        } => {
            if ![travel_rate, invalid_rate, duplicate_rate]
                .iter()
                .all(|r| (0.0..=1.0).contains(r))
            {
                bail!("--travel-rate, --invalid-rate and --duplicate-rate are shares between 0 and 1");
            }
            let spec = world::WorldSpec {
                subscribers,
                days,
                start,
                seed,
                events_per_day,
                travel_rate,
                invalid_rate,
                duplicate_rate,
            };
            let household_spec = HouseholdSpec {
                enabled: households,
                max_size: usize::from(max_household_size),
                noise: params_seed.map(Noise::drawn).unwrap_or_default(),
                ..HouseholdSpec::default()
            };
            if truth.is_some() && !households {
                bail!("--truth needs a world with households (--households true)");
            }
            if churn && !households {
                bail!("--churn needs a world with households (--households true)");
            }
            if churn_truth.is_some() && !churn {
                bail!("--churn-truth needs --churn");
            }
            let mut churn = churn.then(|| {
                let rates = params_seed.map(ChurnSpec::drawn).unwrap_or_default();
                ChurnLayer::new(rates, seed, start, days, subscribers, Offers::default())
            });
            let started = Instant::now();
            let population = households.then(|| Population::build(&spec, &household_spec));
            if let (Some(path), Some(population)) = (&truth, &population) {
                write_json_lines(path, population.truth_records())?;
            }
            let mut writer = create(&out)?;
            let mut lines = 0u64;
            let mut failure = None;
            // The world's lines come in event-time order: the truth walks them as they go.
            let mut planted = truth::Truth::new();
            let mut newest = 0;
            let reporter = Reporter::start(
                "kairos-loadtest generate",
                Unit::Items("subscriber-days"),
                Display::choose(!no_progress),
            );
            let progress = reporter.progress();
            world::generate_reporting(&spec, population.as_ref(), churn.as_mut(), progress.as_ref(), |line| {
                if moments.is_some() {
                    if let Some(p) = truth::Parsed::from_line(line) {
                        newest = p.ts;
                        planted.observe(&p.msisdn, p.ts, &p.planted);
                    }
                }
                if failure.is_none() {
                    if let Err(e) = writer.write_all(line.as_bytes()).and_then(|()| writer.write_all(b"\n")) {
                        failure = Some(e);
                    }
                    lines += 1;
                }
            });
            reporter.finish();
            if let Some(e) = failure {
                return Err(e).with_context(|| format!("cannot write {}", out.display()));
            }
            writer
                .flush()
                .with_context(|| format!("cannot write {}", out.display()))?;
            drop(writer);
            eprintln!(
                "kairos-loadtest: {lines} events for {subscribers} subscribers over {days} day(s) → {} ({:.1} s)",
                out.display(),
                started.elapsed().as_secs_f64()
            );
            if let Some(path) = &moments {
                let planted = planted.finish(newest);
                let mut writer = create(path)?;
                for m in &planted {
                    writeln!(writer, "{}", truth::moment_json(m))
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
                writer
                    .flush()
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!(
                    "kairos-loadtest: {} planted moments → {}",
                    planted.len(),
                    path.display()
                );
            }
            if let (Some(path), Some(layer)) = (&churn_truth, &churn) {
                let churners = layer.truth().filter(|t| t.churner).count();
                write_json_lines(path, layer.truth())?;
                eprintln!("kairos-loadtest: {churners} churners planted → {}", path.display());
            }
            if let Some(population) = &population {
                let sizes = population.size_histogram();
                eprintln!(
                    "kairos-loadtest: {} true households, by size 1–7: {sizes:?}{}",
                    population.households().len(),
                    truth
                        .as_ref()
                        .map(|p| format!(" → {}", p.display()))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        Command::Check { moments, decisions } => {
            let mut planted = Vec::new();
            for (n, line) in open(&moments)?.lines().enumerate() {
                let line = line.with_context(|| format!("cannot read {}", moments.display()))?;
                planted.push(
                    truth::decided_moment(line.as_bytes())
                        .with_context(|| format!("{}:{}: not a planted moment", moments.display(), n + 1))?,
                );
            }
            let mut decided = Vec::new();
            for line in open(&decisions)?.lines() {
                let line = line.with_context(|| format!("cannot read {}", decisions.display()))?;
                decided.extend(truth::decided_moment(line.as_bytes()));
            }
            let check = truth::check(&planted, decided);
            println!("{}", check.summary());
            if !check.passed() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Replay {
            subscribers,
            workers,
            households,
            events_per_day,
            days,
            seed,
            duplicate_rate,
            cache,
            common,
        } => {
            let spec = ReplaySpec {
                command: command_line(),
                binary: common.binary()?,
                rules: common.rules.clone(),
                worlds: subscribers
                    .iter()
                    .map(|n| world_spec(*n, days, seed, events_per_day, duplicate_rate))
                    .collect(),
                workers,
                households,
                cache,
                out: common.out("replay"),
            };
            finish(&harness::replay::run(&spec)?)
        }
        Command::Memory {
            subscribers,
            days,
            events_per_day,
            seed,
            workers,
            households,
            heaptrack,
            traced_kairos,
            cache,
            common,
        } => {
            if subscribers == 0 || days == 0 || workers == 0 {
                bail!("--subscribers, --days and --workers must be positive");
            }
            let spec = harness::memory::MemorySpec {
                command: command_line(),
                traced_binary: match traced_kairos {
                    Some(path) => path,
                    None => common.binary()?,
                },
                binary: common.binary()?,
                rules: common.rules.clone(),
                world: world_spec(subscribers, days, seed, events_per_day, 0.0),
                workers,
                households,
                cache,
                out: common.out("memory"),
                heaptrack,
            };
            let report = harness::memory::run(&spec)?;
            print!("{}", harness::memory::markdown(&report));
            eprintln!("memory: report in {}", spec.out.display());
            Ok(())
        }
        Command::Kafka { rates, step_secs, live } => {
            let schedule = rates.iter().map(|r| step(format!("{r:.0}/s"), *r, step_secs)).collect();
            let mut spec = live.spec("kafka", schedule)?;
            spec.stop_when_not_held = true;
            finish(&harness::run_live(&spec)?)
        }
        Command::Spike {
            rate,
            factor,
            before,
            spike_secs,
            after,
            live,
        } => {
            let schedule = vec![
                step("before", rate, before),
                step("spike", rate * factor, spike_secs),
                step("after", rate, after),
            ];
            finish(&harness::run_live(&live.spec("spike", schedule)?)?)
        }
        Command::Restart {
            rate,
            before,
            after,
            live,
        } => {
            let schedule = vec![step("before", rate, before), step("after restart", rate, after)];
            let mut spec = live.spec("restart", schedule)?;
            spec.kill_at = Some(before);
            finish(&harness::run_live(&spec)?)
        }
        Command::Faults {
            rate,
            subscribers,
            events_per_day,
            world_seed,
            seed,
            kills,
            short_restarts,
            long_outage_secs,
            pauses,
            pause_secs,
            gap_secs,
            garbage,
            delivery_timeout_ms,
            fail_on_differences,
            broker_port,
            broker_dir,
            keep_broker,
            kafka_script,
            households,
            workers,
            partitions,
            common,
        } => {
            let range = |v: &[f64], name: &str| -> Result<(f64, f64)> {
                match v {
                    [low, high] if 0.0 <= *low && low <= high => Ok((*low, *high)),
                    _ => bail!("--{name} is two numbers of seconds, LOW,HIGH"),
                }
            };
            let seed = seed.unwrap_or_else(harness::faults::clock_seed);
            println!("fault campaign seed: {seed}");
            let out = common.out("faults");
            let spec = harness::faults::FaultSpec {
                command: command_line(),
                engine: EngineSpec {
                    binary: common.binary()?,
                    brokers: String::new(),
                    workers,
                    rules: std::path::absolute(&common.rules)?,
                    households,
                    engine_extra: String::new(),
                },
                broker: harness::faults::BrokerSpec {
                    script: std::path::absolute(&kafka_script)?,
                    port: broker_port,
                    dir: std::path::absolute(broker_dir.unwrap_or_else(|| out.join("broker")))?,
                    keep: keep_broker,
                },
                world: world_spec(subscribers, 1, world_seed, events_per_day, 0.0),
                households,
                partitions,
                out,
                rate,
                seed,
                kills,
                short_restarts,
                long_outage_secs,
                pauses,
                pause_secs: range(&pause_secs, "pause-secs")?,
                gap_secs: range(&gap_secs, "gap-secs")?,
                garbage,
                delivery_timeout_ms,
                fail_on_differences,
            };
            finish(&harness::faults::run(&spec)?)
        }
        Command::HouseholdsEval {
            worlds,
            params_seed,
            subscribers,
            days,
            events_per_day,
            workers,
            keep,
            common,
        } => {
            if worlds == 0 || subscribers < 10 || days == 0 {
                bail!("--worlds, --subscribers (at least 10) and --days must be positive");
            }
            let spec = kairos_loadtest::harness::households_eval::EvalSpec {
                binary: common.binary()?,
                rules: common.rules.clone(),
                out: common.out("households-eval"),
                worlds,
                params_seed,
                subscribers,
                days,
                events_per_day,
                workers,
                keep,
                command: command_line(),
            };
            let report = kairos_loadtest::harness::households_eval::run(&spec)?;
            print!("{}", kairos_loadtest::harness::households_eval::markdown(&report));
            eprintln!("households-eval: report in {}", spec.out.display());
            Ok(())
        }
        Command::FitChurn {
            worlds,
            params_seed,
            subscribers,
            days,
            events_per_day,
            workers,
            penalty,
            write,
            scores,
            keep,
            common,
        } => {
            if worlds == 0 || subscribers < 10 || days <= 30 {
                bail!("--worlds and --subscribers (at least 10) must be positive, --days above the 30-day horizon");
            }
            let spec = churn_spec(
                &common,
                "fit-churn",
                (worlds, params_seed, subscribers, days, events_per_day, workers, keep),
            )?;
            let target = write.unwrap_or_else(|| common.rules.join("churn.toml"));
            let fit = kairos_loadtest::harness::churn_eval::fit_churn(&spec, &target, penalty, &scores)?;
            print!("{}", std::fs::read_to_string(spec.out.join("fit.md"))?);
            eprintln!(
                "fit-churn: {} rows, {} leavers → {} (fit in {})",
                fit.rows,
                fit.leavers,
                target.display(),
                spec.out.display()
            );
            Ok(())
        }
        Command::ChurnEval {
            worlds,
            params_seed,
            subscribers,
            days,
            events_per_day,
            workers,
            keep,
            cost,
            common,
        } => {
            if worlds == 0 || subscribers < 10 || days <= 30 {
                bail!("--worlds and --subscribers (at least 10) must be positive, --days above the 30-day horizon");
            }
            let mut spec = churn_spec(
                &common,
                "churn-eval",
                (worlds, params_seed, subscribers, days, events_per_day, workers, keep),
            )?;
            spec.cost = cost;
            let report = kairos_loadtest::harness::churn_eval::churn_eval(&spec)?;
            print!("{}", kairos_loadtest::harness::churn_eval::markdown(&report));
            eprintln!("churn-eval: report in {}", spec.out.display());
            Ok(())
        }
        Command::ScoreHouseholds { truth, got, json } => {
            let truth_lines = score::read_assignments(open(&truth)?, &truth.display().to_string())?;
            let got_lines = score::read_assignments(open(&got)?, &got.display().to_string())?;
            let result = score::score(&truth_lines, &got_lines)?;
            if json {
                println!("{}", serde_json::to_string(&result)?);
            } else {
                print!("{}", result.report());
            }
            Ok(())
        }
    }
}
