//! `kairos-loadtest`: the seeded event generator (and, later, the load harness).

use kairos_loadtest::households::{HouseholdSpec, Population};
use kairos_loadtest::{score, truth, world};

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use chrono::NaiveDate;
use clap::{Parser, Subcommand};

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
        /// Group subscribers into true households and plant their evidence (and the noise);
        /// `false` gives the world without households of before.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        households: bool,
        /// The largest household (1–6).
        #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u8).range(1..=6))]
        max_household_size: u8,
        /// Also write the true households, one JSON line per subscriber (`.gz` compresses).
        #[arg(long)]
        truth: Option<PathBuf>,
        /// Also write the moments the world plants for the four default rules, one JSON line
        /// each (`rule`, `msisdn`, `moment_ts`), for `kairos-loadtest check`.
        #[arg(long)]
        moments: Option<PathBuf>,
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
            households,
            max_household_size,
            truth,
            moments,
        } => {
            if !(0.0..=1.0).contains(&travel_rate) || !(0.0..=1.0).contains(&invalid_rate) {
                bail!("--travel-rate and --invalid-rate are shares between 0 and 1");
            }
            let spec = world::WorldSpec {
                subscribers,
                days,
                start,
                seed,
                events_per_day,
                travel_rate,
                invalid_rate,
            };
            let household_spec = HouseholdSpec {
                enabled: households,
                max_size: usize::from(max_household_size),
                ..HouseholdSpec::default()
            };
            if truth.is_some() && !households {
                bail!("--truth needs a world with households (--households true)");
            }
            let started = Instant::now();
            let population = households.then(|| Population::build(&spec, &household_spec));
            if let (Some(path), Some(population)) = (&truth, &population) {
                let mut writer = create(path)?;
                for record in population.truth_records() {
                    serde_json::to_writer(&mut writer, &record)
                        .map_err(std::io::Error::from)
                        .and_then(|()| writer.write_all(b"\n"))
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
                writer
                    .flush()
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            let mut writer = create(&out)?;
            let mut lines = 0u64;
            let mut failure = None;
            let mut parsed = Vec::new();
            world::generate_population(&spec, population.as_ref(), |line| {
                if moments.is_some() {
                    parsed.extend(truth::Parsed::from_line(line));
                }
                if failure.is_none() {
                    if let Err(e) = writer.write_all(line.as_bytes()).and_then(|()| writer.write_all(b"\n")) {
                        failure = Some(e);
                    }
                    lines += 1;
                }
            });
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
                let planted = truth::of_parsed(parsed);
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
            if let Some(population) = &population {
                let sizes = population.size_histogram();
                eprintln!(
                    "kairos-loadtest: {} true households, by size 1–6: {sizes:?}{}",
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
