//! The dashboard and the alert rules against a real Prometheus (Debian's `prometheus`
//! package, installed by `scripts/setup`) scraping a live `kairos run` on the local broker:
//!
//! - `promtool check rules` and `promtool test rules` pass on `docker/prometheus/`;
//! - every metric the dashboard or an alert names is one `src/telemetry.rs` defines;
//! - every PromQL expression of every panel of `docker/grafana/dashboards/kairos.json`, and
//!   the measured side of every alert, returns at least one series once a generated world has
//!   streamed through the engine;
//! - `promtool check metrics` passes on what `/metrics` serves;
//! - `/healthz` answers, and `/readyz` turns ready, again after a `kill -9` and a restart.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    create_topics, free_port, http_get, input_topic, kafka_brokers, kafka_topics, root, start_engine, write_run_config,
    Engine,
};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The series an instant query returns (the `result` array), or the error Prometheus gave.
fn query(port: u16, promql: &str) -> Result<Vec<serde_json::Value>, String> {
    let (status, body) = http_get(port, &format!("/api/v1/query?query={}", percent_encode(promql)))
        .ok_or_else(|| "Prometheus did not answer".to_string())?;
    let value: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {e}: {body}"))?;
    if value["status"] != "success" {
        return Err(format!("HTTP {status}: {body}"));
    }
    Ok(value["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// Runs `promtool ARGS` in `dir` (with `input` on its standard input) and requires it to pass.
fn promtool_passes(args: &[&str], dir: &Path, input: Option<&Path>) {
    let stdin = match input {
        Some(path) => Stdio::from(std::fs::File::open(path).unwrap()),
        None => Stdio::null(),
    };
    let output = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(stdin)
        .output()
        .expect("promtool (Debian's prometheus package; scripts/setup installs it)");
    assert!(
        output.status.success(),
        "promtool {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every panel's expressions in the dashboard, with Grafana's `$__rate_interval` as 1m.
fn dashboard_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("docker/grafana/dashboards/kairos.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut found = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            found.push((
                panel["title"].as_str().unwrap_or("?").to_string(),
                expr.replace("$__rate_interval", "1m"),
            ));
        }
    }
    found
}

/// Every alert's expression, split into what it measures and its comparison with a
/// threshold (`<measured> <op> <number>`, as `alerts.yml` promises).
fn alert_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("docker/prometheus/alerts.yml")).unwrap();
    let mut found = Vec::new();
    let mut alert = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            alert = Some(name.to_string());
        } else if let Some(expr) = line.strip_prefix("expr: ") {
            let name = alert.take().expect("an expr follows its alert's name");
            let measured = [" == ", " > ", " < ", " >= ", " <= ", " != "]
                .iter()
                .filter_map(|op| expr.rfind(op).map(|at| &expr[..at]))
                .max_by_key(|m| m.len())
                .unwrap_or_else(|| panic!("alert {name}: `{expr}` is not `<measured> <op> <threshold>`"));
            found.push((name, measured.to_string()));
        }
    }
    assert!(found.len() >= 6, "the alerts were read: {found:?}");
    found
}

/// The `kairos_*` metric names an expression reads (histogram suffixes removed).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("kairos_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        names.push(base.to_string());
    }
    names
}

#[test]
fn alert_rules_check_and_fire_as_their_unit_tests_say() {
    let dir = root().join("docker/prometheus");
    promtool_passes(&["check", "rules", "alerts.yml"], &dir, None);
    promtool_passes(&["test", "rules", "alerts.test.yml"], &dir, None);
}

#[test]
fn every_metric_the_dashboard_and_the_alerts_name_is_defined_in_telemetry() {
    let telemetry = std::fs::read_to_string(root().join("src/telemetry.rs")).unwrap();
    let defined: BTreeSet<String> = telemetry
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split('"').nth(1))
        .map(str::to_string)
        .collect();
    let mut unknown = BTreeSet::new();
    let named: Vec<(String, String)> = dashboard_expressions().into_iter().chain(alert_expressions()).collect();
    for (where_, expr) in &named {
        for name in metric_names(expr) {
            if !defined.contains(&name) {
                unknown.insert(format!("{name} (in {where_})"));
            }
        }
    }
    assert!(unknown.is_empty(), "not defined in src/telemetry.rs: {unknown:?}");
    // And the check itself can fail: a made-up name is caught.
    assert_eq!(
        metric_names("rate(kairos_no_such_thing_bucket[1m])"),
        ["kairos_no_such_thing"]
    );
    assert!(!defined.contains("kairos_no_such_thing"));
}

