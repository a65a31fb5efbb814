//! config: the `kairos run` configuration file (TOML), every field documented with its
//! default. Unknown keys are errors, reported with the file, line and column.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole configuration of `kairos run`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Where events come from and actions go.
    pub kafka: KafkaConfig,
    /// Output topic names.
    #[serde(default)]
    pub topics: OutputTopics,
    /// The engine itself.
    #[serde(default)]
    pub engine: EngineConfig,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The durable state.
    #[serde(default)]
    pub state: StateConfig,
    /// How households are found (see `kairos.example.toml`).
    #[serde(default)]
    pub households: kairos_dataflows::households::HouseholdConfig,
}

/// Where and how often the state is made durable.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// The RocksDB folder (created if missing). Default `state`. One engine per folder.
    pub dir: PathBuf,
    /// How often a checkpoint is taken, at most (wall clock). Default 1000 ms: after a crash,
    /// at most about this much input is read and decided again (outputs are not repeated).
    pub checkpoint_interval_ms: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: PathBuf::from("state"),
            checkpoint_interval_ms: 1000,
        }
    }
}

/// Kafka connection and input topics.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`, e.g. `"127.0.0.1:19092"`.
    pub brokers: String,
    /// Topics to read; any of them may carry any event type. Default: the contract's six.
    #[serde(default = "default_input_topics")]
    pub input_topics: Vec<String>,
    /// Where to start reading a partition: `earliest` (default) or `latest`.
    #[serde(default)]
    pub start_from: StartFrom,
    /// librdkafka's `group.id`. Partitions are assigned, not subscribed, and nothing is
    /// committed; the id only names the client to the brokers. Default `kairos`.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// How long the producer keeps trying to deliver an output record (librdkafka's
    /// `message.timeout.ms`) before the engine counts it as failed: then no checkpoint is
    /// written, and the engine restarts from the last one, which re-decides and re-produces
    /// what was not delivered (see `pipeline/run.rs`). Default 60,000 (librdkafka's own is
    /// 300,000): it rides out a broker's restart or a leader election without a restart,
    /// and reports a lost ACL or a deleted topic within a minute instead of five; an outage
    /// longer than this costs a restart, never an action.
    #[serde(default = "default_delivery_timeout_ms")]
    pub delivery_timeout_ms: u64,
    /// Extra librdkafka properties for every client (e.g. `"security.protocol" = "SSL"`).
    #[serde(default)]
    pub client: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// The settings of every Kafka client of the engine — the ingest consumers, the sink's
    /// producer and its read-back consumer, the rules topic's clients: the brokers, a client
    /// id, the engine's `settings` for that client, then every `[kafka.client]` property
    /// (security, SASL, TLS, timeouts), which wins over the engine's.
    pub fn client_config(&self, client_id: &str, settings: &[(&str, &str)]) -> rdkafka::config::ClientConfig {
        let mut config = rdkafka::config::ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id);
        for (key, value) in settings {
            config.set(*key, *value);
        }
        for (key, value) in &self.client {
            config.set(key, value);
        }
        config
    }
}

/// Where a partition is first read from.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    #[default]
    Earliest,
    Latest,
}

impl StartFrom {
    /// librdkafka's `auto.offset.reset` value.
    pub fn as_reset(self) -> &'static str {
        match self {
            StartFrom::Earliest => "earliest",
            StartFrom::Latest => "latest",
        }
    }
}

/// Output topic names (contract §1).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputTopics {
    pub actions_sms: String,
    pub actions_email: String,
    pub actions_push: String,
    pub decisions: String,
    pub dead_letter: String,
}

impl Default for OutputTopics {
    fn default() -> Self {
        OutputTopics {
            actions_sms: "kairos.actions.sms".into(),
            actions_email: "kairos.actions.email".into(),
            actions_push: "kairos.actions.push".into(),
            decisions: "kairos.decisions".into(),
            dead_letter: "kairos.dead-letter".into(),
        }
    }
}

