//! Observability shared by `update-operator` and `update-agent`:
//!
//! - [`MetricsAddress`]: the `--metrics-address` value (`HOST:PORT`, `:PORT`, or `''`/`off`);
//! - [`server`]: `/metrics` (OpenMetrics text), `/healthz` and `/readyz` over HTTP (axum);
//! - [`api`]: `fluo_api_errors_total{verb}`, counted by wrapping the `kube::Client`, which
//!   also tells whether the API server answers (the operator's readiness);
//! - [`events`]: Kubernetes Events as kube-runtime's `Recorder` writes them, best effort, from a
//!   bounded queue: writing an Event never blocks or fails the caller.
//!
//! Nothing here is global: every binary (and every in-process replica in tests) has its own
//! `prometheus_client` registry.

pub mod api;
pub mod events;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

pub use prometheus_client;

/// A binary's metrics registry and where it is served; each binary's `Metrics` derefs to it.
#[derive(Clone, Debug)]
pub struct Exposition {
    registry: std::sync::Arc<prometheus_client::registry::Registry>,
    listening: std::sync::Arc<std::sync::Mutex<Option<SocketAddr>>>,
}

impl Exposition {
    pub fn new(registry: prometheus_client::registry::Registry) -> Self {
        Exposition {
            registry: std::sync::Arc::new(registry),
            listening: Default::default(),
        }
    }

    /// The registry (what `/metrics` serves).
    pub fn registry(&self) -> std::sync::Arc<prometheus_client::registry::Registry> {
        self.registry.clone()
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }

    /// Where `/metrics` is served, once `--metrics-address` is bound.
    pub fn listening(&self) -> Option<SocketAddr> {
        *self.listening.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_listening(&self, a: SocketAddr) {
        *self.listening.lock().unwrap_or_else(|e| e.into_inner()) = Some(a);
    }
}

/// Logs to stderr, as text or as one JSON object a line (`--log-format json`); `RUST_LOG`
/// filters, default `info`.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// Where `/metrics`, `/healthz` and `/readyz` are served (`--metrics-address`); `None`:
/// disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddress(pub Option<SocketAddr>);

/// The default of both binaries, as `deploy/` passes it.
pub const DEFAULT_METRICS_ADDRESS: &str = "0.0.0.0:8080";

impl FromStr for MetricsAddress {
    type Err = String;

    /// `IP:PORT` (`0.0.0.0:8080`, `[::]:8080`), `localhost:PORT`, `:PORT` (all IPv4
    /// interfaces, as Go's `:8080`), or `''`/`off` to disable.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() || t.eq_ignore_ascii_case("off") {
            return Ok(MetricsAddress(None));
        }
        let bad = || {
            format!(
                "{s:?} is not an address to listen on: expected IP:PORT (e.g. 0.0.0.0:8080), \
                 :PORT, or '' or 'off' to disable"
            )
        };
        if let Ok(a) = t.parse::<SocketAddr>() {
            return Ok(MetricsAddress(Some(a)));
        }
        let (host, port) = t.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let ip = match host {
            "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            _ => return Err(bad()),
        };
        Ok(MetricsAddress(Some(SocketAddr::new(ip, port))))
    }
}

impl fmt::Display for MetricsAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("off"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_addresses() {
        let ok = |s: &str| s.parse::<MetricsAddress>().unwrap().0;
        assert_eq!(ok("0.0.0.0:8080"), Some("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(ok("[::]:9000"), Some("[::]:9000".parse().unwrap()));
        assert_eq!(ok(":8081"), Some("0.0.0.0:8081".parse().unwrap()));
        assert_eq!(ok("localhost:1"), Some("127.0.0.1:1".parse().unwrap()));
        assert_eq!(ok(""), None);
        assert_eq!(ok("off"), None);
        assert_eq!(ok(" OFF "), None);
        for bad in [
            "8080",
            "0.0.0.0",
            "host:8080",
            "0.0.0.0:http",
            "1.2.3.4:70000",
        ] {
            let e = bad.parse::<MetricsAddress>().unwrap_err();
            assert!(e.contains("IP:PORT"), "{bad}: {e}");
        }
        assert_eq!(MetricsAddress(None).to_string(), "off");
    }
}