/// A Prometheus server on loopback, stopped when dropped.
struct Prometheus(std::process::Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_prometheus(dir: &Path, port: u16, kairos_port: u16) -> Prometheus {
    let alerts = root().join("docker/prometheus/alerts.yml");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n  evaluation_interval: 2s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: kairos\n    static_configs:\n      - targets: [\"127.0.0.1:{kairos_port}\"]\n",
            alerts.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus (Debian's prometheus package; scripts/setup installs it)");
    let prometheus = Prometheus(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(port, "/-/ready").is_none_or(|(status, _)| status != 200) {
        assert!(
            Instant::now() < deadline,
            "Prometheus did not get ready on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    prometheus
}

/// Waits until `/readyz` says ready; returns every distinct answer it saw on the way, with
/// the milliseconds since `since`.
fn wait_ready(port: u16, since: Instant) -> Vec<(u128, String)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen: Vec<(u128, String)> = Vec::new();
    loop {
        let answer = match http_get(port, "/readyz") {
            None => "no answer".to_string(),
            Some((status, body)) => format!("{status} {}", body.trim()),
        };
        if seen.last().is_none_or(|(_, last)| *last != answer) {
            seen.push((since.elapsed().as_millis(), answer.clone()));
        }
        if answer.starts_with("200 ") {
            return seen;
        }
        assert!(Instant::now() < deadline, "never ready: {seen:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn produce(brokers: &str, topics: &std::collections::BTreeMap<&'static str, String>, lines: &[String]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("test producer");
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        let key = value["msisdn"].as_str().unwrap_or("").to_string();
        let mut record = BaseRecord::to(input_topic(topics, line)).key(&key).payload(line);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    record = returned;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flushed");
}

#[test]
fn every_panel_and_alert_returns_data_from_a_real_prometheus_scraping_a_live_engine() {
    let brokers = kafka_brokers();
    let topics = kafka_topics("prom");
    let names: Vec<&str> = topics.values().map(String::as_str).collect();
    create_topics(&brokers, &names, 2);
    let dir = tempfile::tempdir().unwrap();
    let kairos_port = free_port();
    let config = dir.path().join("kairos.toml");
    write_run_config(
        &config,
        &brokers,
        &topics,
        &dir.path().join("state"),
        "idle_after_ms = 500\n",
        "checkpoint_interval_ms = 1000\n",
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{kairos_port}\""),
    );
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("kairos.log");

    let started = Instant::now();
    let engine = start_engine(&config, &log);
    let first_start = wait_ready(kairos_port, started);
    println!("readiness at the first start (ms since spawn): {first_start:?}");
    assert_eq!(http_get(kairos_port, "/healthz").map(|(s, _)| s), Some(200));

    // A day of a small generated world: roaming arrivals, data packs, handsets, households,
    // policy suppressions and a share of invalid lines.
    let lines = common::world(400, 1, "2026-11-02", 7, 60, 0.3, 0.01);
    produce(&brokers, &topics, &lines);

    let prometheus_port = free_port();
    let prometheus = start_prometheus(dir.path(), prometheus_port, kairos_port);
    // Wait until the engine has acted, suppressed and checkpointed, then let Prometheus take
    // a few more scrapes so that every rate has two samples in its window.
    let wanted = [
        "kairos_sink_actions_total{",
        "kairos_policy_suppressed_total{",
        "kairos_sink_event_to_action_seconds_bucket{",
        "kairos_state_checkpoint_seconds_bucket{",
        "kairos_state_store_keys ",
    ];
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut metrics = String::new();
    while !wanted.iter().all(|w| metrics.contains(w)) {
        assert!(
            Instant::now() < deadline,
            "the engine never exported {:?}:\n{metrics}\nlog:\n{}",
            wanted.iter().filter(|w| !metrics.contains(**w)).collect::<Vec<_>>(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
        metrics = http_get(kairos_port, "/metrics").map(|(_, b)| b).unwrap_or_default();
    }
    let lint_input = dir.path().join("metrics.txt");
    std::fs::write(&lint_input, &metrics).unwrap();
    promtool_passes(&["check", "metrics"], dir.path(), Some(&lint_input));

    let checks: Vec<(String, String)> = dashboard_expressions()
        .into_iter()
        .map(|(panel, expr)| (format!("panel {panel:?}"), expr))
        .chain(
            alert_expressions()
                .into_iter()
                .map(|(alert, expr)| (format!("alert {alert}"), expr)),
        )
        .collect();
    // A rate needs two scrapes in its window, and a scrape on a loaded machine can time
    // out: ask again until every expression has data, or a minute has passed.
    let deadline = Instant::now() + Duration::from_secs(60);
    let empty = loop {
        let mut empty = Vec::new();
        let mut found = Vec::new();
        for (what, expr) in &checks {
            match query(prometheus_port, expr) {
                Ok(series) if !series.is_empty() => found.push(format!("{what}: {} series  {expr}", series.len())),
                Ok(_) => empty.push(format!("{what}: no series for `{expr}`")),
                Err(error) => empty.push(format!("{what}: `{expr}` failed: {error}")),
            }
        }
        if empty.is_empty() || Instant::now() > deadline {
            found.iter().for_each(|line| println!("{line}"));
            break empty;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        empty.is_empty(),
        "{} of {} expressions returned nothing:\n{}",
        empty.len(),
        checks.len(),
        empty.join("\n")
    );
    // No alert fires on this healthy engine.
    let firing = query(prometheus_port, "ALERTS{alertstate=\"firing\"}").unwrap();
    assert!(firing.is_empty(), "alerts firing on a healthy engine: {firing:?}");

    // kill -9 and a restart: /readyz says not ready until the state is restored, the outputs
    // read back and every partition assigned, then ready again.
    drop(engine);
    let restarted = Instant::now();
    let _engine: Engine = start_engine(&config, &log);
    let second_start = wait_ready(kairos_port, restarted);
    println!("readiness after kill -9 and restart (ms since spawn): {second_start:?}");
    let ready: serde_json::Value =
        serde_json::from_str(second_start.last().unwrap().1.trim_start_matches("200 ")).unwrap();
    assert_eq!(ready["state_restored"], true);
    assert_eq!(ready["outputs_recalled"], true);
    assert_eq!(ready["workers_assigned"], 2);
    let metrics = http_get(kairos_port, "/metrics").unwrap().1;
    let restored = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kairos_state_restored_subscribers "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(restored > 0.0, "the restart restored the state: {metrics}");
    drop(prometheus);
}