/// The engine's settings, shared by `run` and `replay`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Timely worker threads. Default 2.
    pub workers: usize,
    /// The rules folder. Default `rules` (relative to the working directory).
    pub rules: PathBuf,
    /// How far behind the newest event of a partition an event may be and still take its
    /// place in event-time order; older ones are applied at the frontier and counted as
    /// late. Default 0: partitions are ordered by the producers, keyed by subscriber.
    pub allowed_lateness_ms: u64,
    /// How long a caught-up partition must be quiet before it stops holding the frontier.
    /// Default 100 ms: the latency of the last events before a pause.
    pub idle_after_ms: u64,
    /// An event stamped more than this after the engine's wall clock cannot be true yet: it
    /// is a dead letter, and event time never moves past wall clock + `max_future_ms`
    /// because of it (contract §5.1). Default 3,600,000 (1 h): more than any clock drift of
    /// a network element, far less than the weeks a wrong year would jump.
    pub max_future_ms: u64,
    /// At most this many events read and not yet decided (waiting for the frontier to pass
    /// them), per process: at the bound, a worker stops reading the partitions that run ahead
    /// of the frontier and reads only those holding it back, until the waiting events drain.
    /// Default 2,000,000: minutes of a large operator's input, yet a bound.
    pub max_waiting_events: u64,
    /// How often the rules folder is looked at for changes; 0 turns live rule changes off.
    /// Default 250 ms: a saved change is in force within about half a second.
    pub rules_poll_ms: u64,
    /// A compacted topic of rule sets published with `kairos rules publish` (several
    /// processes that must switch at one event time follow it). When set, the newest
    /// published set is in force from start (the folder only when none was published yet),
    /// and the folder is not watched. Default: none.
    pub rules_topic: Option<String>,
    /// A number with no customer record (an inbound roamer, a number seen only in usage or
    /// signalling) has its state forgotten this long after the last event about it (event
    /// time); 0 keeps such states for ever. Default 2,592,000,000 (30 days). `kairos replay
    /// --forget-non-customers-after-ms` must be given the same to decide the same.
    pub forget_non_customers_after_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: 2,
            rules: PathBuf::from("rules"),
            allowed_lateness_ms: 0,
            idle_after_ms: 100,
            max_future_ms: crate::decode::Horizon::DEFAULT_MAX_FUTURE,
            max_waiting_events: 2_000_000,
            rules_poll_ms: 250,
            rules_topic: None,
            forget_non_customers_after_ms: kairos_dataflows::Retention::DEFAULT_FORGET_AFTER,
        }
    }
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address to serve `/metrics` on. Default `127.0.0.1:9898`.
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9898)),
        }
    }
}

fn default_input_topics() -> Vec<String> {
    [
        "kairos.customers",
        "kairos.network",
        "kairos.usage",
        "kairos.selfcare",
        "kairos.topups",
        "kairos.responses",
    ]
    .map(String::from)
    .to_vec()
}

fn default_delivery_timeout_ms() -> u64 {
    60_000
}

fn default_group_id() -> String {
    "kairos".into()
}

/// Why a configuration file cannot be used: what, and where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{col}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

/// Parses TOML `text` of the file `path`, with the line and column of a problem.
fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let before = &text[..e.span().map_or(0, |span| span.start.min(text.len()))];
        ConfigError::Syntax {
            path: path.to_path_buf(),
            line: before.matches('\n').count() + 1,
            col: before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1,
            message: e.message().trim().to_string(),
        }
    })
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(path: &Path) -> impl FnOnce(String) -> ConfigError + '_ {
    move |problem| ConfigError::Invalid {
        path: path.to_path_buf(),
        problem,
    }
}

impl RunConfig {
    /// Reads and checks a configuration file; errors say `file:line:col: what`.
    pub fn load(path: &Path) -> Result<RunConfig, ConfigError> {
        RunConfig::from_toml(path, &read(path)?)
    }

