//! `kairos-loadtest`: the seeded event generator (and, later, the load harness).

use kairos_loadtest::world;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

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
    },
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
            let file = File::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
            let mut writer: Box<dyn Write> = if out.extension().is_some_and(|x| x == "gz") {
                Box::new(BufWriter::new(flate2::write::GzEncoder::new(
                    file,
                    flate2::Compression::fast(),
                )))
            } else {
                Box::new(BufWriter::new(file))
            };
            let mut lines = 0u64;
            let mut failure = None;
            world::generate(&spec, |line| {
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
                "kairos-loadtest: {lines} events for {subscribers} subscribers over {days} day(s) → {}",
                out.display()
            );
            Ok(())
        }
    }
}
