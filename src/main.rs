//! The `kairos` command line: the binary's edge, where errors become one line and an exit
//! status.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use kairos::config::RunConfig;
use kairos::ingest::range::{Bound, Range};
use kairos::pipeline::{self, ReplayOptions};

#[derive(Parser)]
#[command(
    name = "kairos",
    version,
    about = "Triggered marketing for telecom operators: events in, offer actions out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay JSON Lines event logs through the engine and write actions, decisions,
    /// dead letters and a summary into a folder.
    Replay {
        /// Event files (.jsonl, .jsonl.gz) or folders of them.
        #[arg(long, num_args = 1.., required = true)]
        events: Vec<PathBuf>,
        /// Output folder (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Rules folder.
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
        /// Worker threads; the output does not depend on it.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// How far an event may be behind newer ones and still take its place in
        /// event-time order (milliseconds).
        #[arg(long, default_value_t = 0)]
        allowed_lateness_ms: u64,
        /// Do not find households (no `households.jsonl`, no `household` in actions).
        #[arg(long)]
        no_households: bool,
        /// Read how households are found from the `[households]` table of this TOML file
        /// (e.g. the `kairos run` configuration).
        #[arg(long)]
        households_config: Option<PathBuf>,
    },
    /// Run the always-on engine: Kafka in, Kafka out, /metrics for Prometheus.
    Run {
        /// Configuration file (TOML); see docs in src/config.rs and kairos.example.toml.
        #[arg(long)]
        config: PathBuf,
        /// Where to start reading partitions that have no stored position: earliest,
        /// latest, an RFC 3339 time (Kafka message timestamps) or TOPIC:PARTITION:OFFSET,…
        /// (default: [kafka] start_from).
        #[arg(long)]
        from: Option<String>,
        /// Stop at the end of a range and leave after a final checkpoint: end (each
        /// partition's end when kairos starts), an RFC 3339 time, or TOPIC:PARTITION:OFFSET,…
        /// (exclusive). Without it, kairos runs until SIGTERM.
        #[arg(long)]
        to: Option<String>,
    },
    /// Work with rule files.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Check every rule file in a folder; print each problem as file:line:col.
    Check {
        /// Rules folder.
        dir: PathBuf,
    },
    /// Print the JSON Schema of the rule file format (for editors).
    Schema,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KAIROS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay {
            events,
            out,
            rules,
            workers,
            allowed_lateness_ms,
            no_households,
            households_config,
        } => {
            let households = match households_config {
                Some(path) => kairos::config::load_households(&path),
                None => Ok(Default::default()),
            };
            households.and_then(|households| {
            let options = ReplayOptions {
                events,
                out,
                rules,
                workers,
                allowed_lateness_ms,
                households: kairos_dataflows::households::HouseholdConfig {
                    enabled: !no_households && households.enabled,
                    ..households
                },
            };
            pipeline::replay(&options).map(|s| {
                let actions: u64 = s.actions_by_rule.values().sum();
                let suppressed: u64 = s.suppressed_by_reason.values().sum();
                eprintln!(
                    "kairos replay: {} events ({} invalid, {} late) from {} file(s) in {:.2}s ({:.0} events/s): {actions} actions, {suppressed} suppressed → {}",
                    s.events_valid + s.events_invalid,
                    s.events_invalid,
                    s.events_late,
                    s.files,
                    s.seconds,
                    s.events_per_second,
                    options.out.display()
                );
            })
            })
        }
        Command::Run { config, from, to } => RunConfig::load(&config).and_then(|config| {
            let range = Range {
                from: from.as_deref().map(|f| Bound::parse(f, "--from")).transpose()?,
                to: to.as_deref().map(|t| Bound::parse(t, "--to")).transpose()?,
            };
            let shutdown = Arc::new(AtomicBool::new(false));
            watch_signals(Arc::clone(&shutdown))?;
            pipeline::run(&config, &range, shutdown)
        }),
        Command::Rules {
            command: RulesCommand::Schema,
        } => {
            print!("{}", kairos::rules::json_schema());
            Ok(())
        }
        Command::Rules {
            command: RulesCommand::Check { dir },
        } => match kairos::rules::load_dir(&dir) {
            Ok(set) => {
                println!("{}: {} rule(s) OK", dir.display(), set.rules.len());
                Ok(())
            }
            Err(errors) => {
                for error in &errors {
                    println!("{error}");
                }
                Err(format!("{} problem(s) in {}", errors.len(), dir.display()))
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("kairos: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// Sets `shutdown` on SIGINT or SIGTERM, so `run` decides what it has read and flushes.
fn watch_signals(shutdown: Arc<AtomicBool>) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the signal watcher: {e}"))?;
    std::thread::Builder::new()
        .name("kairos-signals".into())
        .spawn(move || {
            runtime.block_on(async {
                let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(e) => {
                        tracing::error!(%e, "cannot watch SIGTERM");
                        return;
                    }
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                tracing::info!("shutting down: deciding what was read, then flushing");
                shutdown.store(true, Ordering::Relaxed);
            })
        })
        .map_err(|e| format!("cannot start the signal watcher: {e}"))?;
    Ok(())
}
