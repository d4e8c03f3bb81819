//! `--prometheus-url`: active Prometheus alerts block every new grant (cluster-wide
//! [`protocol::operator::ClusterInputs::blockers`]), with kured's flags and meaning:
//! `--alert-filter-regexp` names alerts to IGNORE (`--alert-filter-match-only` inverts it:
//! only matching alerts block), and pending alerts block too unless `--alert-firing-only`.
//!
//! While it leads, the operator queries Prometheus for `ALERTS` (as kured, so anything
//! with Prometheus's query API works: Thanos, Mimir, VictoriaMetrics) every
//! `--alert-check-interval`. With `--alertmanager-url`, alerts Alertmanager reports as
//! silenced (`GET /api/v2/alerts`, `status.silencedBy` non-empty, labels a superset of the
//! Prometheus alert's: Alertmanager adds the external labels) do not block.
//!
//! Fail safe: a Prometheus that does not answer, or answers nonsense, blocks with a blocker
//! naming the URL and the error. An Alertmanager that does not answer only means silences
//! are not applied (its error is shown next to the alerts it would have been asked about).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::notify::{HttpClient, http_client, parse_http_url};

/// The flag's name.
pub const PROMETHEUS_URL_FLAG: &str = "--prometheus-url";

/// What the blockers say before the first answer (no decision is made on it: the leader
/// waits for the first check, see [`wait_until_ready`]).
const NOT_CHECKED: &str = "Prometheus alerts not checked yet";

/// Largest answer read (a big Prometheus has a few thousand alerts, a few MB).
const MAX_BODY: usize = 32 << 20;

/// `--alert-filter-regexp`: compared by its source text (a [`regex::Regex`] is not `Eq`).
#[derive(Debug, Clone)]
pub struct AlertFilter(pub regex::Regex);

impl PartialEq for AlertFilter {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for AlertFilter {}

/// Where and how to check alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertsConfig {
    /// `--prometheus-url`: Prometheus's base URL (a path prefix is kept).
    pub prometheus_url: Uri,
    /// `--alertmanager-url`: Alertmanager's base URL, for silences.
    pub alertmanager_url: Option<Uri>,
    /// `--alert-filter-regexp` (unanchored, as Go's `MatchString`).
    pub filter: Option<AlertFilter>,
    /// `--alert-filter-match-only`: the filter selects the alerts that block instead.
    pub filter_match_only: bool,
    /// `--alert-firing-only`: pending alerts do not block.
    pub firing_only: bool,
    /// `--alert-check-interval`.
    pub interval: Duration,
    /// Longest time one request may take.
    pub timeout: Duration,
}

/// An http(s) base URL without credentials, query or fragment (paths are appended to it).
pub fn parse_base_url(url: &str) -> Result<Uri, String> {
    let uri = parse_http_url(url)?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!(
            "invalid URL {url:?}: credentials in the URL are not supported"
        ));
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(format!(
            "invalid URL {url:?}: must not have a query or fragment (give the base URL, e.g. http://prometheus.monitoring:9090)"
        ));
    }
    Ok(uri)
}

impl AlertsConfig {
    /// Defaults for `prometheus_url`: no Alertmanager, no filter, pending alerts block,
    /// every 30 s, 10 s per request. The error says what is wrong with the URL.
    pub fn new(prometheus_url: &str) -> Result<Self, String> {
        Ok(AlertsConfig {
            prometheus_url: parse_base_url(prometheus_url)?,
            alertmanager_url: None,
            filter: None,
            filter_match_only: false,
            firing_only: false,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        })
    }

    /// Whether an alert of this name and state may block (filter and state only).
    fn considered(&self, name: &str, state: &str) -> bool {
        let matched = self.filter.as_ref().map(|f| f.0.is_match(name));
        let by_name = match matched {
            None => true,
            Some(m) => m == self.filter_match_only,
        };
        let by_state = match state {
            "firing" => true,
            "pending" => !self.firing_only,
            _ => false,
        };
        by_name && by_state
    }
}

