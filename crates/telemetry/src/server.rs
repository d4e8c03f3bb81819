//! `/metrics`, `/healthz` and `/readyz` over HTTP.
//!
//! - `/metrics`: the registry in the OpenMetrics text format (Prometheus scrapes it as such;
//!   counters show with their `_total` suffix).
//! - `/healthz`: `200 ok` while the process serves requests (liveness).
//! - `/readyz`: `200 ok` when the given check passes, else `503` with the reason.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

/// The readiness check: `Ok` when ready, else why not.
pub type ReadyCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The OpenMetrics text content type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
struct Shared {
    registry: Arc<Registry>,
    ready: ReadyCheck,
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<Shared>) -> impl IntoResponse {
    match (s.ready)() {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// The endpoints' router.
pub fn router(registry: Arc<Registry>, ready: ReadyCheck) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Shared { registry, ready })
}

/// Binds `addr` now (an error names `--metrics-address`) and returns the bound address and
/// the future that serves until dropped. The future never completes: a failure of the
/// server is logged, and the endpoints are then gone but the process goes on (metrics are
/// not worth stopping reboots for; the liveness probe restarts the pod).
pub async fn bind(
    addr: SocketAddr,
    registry: Arc<Registry>,
    ready: ReadyCheck,
) -> anyhow::Result<(SocketAddr, impl Future<Output = ()> + Send + 'static)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics-address: cannot listen on {addr}"))?;
    let local = listener.local_addr().context("--metrics-address")?;
    info!(address = %local, "serving /metrics, /healthz and /readyz");
    let app = router(registry, ready);
    let serve = async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "the metrics endpoint failed");
        }
        std::future::pending::<()>().await
    };
    Ok((local, serve))
}
