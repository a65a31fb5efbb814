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
use kairos::progress::{Display, Reporter, Unit};

/// mimalloc: per-thread free lists suit the workers' many small, short-lived allocations
/// (decoded events, CEL values); glibc's malloc took ~30 % of a replay (loadtest/results).
/// The default feature `mimalloc`; a build without it runs on the system's malloc, for heap
/// profilers (`loadtest/run memory`).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "kairos",
    version,
    about = "Triggered marketing for telecom operators: events in, offer actions out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Show no progress on stderr (by default a bar on a terminal, otherwise a line every
    /// 5 s; KAIROS_PROGRESS_INTERVAL_MS changes the interval).
    #[arg(long, global = true)]
    no_progress: bool,
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
        /// Rules folder [default: ./rules, or else the rules shipped with kairos].
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Worker threads; the output does not depend on it.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// How far an event may be behind newer ones and still take its place in
        /// event-time order (milliseconds).
        #[arg(long, default_value_t = 0)]
        allowed_lateness_ms: u64,
        /// An event stamped more than this after the wall clock of the replaying machine is
        /// invalid (a dead letter; contract §5.1), in milliseconds.
        #[arg(long, default_value_t = kairos::decode::Horizon::DEFAULT_MAX_FUTURE)]
        max_future_ms: u64,
        /// The state of a number with no customer record is forgotten this long after its
        /// last event (event time, milliseconds; 0: never). As `forget_non_customers_after_ms`
        /// of `kairos run`.
        #[arg(long, default_value_t = kairos_dataflows::Retention::DEFAULT_FORGET_AFTER)]
        forget_non_customers_after_ms: u64,
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
    /// Read back what the engine decided.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Check every rule file in a folder; print each problem as file:line:col.
    Check {
        /// Rules folder.
        dir: PathBuf,
    },
    /// Print the JSON Schema of the rule file format (for editors); with --policy, of
    /// policy.toml.
    Schema {
        #[arg(long)]
        policy: bool,
    },
    /// Check a rules folder and publish it on the rules topic of a `kairos run`
    /// configuration ([engine] rules_topic, a compacted topic): every process following the
    /// topic puts it in force at --at (event time; default now), or at once where event
    /// time is already past it. Nothing is published when the folder does not check.
    Publish {
        /// Rules folder.
        dir: PathBuf,
        /// The `kairos run` configuration naming the brokers and [engine] rules_topic.
        #[arg(long)]
        config: PathBuf,
        /// The event time the set takes force at: RFC 3339, or `now` (the default).
        #[arg(long, default_value = "now")]
        at: String,
    },
    /// What a new rule set changes against an old one: rules added, removed, and every
    /// changed field; policy changes. Both folders are checked first. Exit status 0 when
    /// they decide alike, 1 when they differ (like diff(1)), 2 when one does not check.
    Diff {
        /// The rules in force.
        old: PathBuf,
        /// The candidate.
        new: PathBuf,
    },
    /// Dry-run a candidate rule set: replay an event log with it and with the published
    /// rules, contacting nobody, and write a report a marketer can read — `report.html`
    /// (self-contained: per rule a funnel, actions per day, the difference, sample
    /// messages) and `report.json` (the same numbers) — into --out.
    ///
    /// Per rule: moments decided, sent, suppressed by each reason of the contact policy,
    /// deferred by quiet hours, actions per channel and per UTC day of send_at, the first
    /// --samples messages (numbers masked), and the difference against --against: added,
    /// removed, changed (another version) or unchanged, with the change of every count.
    /// Both replays are kept in --out/candidate/ and --out/published/.
    ///
    /// JSON fields (version 1): version, generated_by, inputs {candidate_rules,
    /// against_rules, candidate_rule_count, against_rule_count, policy_changed, event_paths,
    /// event_files, events_read, events_invalid, first_event, last_event},
    /// samples_per_rule, totals {candidate, published, delta}, timeline [{day, candidate,
    /// published}], rules [{rule, status, version, published_version, class, channel,
    /// candidate, published, delta, funnel [{step, removed, remaining}], samples [{send_at,
    /// msisdn, channel, language, message}]}]. candidate / published: {moments, sent,
    /// deferred, suppressed, suppressed_by_reason {no_consent, opted_out, cooldown,
    /// quiet_hours, cap, arbitration, global_holdout, rule_holdout}, actions_by_channel
    /// {sms, email, push, total}, actions_by_day [{day, sms, email, push, total}]} (null
    /// when the rule is not in that set); delta: the same counts, candidate − published.
    ///
    /// Invalid candidate rules are printed as file:line:col (as by `kairos rules check`)
    /// and no report is written.
    Try {
        /// The candidate rules folder (rule files and an optional policy.toml).
        dir: PathBuf,
        /// Event files (.jsonl, .jsonl.gz) or folders of them.
        #[arg(long, num_args = 1.., required = true)]
        events: Vec<PathBuf>,
        /// The published rules folder to compare with [default: ./rules, or else the rules
        /// shipped with kairos].
        #[arg(long)]
        against: Option<PathBuf>,
        /// Output folder (created if missing).
        #[arg(long, default_value = "rules-try")]
        out: PathBuf,
        /// Worker threads; the report does not depend on it.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Sample messages per rule.
        #[arg(long, default_value_t = kairos::report::dryrun::DEFAULT_SAMPLES)]
        samples: usize,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Hold the churn-risk score against who really left, and the retention actions against
    /// their control group (the closed loop).
    ///
    /// Replays the log (into OUT/replay/) keeping every customer's score as it stood at --at
    /// (after everything before it), then counts who terminated (`customer` records with
    /// "status": "terminated") within --horizon after it: AUC, top-decile lift, precision
    /// at the top k, cumulative gains, a calibration table, hit rates per reason and the
    /// stage distribution. The retention loop: subscribers sent a retention action vs held
    /// out of every one (global_holdout, rule_holdout), the churn rate within the horizon
    /// of the first such decision, with Wilson and Newcombe 95% intervals.
    ///
    /// Writes OUT/report.md, OUT/report.json, OUT/report.html (self-contained, with the
    /// gains curve, calibration and stages plotted) and OUT/scores.jsonl (each customer's
    /// score, reasons, factors and whether they left); prints the Markdown.
    Churn {
        /// Event files (.jsonl, .jsonl.gz) or folders of them: the whole log, before and
        /// after the observation instant.
        #[arg(long, num_args = 1.., required = true)]
        events: Vec<PathBuf>,
        /// Output folder (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Rules folder, with its churn.toml and lifecycle.toml [default: ./rules, or else
        /// the rules shipped with kairos].
        #[arg(long)]
        rules: Option<PathBuf>,
        /// The observation instant (RFC 3339) [default: the last event's ts minus --horizon].
        #[arg(long)]
        at: Option<String>,
        /// How long after the instant a termination counts: a whole number and a unit, s,
        /// m, h or d.
        #[arg(long, default_value = "30d")]
        horizon: String,
        /// The sizes of the top of the scores to report, comma-separated.
        #[arg(long, default_value = "100,500,1000")]
        top: String,
        /// A rule of the retention loop (repeat for several) [default: the rules on the
        /// churn_risk and cancel_intent moments, and the declared moments that read the
        /// score].
        #[arg(long = "retention-rule")]
        retention_rules: Vec<String>,
        /// Also score as of every day (00:00 UTC) whose horizon lies in the log: AUC, lift
        /// and the stages day by day, and the stage flows.
        #[arg(long)]
        daily: bool,
        /// Worker threads of the replay; the report does not depend on it.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// A first look at a replay's output folder: events read, actions by rule and channel
    /// (and how many were held for quiet hours), suppressions by reason of the contact
    /// policy and the rules they held back, one message per rule as it would be sent (the
    /// subscriber number masked), and the folder's files with what they hold.
    Summary {
        /// The folder `kairos replay --out` wrote (or `kairos rules try`'s candidate/ or
        /// published/).
        dir: PathBuf,
    },
    /// Measure each rule's uplift: how much more often subscribers converted when an offer
    /// was sent than when it was held out (control group).
    ///
    /// Treated: decisions `sent`. Control: decisions suppressed with `global_holdout` or
    /// `rule_holdout`. Every other decision (no consent, cooldown, opted out, cap, quiet
    /// hours, arbitration, any other reason) was not eligible to be sent and is excluded.
    ///
    /// A decision converts when a `response` event of the same msisdn has an outcome in
    /// --outcomes, a `ts` in [moment_ts, moment_ts + --window], and an `action_id` that is
    /// the decision's own or that of no other decision in the input: a purchase reported
    /// against a held-out decision's id, or with an unknown id, counts; a response to
    /// another rule's action does not. Each decision counts at most once (and once when
    /// the input repeats it: the same action_id).
    ///
    /// Per rule (by id), then all rules pooled ("all"): n and conversions of each group,
    /// the conversion rates with Wilson score 95% intervals, the uplift (treated rate −
    /// control rate) with Newcombe's hybrid score 95% interval (Newcombe 1998, method 10)
    /// and the relative uplift (uplift / control rate, when that is above 0). "not enough
    /// data" stands for an interval when a group is empty.
    ///
    /// Lines that are not a decision, or not a valid event, are skipped and counted in the
    /// report; the first few are shown on stderr as FILE:LINE: reason. An unreadable path
    /// stops the command with a non-zero exit status.
    Uplift {
        /// Decision files (.jsonl, .jsonl.gz): `decisions.jsonl` of a replay or a dump of
        /// the kairos.decisions topic; folders of them; or `kairos replay --out` folders
        /// (their decisions.jsonl is read).
        #[arg(long, num_args = 1.., required = true)]
        decisions: Vec<PathBuf>,
        /// Event files (.jsonl, .jsonl.gz) or folders of them holding the `response`
        /// events; other event types are skipped.
        #[arg(long, num_args = 1.., required = true)]
        events: Vec<PathBuf>,
        /// How long after `moment_ts` a response still counts: a whole number and a unit,
        /// s, m, h or d (e.g. 7d, 36h).
        #[arg(long, default_value = "7d")]
        window: String,
        /// Response outcomes that count as a conversion, comma-separated (delivered,
        /// clicked, accepted, declined, opted_out).
        #[arg(long, default_value = "accepted")]
        outcomes: String,
        /// Print JSON instead of a Markdown table: {window, window_ms, outcomes, confidence,
        /// inputs: {decision_files, decisions, duplicate_decisions, malformed_decision_lines,
        /// event_files, responses, other_events, invalid_event_lines}, rules: [{rule,
        /// treated: {n, conversions, rate, ci_low, ci_high}, control: {…}, excluded,
        /// uplift: {absolute, ci_low, ci_high, relative}}], all: {…}}. Rates and uplifts
        /// are fractions (0.05 = 5%); null where a group is empty (uplift: either group;
        /// relative: control rate 0).
        #[arg(long)]
        json: bool,
        /// Write the report to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
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
    let display = Display::choose(!cli.no_progress);
    let result = match cli.command {
        Command::Replay {
            events,
            out,
            rules,
            workers,
            allowed_lateness_ms,
            max_future_ms,
            forget_non_customers_after_ms,
            no_households,
            households_config,
        } => {
            let households = match households_config {
                Some(path) => kairos::config::load_households(&path).map_err(|e| e.to_string()),
                None => Ok(Default::default()),
            };
            let rules = rules_dir(rules, "--rules");
            households.and_then(|households| {
            let reporter = Reporter::start("kairos replay", Unit::Bytes, display);
            let options = ReplayOptions {
                events,
                out,
                rules: rules?,
                workers,
                allowed_lateness_ms,
                max_future_ms,
                households: kairos_dataflows::households::HouseholdConfig {
                    enabled: !no_households && households.enabled,
                    ..households
                },
                retention: kairos_dataflows::Retention {
                    forget_non_customers_after_ms,
                },
                progress: reporter.progress(),
            };
            let replayed = pipeline::replay(&options).map_err(|e| e.to_string());
            reporter.finish();
            replayed.map(|s| {
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
        Command::Run { config, from, to } => RunConfig::load(&config).map_err(|e| e.to_string()).and_then(|config| {
            let range = Range {
                from: from.as_deref().map(|f| Bound::parse(f, "--from")).transpose()?,
                to: to.as_deref().map(|t| Bound::parse(t, "--to")).transpose()?,
            };
            let shutdown = Arc::new(AtomicBool::new(false));
            watch_signals(Arc::clone(&shutdown))?;
            pipeline::run(&config, &range, shutdown).map_err(|e| e.to_string())
        }),
        Command::Rules {
            command: RulesCommand::Schema { policy },
        } => {
            if policy {
                print!("{}", kairos::rules::policy::json_schema());
            } else {
                print!("{}", kairos::rules::json_schema());
            }
            Ok(())
        }
        Command::Rules {
            command: RulesCommand::Publish { dir, config, at },
        } => RunConfig::load(&config).map_err(|e| e.to_string()).and_then(|config| {
            let topic = config
                .engine
                .rules_topic
                .clone()
                .ok_or_else(|| "the configuration names no [engine] rules_topic to publish on".to_string())?;
            let at = match at.as_str() {
                "now" => kairos_model::time::now(),
                text => kairos_model::time::parse_rfc3339(text).map_err(|e| format!("--at {text:?}: {e}"))?,
            };
            let published = kairos::rules::publish::Published::from_dir(&dir, at).map_err(|e| e.to_string())?;
            kairos::rules::publish::publish(&config.kafka, &topic, &published).map_err(|e| e.to_string())?;
            println!(
                "{}: {} file(s) published on {topic} as version {}, in force from {}",
                dir.display(),
                published.files.len(),
                published.version,
                published.effective_at
            );
            Ok(())
        }),
        Command::Rules {
            command: RulesCommand::Diff { old, new },
        } => {
            let load = |dir: &PathBuf| kairos::pipeline::load_rules(dir);
            let (old, new) = match (load(&old), load(&new)) {
                (Ok(old), Ok(new)) => (old, new),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("kairos: {e}");
                    return ExitCode::from(2);
                }
            };
            let lines = kairos::rules::diff::diff(&old, &new);
            for line in &lines {
                println!("{line}");
            }
            if lines.is_empty() {
                println!("no difference");
                Ok(())
            } else {
                return ExitCode::from(1);
            }
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
        Command::Rules {
            command:
                RulesCommand::Try {
                    dir,
                    events,
                    against,
                    out,
                    workers,
                    samples,
                },
        } => rules_dir(against, "--against").and_then(|against| {
            rules_try(
                kairos::report::TryOptions {
                    candidate: dir,
                    against,
                    events,
                    out,
                    workers,
                    samples,
                    progress: None,
                },
                display,
            )
        }),
        Command::Report {
            command:
                ReportCommand::Uplift {
                    decisions,
                    events,
                    window,
                    outcomes,
                    json,
                    out,
                },
        } => report_uplift(decisions, events, &window, &outcomes, json, out, display),
        Command::Report {
            command: ReportCommand::Summary { dir },
        } => kairos::report::summary(&dir).map(|summary| print!("{}", summary.to_text())),
        Command::Report {
            command:
                ReportCommand::Churn {
                    events,
                    out,
                    rules,
                    at,
                    horizon,
                    top,
                    retention_rules,
                    daily,
                    workers,
                },
        } => rules_dir(rules, "--rules").and_then(|rules| {
            report_churn(
                ChurnArgs {
                    events,
                    out,
                    rules,
                    at,
                    horizon,
                    top,
                    retention_rules,
                    daily,
                    workers,
                },
                display,
            )
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("kairos: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// `kairos rules try`: checks the candidate rules first (each problem as file:line:col, as
/// `kairos rules check` prints them), then runs the dry run and says where the report is.
fn rules_try(mut options: kairos::report::TryOptions, display: Display) -> Result<(), String> {
    if let Err(errors) = kairos::rules::load_dir(&options.candidate) {
        for error in &errors {
            println!("{error}");
        }
        return Err(format!(
            "{} problem(s) in {}; no report written",
            errors.len(),
            options.candidate.display()
        ));
    }
    let reporter = Reporter::start("kairos rules try", Unit::Bytes, display);
    options.progress = reporter.progress();
    let run = kairos::report::rules_try(&options);
    reporter.finish();
    let run = run?;
    let totals = &run.report.totals;
    let changed = run
        .report
        .rules
        .iter()
        .filter(|r| r.status != kairos::report::dryrun::Status::Unchanged)
        .count();
    eprintln!(
        "kairos rules try: {} events ({} invalid); candidate {} sent, {} suppressed; published {} sent, {} suppressed; \
         {changed} rule(s) added, removed or changed → {} and {}",
        run.candidate.events_valid + run.candidate.events_invalid,
        run.candidate.events_invalid,
        totals.candidate.sent,
        totals.candidate.suppressed,
        totals.published.sent,
        totals.published.suppressed,
        run.html.display(),
        run.json.display()
    );
    Ok(())
}

/// `kairos report uplift`: reads, measures, shows the first skipped lines on stderr and
/// writes the report to `out` or stdout.
fn report_uplift(
    decisions: Vec<PathBuf>,
    events: Vec<PathBuf>,
    window: &str,
    outcomes: &str,
    json: bool,
    out: Option<PathBuf>,
    display: Display,
) -> Result<(), String> {
    use kairos::report::uplift::{parse_outcomes, parse_window, Conversion};
    let conversion = Conversion {
        window: parse_window(window).map_err(|e| format!("--window: {e}"))?,
        outcomes: parse_outcomes(outcomes).map_err(|e| format!("--outcomes: {e}"))?,
    };
    let reporter = Reporter::start("kairos report uplift", Unit::Bytes, display);
    let options = kairos::report::UpliftOptions {
        decisions,
        events,
        conversion,
        progress: reporter.progress(),
    };
    let run = kairos::report::uplift(&options);
    reporter.finish();
    let run = run?;
    for problem in &run.problems {
        eprintln!("kairos: {problem} (line skipped)");
    }
    let inputs = &run.report.inputs;
    let skipped = inputs.malformed_decision_lines + inputs.invalid_event_lines;
    if skipped > run.problems.len() as u64 {
        eprintln!(
            "kairos: … {} more line(s) skipped ({skipped} in all)",
            skipped - run.problems.len() as u64
        );
    }
    let text = if json {
        run.report.to_json()
    } else {
        run.report.to_markdown()
    };
    match out {
        Some(path) => {
            std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!(
                "kairos report uplift: {} decision(s), {} response(s) → {}",
                inputs.decisions,
                inputs.responses,
                path.display()
            );
            Ok(())
        }
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// `kairos report churn`'s arguments, as given.
struct ChurnArgs {
    events: Vec<PathBuf>,
    out: PathBuf,
    rules: PathBuf,
    at: Option<String>,
    horizon: String,
    top: String,
    retention_rules: Vec<String>,
    daily: bool,
    workers: usize,
}

fn report_churn(args: ChurnArgs, display: Display) -> Result<(), String> {
    use kairos::report::uplift::parse_window;
    let at = args
        .at
        .as_deref()
        .map(|t| {
            kairos_model::time::parse_rfc3339(t).map_err(|e| format!("--at {t:?}: {e} (give an RFC 3339 instant)"))
        })
        .transpose()?;
    let horizon = parse_window(&args.horizon).map_err(|e| format!("--horizon: {e}"))?;
    let tops = args
        .top
        .split(',')
        .map(|k| {
            k.trim()
                .parse::<u64>()
                .ok()
                .filter(|k| *k > 0)
                .ok_or_else(|| format!("--top {:?}: {k:?} is not a whole number above 0", args.top))
        })
        .collect::<Result<Vec<u64>, String>>()?;
    if args.workers == 0 {
        return Err("--workers must be at least 1".to_string());
    }
    let reporter = Reporter::start("kairos report churn", Unit::Bytes, display);
    let options = kairos::report::ChurnOptions {
        events: args.events,
        rules: args.rules,
        out: args.out,
        at,
        horizon,
        workers: args.workers,
        tops,
        retention_rules: (!args.retention_rules.is_empty()).then_some(args.retention_rules),
        daily: args.daily,
        households: kairos_dataflows::households::HouseholdConfig::default(),
        progress: reporter.progress(),
    };
    let run = kairos::report::churn(&options);
    reporter.finish();
    let run = run?;
    print!("{}", run.report.to_markdown());
    eprintln!(
        "kairos report churn: {} customers scored at {}, {} left within the horizon → {}, {}, {}, {}",
        run.report.base.scored,
        run.report.inputs.at,
        run.report.base.leavers,
        run.markdown.display(),
        run.json.display(),
        run.html.display(),
        run.scores.display()
    );
    Ok(())
}

/// The rules folder named by `flag`, or the default one ([`kairos::rules::default_dir`]),
/// saying so on stderr when it is not `./rules`.
fn rules_dir(given: Option<PathBuf>, flag: &'static str) -> Result<PathBuf, String> {
    if let Some(dir) = given {
        return Ok(dir);
    }
    let found = kairos::rules::default_dir(flag).map_err(|e| e.to_string())?;
    if found != std::path::Path::new(kairos::rules::DEFAULT_DIR) {
        eprintln!(
            "kairos: no {}/ folder here; using the rules shipped with kairos in {} ({flag} DIR to choose)",
            kairos::rules::DEFAULT_DIR,
            found.display()
        );
    }
    Ok(found)
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