impl fmt::Display for AlertsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.prometheus_url)?;
        if let Some(am) = &self.alertmanager_url {
            write!(f, " (silences from {am})")?;
        }
        if let Some(re) = &self.filter {
            let how = if self.filter_match_only {
                "only"
            } else {
                "ignoring"
            };
            write!(f, ", {how} alerts matching {:?}", re.0.as_str())?;
        }
        if self.firing_only {
            write!(f, ", firing only")?;
        }
        Ok(())
    }
}

/// One active alert (a sample of Prometheus's `ALERTS` series).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromAlert {
    /// Its labels (`alertname` among them; no external labels).
    pub labels: BTreeMap<String, String>,
    /// `pending` or `firing`.
    pub state: String,
}

#[derive(Deserialize)]
struct PromAnswer {
    status: String,
    #[serde(default)]
    data: Option<PromData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct PromData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<PromSample>,
}

#[derive(Deserialize)]
struct PromSample {
    metric: BTreeMap<String, String>,
    /// `[time, "value"]`.
    value: (serde_json::Value, String),
}

#[derive(Deserialize)]
struct AmAlert {
    labels: BTreeMap<String, String>,
    status: AmStatus,
}

#[derive(Deserialize)]
struct AmStatus {
    #[serde(rename = "silencedBy", default)]
    silenced_by: Vec<String>,
}

/// The blockers for `alerts`: one per alert name, `Prometheus alert NAME is firing` (or
/// `pending` if no instance fires), sorted. An instance whose labels are all among the
/// labels of one of `silenced` (Alertmanager's silenced alerts) does not count.
pub fn blockers(
    cfg: &AlertsConfig,
    alerts: &[PromAlert],
    silenced: &[BTreeMap<String, String>],
) -> Vec<String> {
    let mut firing: BTreeMap<&str, bool> = BTreeMap::new();
    for a in alerts {
        let name = a.labels.get("alertname").map_or("", String::as_str);
        if !cfg.considered(name, &a.state) {
            continue;
        }
        let is_silenced = silenced
            .iter()
            .any(|s| a.labels.iter().all(|(k, v)| s.get(k) == Some(v)));
        if is_silenced {
            continue;
        }
        *firing.entry(name).or_default() |= a.state == "firing";
    }
    firing
        .into_iter()
        .map(|(name, f)| {
            let state = if f { "firing" } else { "pending" };
            format!("Prometheus alert {name} is {state}")
        })
        .collect()
}

/// `base` with `path_and_query` appended to its path.
fn join(base: &Uri, path_and_query: &str) -> Result<Uri, String> {
    let b = base.to_string();
    let b = b.trim_end_matches('/');
    format!("{b}{path_and_query}")
        .parse()
        .map_err(|e| format!("cannot build the URL: {e}"))
}

/// An error with its causes ("client error (Connect): tcp connect error: Connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

