//! admin: the operator's HTTP endpoint of `kairos run` — `/metrics` for Prometheus, `/healthz`
//! (the process answers) and `/readyz` (it is processing: state restored, outputs read back,
//! every worker's partitions assigned, not stopping) — on `[metrics] listen`, on a thread
//! of its own so that a busy worker never delays a scrape or a probe.
//!
//! Readiness is what an orchestrator routes traffic and restarts by: a restart is not ready
//! until the state is loaded and the sink has read back what the previous run produced,
//! and a stopping engine says so before its final checkpoint, so that it is not counted as
//! healthy capacity while it drains.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

/// How often the recorder's histograms are drained into their buckets between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Why the admin endpoint could not be served.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot serve /metrics on {listen}: {source} (is another kairos running? change [metrics] listen)")]
    Bind { listen: SocketAddr, source: std::io::Error },
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(String),
    #[error("cannot start the admin thread: {0}")]
    Thread(std::io::Error),
}

/// Where the engine is in starting and stopping, as `/readyz` reports it.
#[derive(Debug, Default)]
pub struct Health {
    workers: usize,
    restored: AtomicBool,
    recalled: AtomicBool,
    assigned: AtomicUsize,
    stopping: AtomicBool,
    /// Why the engine restarted from its last checkpoint, while it is doing so.
    restarting: std::sync::Mutex<Option<String>>,
}

/// The body of `/readyz`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// The state store is open and the last checkpoint loaded.
    pub state_restored: bool,
    /// The sink has read back what a previous run produced since that checkpoint.
    pub outputs_recalled: bool,
    /// Workers whose input partitions are assigned, of `workers`.
    pub workers_assigned: usize,
    pub workers: usize,
    /// A stop was asked for: the engine is writing its final checkpoint.
    pub stopping: bool,
    /// Why the engine is restarting from its last checkpoint (until it is ready again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarting: Option<String>,
}

impl Health {
    /// The health of an engine of `workers` workers that has just started.
    pub fn new(workers: usize) -> Health {
        Health {
            workers,
            ..Health::default()
        }
    }

    pub fn set_restored(&self) {
        self.restored.store(true, Ordering::SeqCst);
    }

    pub fn set_recalled(&self) {
        self.recalled.store(true, Ordering::SeqCst);
    }

    /// One more worker owns its partitions.
    pub fn set_assigned(&self) {
        if self.assigned.fetch_add(1, Ordering::SeqCst) + 1 >= self.workers {
            // Every worker owns its partitions again: the restart is over.
            *self.restarting.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// The engine starts again from its last checkpoint (within the process), because of
    /// `reason`: nothing is restored, recalled or assigned until it says so again.
    pub fn set_restarting(&self, reason: &str) {
        self.restored.store(false, Ordering::SeqCst);
        self.recalled.store(false, Ordering::SeqCst);
        self.assigned.store(0, Ordering::SeqCst);
        *self.restarting.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
    }

    /// What `/readyz` says now.
    pub fn readiness(&self) -> Readiness {
        let state_restored = self.restored.load(Ordering::SeqCst);
        let outputs_recalled = self.recalled.load(Ordering::SeqCst);
        let workers_assigned = self.assigned.load(Ordering::SeqCst);
        let stopping = self.stopping.load(Ordering::SeqCst);
        Readiness {
            ready: state_restored && outputs_recalled && workers_assigned >= self.workers && !stopping,
            restarting: self.restarting.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            state_restored,
            outputs_recalled,
            workers_assigned,
            workers: self.workers,
            stopping,
        }
    }
}

#[derive(Clone)]
struct Served {
    metrics: PrometheusHandle,
    health: Arc<Health>,
}

/// The admin routes.
fn router(metrics: PrometheusHandle, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Served { metrics, health })
}

async fn metrics_page(State(served): State<Served>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        served.metrics.render(),
    )
}

async fn readyz(State(served): State<Served>) -> impl IntoResponse {
    let readiness = served.health.readiness();
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(readiness))
}

/// Installs the metrics recorder (`recorder`) and serves the admin routes on `listen` from a
/// thread of its own; the port is bound before this returns, so a taken port is an error
/// at start, not a log line later.
pub fn serve(
    listen: SocketAddr,
    recorder: metrics_exporter_prometheus::PrometheusBuilder,
    health: Arc<Health>,
) -> Result<(), AdminError> {
    let listener = std::net::TcpListener::bind(listen).map_err(|source| AdminError::Bind { listen, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| AdminError::Bind { listen, source })?;
    let handle = recorder
        .install_recorder()
        .map_err(|e| AdminError::Recorder(e.to_string()))?;
    let app = router(handle.clone(), health);
    std::thread::Builder::new()
        .name("kairos-admin".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, "cannot start the admin endpoint's runtime");
                    return;
                }
            };
            runtime.block_on(async move {
                let upkeep = handle.clone();
                tokio::spawn(async move {
                    let mut every = tokio::time::interval(UPKEEP_EVERY);
                    loop {
                        every.tick().await;
                        upkeep.run_upkeep();
                    }
                });
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(error) => {
                        tracing::error!(%error, "cannot serve the admin endpoint");
                        return;
                    }
                };
                if let Err(error) = axum::serve(listener, app).await {
                    tracing::error!(%error, "the admin endpoint stopped");
                }
            });
        })
        .map_err(AdminError::Thread)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_once_restored_recalled_and_every_worker_assigned_and_not_when_stopping() {
        let health = Health::new(2);
        assert!(!health.readiness().ready);
        health.set_restored();
        health.set_recalled();
        health.set_assigned();
        assert!(!health.readiness().ready, "one worker of two assigned");
        health.set_assigned();
        assert_eq!(
            health.readiness(),
            Readiness {
                ready: true,
                state_restored: true,
                outputs_recalled: true,
                workers_assigned: 2,
                workers: 2,
                stopping: false,
                restarting: None,
            }
        );
        health.set_stopping();
        let stopping = health.readiness();
        assert!(!stopping.ready && stopping.stopping);
    }

    #[test]
    fn a_restart_is_not_ready_until_restored_recalled_and_assigned_again() {
        let health = Health::new(1);
        health.set_restored();
        health.set_recalled();
        health.set_assigned();
        assert!(health.readiness().ready);
        health.set_restarting("a record was not delivered");
        let restarting = health.readiness();
        assert!(!restarting.ready);
        assert_eq!(restarting.workers_assigned, 0);
        assert_eq!(restarting.restarting.as_deref(), Some("a record was not delivered"));
        health.set_restored();
        health.set_recalled();
        health.set_assigned();
        let again = health.readiness();
        assert!(again.ready);
        assert_eq!(again.restarting, None);
    }

    #[test]
    fn not_ready_before_the_outputs_are_read_back() {
        let health = Health::new(1);
        health.set_restored();
        health.set_assigned();
        assert!(!health.readiness().ready);
    }
}