    /// [`RunConfig::load`] of the text of the file `path`.
    pub fn from_toml(path: &Path, text: &str) -> Result<RunConfig, ConfigError> {
        let config: RunConfig = parse(path, text)?;
        config.check().map_err(invalid(path))?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        check_households(&self.households)?;
        if self.engine.workers == 0 || self.engine.workers > 256 {
            return Err(format!(
                "engine.workers = {} — use 1 to 256 worker threads",
                self.engine.workers
            ));
        }
        if self.kafka.input_topics.is_empty() {
            return Err("kafka.input_topics is empty — list at least one topic to read".into());
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err("kafka.brokers is empty — give host:port of at least one broker".into());
        }
        Ok(())
    }
}

/// The `[households]` table of a TOML file (defaults for what it leaves out), with the
/// file's name and the line and column of a problem.
pub fn load_households(path: &Path) -> Result<kairos_dataflows::households::HouseholdConfig, ConfigError> {
    #[derive(Deserialize)]
    struct OnlyHouseholds {
        #[serde(default)]
        households: kairos_dataflows::households::HouseholdConfig,
    }
    let parsed: OnlyHouseholds = parse(path, &read(path)?)?;
    check_households(&parsed.households).map_err(invalid(path))?;
    Ok(parsed.households)
}

fn check_households(h: &kairos_dataflows::households::HouseholdConfig) -> Result<(), String> {
    if h.window_days == 0 || h.window_days > 366 {
        return Err(format!(
            "households.window_days = {} — use 1 to 366 days",
            h.window_days
        ));
    }
    if h.granularity_ms == 0 || 86_400_000 % h.granularity_ms != 0 {
        return Err(format!(
            "households.granularity_ms = {} — use a divisor of a day (e.g. 60000)",
            h.granularity_ms
        ));
    }
    if h.max_household < 2 || h.max_household > 1_000 {
        return Err(format!(
            "households.max_household = {} — use 2 to 1000 members",
            h.max_household
        ));
    }
    if h.evening_hours.0 > 24 || h.evening_hours.1 > 24 {
        return Err("households.evening_hours — hours from 0 to 24, e.g. [18, 23]".into());
    }
    if h.night_hours.0 > 24 || h.night_hours.1 > 24 {
        return Err("households.night_hours — hours from 0 to 24, e.g. [0, 6]".into());
    }
    if h.contact_min_days == 0 || u64::from(h.contact_min_days) > h.window_days + 1 {
        return Err(format!(
            "households.contact_min_days = {} — use 1 to window_days + 1 ({})",
            h.contact_min_days,
            h.window_days + 1
        ));
    }
    if h.contact_min_share_percent > 100 {
        return Err(format!(
            "households.contact_min_share_percent = {} — a share from 0 to 100",
            h.contact_min_share_percent
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let config: RunConfig = toml::from_str("[kafka]\nbrokers = \"127.0.0.1:19092\"\n").unwrap();
        assert_eq!(config.kafka.input_topics.len(), 6);
        assert_eq!(config.kafka.start_from, StartFrom::Earliest);
        assert_eq!(config.topics.actions_sms, "kairos.actions.sms");
        assert_eq!(config.engine.workers, 2);
        assert_eq!(config.metrics.listen.port(), 9898);
    }

    #[test]
    fn shipped_configs_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let example = RunConfig::load(&root.join("kairos.example.toml")).unwrap();
        assert_eq!(
            example,
            toml::from_str("[kafka]\nbrokers = \"127.0.0.1:19092\"\n").unwrap(),
            "the example shows the defaults"
        );
        let docker = RunConfig::load(&root.join("docker/kairos.toml")).unwrap();
        assert_eq!(docker.kafka.brokers, "kafka:9092");
    }

    #[test]
    fn unknown_keys_and_bad_values_say_where() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(&path, "[kafka]\nbrokers = \"x:1\"\n[engine]\nworkrs = 2\n").unwrap();
        let e = RunConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("k.toml:4:1: unknown field `workrs`"), "{e}");
        std::fs::write(&path, "[kafka]\nbrokers = \"x:1\"\n[engine]\nworkers = 0\n").unwrap();
        let e = RunConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("engine.workers = 0"), "{e}");
    }
}