async fn get_json<T: DeserializeOwned>(
    client: &HttpClient,
    uri: Uri,
    timeout: Duration,
) -> Result<T, String> {
    let req = Request::get(uri)
        .header(header::ACCEPT, "application/json")
        .header(
            header::USER_AGENT,
            concat!("update-operator/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let answer = async {
        let resp = client.request(req).await.map_err(|e| chain(&e))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout, answer)
        .await
        .map_err(|_| format!("no answer within {}s", timeout.as_secs_f64()))??;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        let text: String = text.trim().chars().take(200).collect();
        return Err(format!("answered {status}: {text}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("unexpected answer: {e}"))
}

/// Prometheus's active (pending and firing) alerts: the query `ALERTS` now.
async fn prometheus_alerts(
    client: &HttpClient,
    cfg: &AlertsConfig,
) -> Result<Vec<PromAlert>, String> {
    let uri = join(&cfg.prometheus_url, "/api/v1/query?query=ALERTS")?;
    let a: PromAnswer = get_json(client, uri, cfg.timeout).await?;
    let d = match (a.status.as_str(), a.data) {
        ("success", Some(d)) => d,
        (status, _) => {
            return Err(format!(
                "answered status {status:?}: {}",
                a.error.unwrap_or_default()
            ));
        }
    };
    if d.result_type != "vector" {
        return Err(format!(
            "answered a {:?} to the query ALERTS, not a vector",
            d.result_type
        ));
    }
    Ok(d.result
        .into_iter()
        .filter(|s| s.value.1.parse::<f64>().is_ok_and(|v| v != 0.0))
        .map(|mut s| {
            s.metric.remove("__name__");
            let state = s.metric.remove("alertstate").unwrap_or_default();
            PromAlert {
                labels: s.metric,
                state,
            }
        })
        .collect())
}

/// The labels of the alerts Alertmanager at `url` holds silenced.
async fn silenced_alerts(
    client: &HttpClient,
    url: &Uri,
    timeout: Duration,
) -> Result<Vec<BTreeMap<String, String>>, String> {
    // Silenced alerts are `suppressed`, never `active`; inhibited ones are filtered below.
    let uri = join(url, "/api/v2/alerts?active=false&unprocessed=false")?;
    let alerts: Vec<AmAlert> = get_json(client, uri, timeout).await?;
    Ok(alerts
        .into_iter()
        .filter(|a| !a.status.silenced_by.is_empty())
        .map(|a| a.labels)
        .collect())
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checked {
    /// The blockers (empty: nothing blocks).
    pub blockers: Vec<String>,
    /// Why Prometheus or Alertmanager could not be asked (also among the blockers).
    pub problem: Option<String>,
}

/// One check as the leader makes it, with a client of its own.
pub async fn check_once(cfg: &AlertsConfig) -> Checked {
    check(&http_client(PROMETHEUS_URL_FLAG), cfg).await
}

/// One check of Prometheus (and Alertmanager if there are alerts to look up).
async fn check(client: &HttpClient, cfg: &AlertsConfig) -> Checked {
    let alerts = match prometheus_alerts(client, cfg).await {
        Ok(a) => a,
        Err(e) => {
            let b = format!(
                "Prometheus at {} cannot be asked for alerts ({e}); no new reboots until it answers",
                cfg.prometheus_url
            );
            return Checked {
                blockers: vec![b.clone()],
                problem: Some(b),
            };
        }
    };
    let mut out = Checked {
        blockers: blockers(cfg, &alerts, &[]),
        problem: None,
    };
    if let (Some(am), false) = (&cfg.alertmanager_url, out.blockers.is_empty()) {
        match silenced_alerts(client, am, cfg.timeout).await {
            Ok(silenced) => out.blockers = blockers(cfg, &alerts, &silenced),
            Err(e) => {
                let p = format!("silences not applied: Alertmanager at {am} cannot be asked ({e})");
                out.blockers.push(p.clone());
                out.problem = Some(p);
            }
        }
    }
    out
}

/// Checks every `cfg.interval` until the task is aborted: the receiver holds `None` until
/// the first check, then its blockers; `changed` is notified when they change.
pub(crate) fn spawn(
    cfg: AlertsConfig,
    changed: Arc<Notify>,
) -> (
    watch::Receiver<Option<Vec<String>>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(async move {
        let client = http_client(PROMETHEUS_URL_FLAG);
        let mut last: Option<Checked> = None;
        loop {
            let now = check(&client, &cfg).await;
            if last.as_ref() != Some(&now) {
                match (&now.problem, now.blockers.is_empty()) {
                    (Some(p), _) => {
                        warn!(problem = %p, blockers = ?now.blockers, "asking Prometheus or Alertmanager failed; new reboots are blocked (fail safe)")
                    }
                    (None, true) => {
                        info!(prometheus = %cfg.prometheus_url, "no Prometheus alerts block reboots")
                    }
                    (None, false) => {
                        info!(blockers = ?now.blockers, "Prometheus alerts block new reboots")
                    }
                }
                let blockers = now.blockers.clone();
                last = Some(now);
                let modified = tx.send_if_modified(|cur| {
                    let m = cur.as_ref() != Some(&blockers);
                    *cur = Some(blockers);
                    m
                });
                if modified {
                    changed.notify_one();
                }
            }
            tokio::time::sleep(cfg.interval).await;
        }
    });
    (rx, task)
}

/// The blockers of the last check (a "not checked yet" blocker before the first).
pub(crate) fn current(rx: &watch::Receiver<Option<Vec<String>>>) -> Vec<String> {
    rx.borrow()
        .clone()
        .unwrap_or_else(|| vec![NOT_CHECKED.to_string()])
}

/// Waits for the first check.
pub(crate) async fn wait_until_ready(
    rx: &watch::Receiver<Option<Vec<String>>>,
) -> anyhow::Result<()> {
    rx.clone()
        .wait_for(Option::is_some)
        .await
        .map(|_| ())
        .map_err(|_| anyhow::anyhow!("the Prometheus alert check stopped"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(name: &str, state: &str, extra: &[(&str, &str)]) -> PromAlert {
        let mut labels: BTreeMap<String, String> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.insert("alertname".into(), name.into());
        PromAlert {
            labels,
            state: state.into(),
        }
    }

    fn cfg(filter: Option<&str>, match_only: bool, firing_only: bool) -> AlertsConfig {
        let mut c = AlertsConfig::new("http://prometheus:9090").unwrap();
        c.filter = filter.map(|f| AlertFilter(regex::Regex::new(f).unwrap()));
        c.filter_match_only = match_only;
        c.firing_only = firing_only;
        c
    }

    #[test]
    fn filter_and_state_as_kured() {
        let alerts = [
            alert("NodeDown", "firing", &[("instance", "a")]),
            alert("NodeDown", "pending", &[("instance", "b")]),
            alert("DiskSlow", "pending", &[]),
            alert("RebootRequired", "firing", &[]),
            alert("Odd", "inactive", &[]),
        ];
        assert_eq!(
            blockers(&cfg(None, false, false), &alerts, &[]),
            [
                "Prometheus alert DiskSlow is pending",
                "Prometheus alert NodeDown is firing",
                "Prometheus alert RebootRequired is firing",
            ]
        );
        // The regexp names alerts to ignore; unanchored, as Go's MatchString.
        assert_eq!(
            blockers(&cfg(Some("Reboot|Slow"), false, true), &alerts, &[]),
            ["Prometheus alert NodeDown is firing"]
        );
        assert_eq!(
            blockers(&cfg(Some("^Reboot"), true, false), &alerts, &[]),
            ["Prometheus alert RebootRequired is firing"]
        );
    }

    #[test]
    fn an_instance_is_silenced_by_a_superset_of_its_labels() {
        let alerts = [
            alert("NodeDown", "firing", &[("instance", "a")]),
            alert("NodeDown", "firing", &[("instance", "b")]),
        ];
        let am = |inst: &str| -> BTreeMap<String, String> {
            [
                ("alertname", "NodeDown"),
                ("instance", inst),
                ("cluster", "prod"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
        };
        let c = cfg(None, false, false);
        assert_eq!(
            blockers(&c, &alerts, &[am("a")]),
            ["Prometheus alert NodeDown is firing"]
        );
        assert!(blockers(&c, &alerts, &[am("a"), am("b")]).is_empty());
    }

    #[test]
    fn base_urls() {
        for good in [
            "http://127.0.0.1:9090",
            "https://prom.example.com/prometheus/",
        ] {
            assert!(parse_base_url(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "prometheus:9090",
            "ftp://x",
            "http://user:pw@prom:9090",
            "http://prom:9090/?x=1",
            "http://prom:9090/#top",
        ] {
            assert!(parse_base_url(bad).is_err(), "{bad}");
        }
        let u = parse_base_url("http://prom:9090/prefix/").unwrap();
        assert_eq!(
            join(&u, "/api/v1/query?query=ALERTS").unwrap().to_string(),
            "http://prom:9090/prefix/api/v1/query?query=ALERTS"
        );
    }
}
