//! `--notify-url`: a JSON POST for each step of a node's reboot that people want to hear
//! about, e.g. in a chat channel through a webhook relay:
//!
//! ```json
//! {"event": "grant", "node": "node-1", "reason": "reboot granted (1 of 1 slots in use)", "time": "2024-05-01T10:00:00Z"}
//! ```
//!
//! `event` is `grant` (the node may reboot), `reboot` (its agent started draining and
//! rebooting), `back` (it rebooted, came back, and its slot was released), `stuck` (it
//! did not come back within `--reboot-timeout`) or `slot-released` (a stuck node's slot no
//! longer counts, `--stuck-node-action=release`).
//!
//! `event` is also `drain-failed` (the drain failed under the grant, which is withdrawn)
//! and `grant-withdrawn` (a grant withdrawn before the reboot started: paused, blocked, the
//! window closed, expired).
//!
//! `--notify-format` picks the body: `json` (the object above), `slack` (an incoming
//! webhook's `{"text": ...}`, which Mattermost and Rocket.Chat accept too) or `teams` (a
//! Microsoft Teams incoming webhook's or Workflows webhook's message with an Adaptive
//! Card). The text of `slack` and `teams` is `--notify-message-template`, with `{{event}}`,
//! `{{node}}`, `{{reason}}` and `{{time}}` replaced ([`MessageTemplate`]).
//!
//! Never in the way of the rollout: [`Notifier::send`] only queues (a bounded queue; when
//! full, the oldest waiting notification is dropped). A background loop delivers them in
//! order, each retried with exponential backoff until it gets a 2xx answer or its attempts
//! run out. Drops are counted in `fluo_notifications_dropped_total{reason}`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Uri, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

/// `event`: the node was granted a reboot.
pub const GRANT: &str = "grant";
/// `event`: the node's agent started draining and rebooting it.
pub const REBOOT: &str = "reboot";
/// `event`: the node rebooted, is back, and its slot was released.
pub const BACK: &str = "back";
/// `event`: the node did not come back within `--reboot-timeout`.
pub const STUCK: &str = "stuck";
/// `event`: the drain failed under the grant, which the operator withdrew.
pub const DRAIN_FAILED: &str = "drain-failed";
/// `event`: the grant was withdrawn before the reboot started (paused, blocked, the
/// window closed, expired).
pub const GRANT_WITHDRAWN: &str = "grant-withdrawn";
/// `event`: a stuck node's slot no longer counts against the maximums
/// (`--stuck-node-action=release`); the next node may reboot while it stays down.
pub const SLOT_RELEASED: &str = "slot-released";

/// One notification (the JSON body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// [`GRANT`], [`REBOOT`], [`BACK`], [`STUCK`], [`SLOT_RELEASED`], [`DRAIN_FAILED`] or
    /// [`GRANT_WITHDRAWN`].
    pub event: String,
    /// The node's name.
    pub node: String,
    /// A sentence for people.
    pub reason: String,
    /// When the operator saw it, RFC3339 UTC.
    pub time: String,
}

/// `--notify-format`: the body the receiver expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum NotifyFormat {
    /// {"event", "node", "reason", "time"}.
    #[default]
    Json,
    /// A Slack-compatible incoming webhook: {"text": MESSAGE}.
    Slack,
    /// A Microsoft Teams incoming webhook (or Workflows webhook): a message with an Adaptive Card showing MESSAGE.
    Teams,
}

/// The default `--notify-message-template`.
pub const DEFAULT_MESSAGE_TEMPLATE: &str = "{{node}}: {{reason}}";

/// One piece of a [`MessageTemplate`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Event,
    Node,
    Reason,
    Time,
}

/// `--notify-message-template`: text with `{{event}}`, `{{node}}`, `{{reason}}` and
/// `{{time}}` (spaces inside the braces allowed), as kured's `--message-template-*`. A
/// placeholder of its own rather than a template engine: nothing else to learn or to fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageTemplate(Vec<Piece>);

impl Default for MessageTemplate {
    fn default() -> Self {
        MessageTemplate::parse(DEFAULT_MESSAGE_TEMPLATE).expect("the default parses")
    }
}

impl MessageTemplate {
    /// Parses a template; the error names what is wrong (an unknown placeholder, a
    /// `{{` without `}}`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("{{{{ without }}}} in {s:?}"))?;
            pieces.push(match after[..close].trim() {
                "event" => Piece::Event,
                "node" => Piece::Node,
                "reason" => Piece::Reason,
                "time" => Piece::Time,
                other => {
                    return Err(format!(
                        "unknown placeholder {{{{{other}}}}}: use {{{{event}}}}, {{{{node}}}}, {{{{reason}}}} or {{{{time}}}}"
                    ));
                }
            });
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        if pieces.is_empty() {
            return Err("empty template".into());
        }
        Ok(MessageTemplate(pieces))
    }

    /// The message for `n`.
    pub fn render(&self, n: &Notification) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.as_str(),
                Piece::Event => n.event.as_str(),
                Piece::Node => n.node.as_str(),
                Piece::Reason => n.reason.as_str(),
                Piece::Time => n.time.as_str(),
            })
            .collect()
    }
}

/// Where and how to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    /// An `http://` or `https://` URL.
    pub url: Uri,
    /// `--notify-format`.
    pub format: NotifyFormat,
    /// `--notify-message-template` (the text of `slack` and `teams`).
    pub template: MessageTemplate,
    /// Notifications waiting at most (then the oldest is dropped).
    pub queue_capacity: usize,
    /// Attempts per notification (then it is dropped).
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubled after each further one.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Longest time one attempt may take.
    pub timeout: Duration,
}

impl NotifyConfig {
    /// Defaults for `url`: 1000 queued, 8 attempts, 1 s backoff doubling up to 60 s (about
    /// 3 minutes in all), 10 s per attempt. The error says what is wrong with the URL.
    pub fn new(url: &str) -> Result<Self, String> {
        Ok(NotifyConfig {
            url: parse_http_url(url)?,
            format: NotifyFormat::Json,
            template: MessageTemplate::default(),
            queue_capacity: 1000,
            max_attempts: 8,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        })
    }
}

impl NotifyConfig {
    /// The request body for `n` in `--notify-format`.
    pub fn body(&self, n: &Notification) -> serde_json::Value {
        match self.format {
            NotifyFormat::Json => serde_json::json!({
                "event": n.event, "node": n.node, "reason": n.reason, "time": n.time,
            }),
            NotifyFormat::Slack => serde_json::json!({"text": self.template.render(n)}),
            // Teams' documented shape for an Adaptive Card through an incoming webhook;
            // Workflows webhooks ("post to a channel when a webhook request is received")
            // take the same message.
            NotifyFormat::Teams => serde_json::json!({
                "type": "message",
                "attachments": [{
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": null,
                    "content": {
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard",
                        "version": "1.2",
                        "body": [{"type": "TextBlock", "text": self.template.render(n), "wrap": true}],
                    },
                }],
            }),
        }
    }
}

/// An absolute `http://` or `https://` URL with a host; the error says what is wrong.
pub(crate) fn parse_http_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .trim()
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(format!(
                "invalid URL {url:?}: must start with http:// or https://"
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("invalid URL {url:?}: no host"));
    }
    Ok(uri)
}

struct Inner {
    cfg: NotifyConfig,
    queue: Mutex<VecDeque<Notification>>,
    wake: Notify,
    metrics: Metrics,
}

/// Queues notifications for [`Notifier::run`]; cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

pub(crate) type HttpClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// An http(s) client with the system's CA certificates; `flag` names its user in warnings.
pub(crate) fn http_client(flag: &str) -> HttpClient {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider.clone())
    {
        Ok(b) => b,
        Err(e) => {
            warn!(error = %e, "{flag}: no CA certificates found; https:// URLs will fail");
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    let connector = builder.https_or_http().enable_http1().build();
    Client::builder(TokioExecutor::new()).build(connector)
}

impl Notifier {
    /// A notifier for `cfg`, counting drops in `metrics`.
    pub fn new(cfg: NotifyConfig, metrics: Metrics) -> Self {
        Notifier {
            inner: Arc::new(Inner {
                cfg,
                queue: Mutex::new(VecDeque::new()),
                wake: Notify::new(),
                metrics,
            }),
        }
    }

    /// Queues `n`; never waits. A full queue drops its oldest notification.
    pub fn send(&self, n: Notification) {
        let i = &self.inner;
        {
            let mut q = i.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.push_back(n);
            while q.len() > i.cfg.queue_capacity.max(1) {
                if let Some(old) = q.pop_front() {
                    warn!(event = %old.event, node = %old.node, "--notify-url: queue full; dropping the oldest notification");
                    i.metrics.notification_dropped("queue_full");
                }
            }
        }
        i.wake.notify_one();
    }

    /// Notifications waiting (not counting one being delivered).
    pub fn queued(&self) -> usize {
        self.inner
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Delivers queued notifications, in order, forever (drop the future to stop).
    pub async fn run(self) {
        let client = http_client("--notify-url");
        loop {
            let next = self
                .inner
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            match next {
                Some(n) => self.deliver(&client, n).await,
                None => self.inner.wake.notified().await,
            }
        }
    }

    async fn deliver(&self, client: &HttpClient, n: Notification) {
        let cfg = &self.inner.cfg;
        let body = match serde_json::to_vec(&cfg.body(&n)) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                warn!(error = %e, "--notify-url: cannot encode a notification");
                return;
            }
        };
        let mut backoff = shell::Backoff::new(cfg.initial_backoff, cfg.max_backoff);
        for attempt in 1..=cfg.max_attempts.max(1) {
            let req = Request::builder()
                .method(Method::POST)
                .uri(cfg.url.clone())
                .header(header::CONTENT_TYPE, "application/json")
                .header(
                    header::USER_AGENT,
                    concat!("update-operator/", env!("CARGO_PKG_VERSION")),
                )
                .body(Full::new(body.clone()));
            let req = match req {
                Ok(r) => r,
                Err(e) => {
                    warn!(error = %e, "--notify-url: cannot build the request");
                    return;
                }
            };
            let error = match tokio::time::timeout(cfg.timeout, client.request(req)).await {
                Ok(Ok(resp)) if resp.status().is_success() => {
                    debug!(event = %n.event, node = %n.node, attempt, "notification delivered");
                    return;
                }
                Ok(Ok(resp)) => format!("answered {}", resp.status()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {}s", cfg.timeout.as_secs_f64()),
            };
            if attempt == cfg.max_attempts.max(1) {
                warn!(event = %n.event, node = %n.node, %error, attempts = attempt, "--notify-url: giving up on a notification");
                self.inner.metrics.notification_dropped("undeliverable");
                return;
            }
            let delay = backoff.next_delay();
            info!(event = %n.event, node = %n.node, %error, attempt, retry_in_ms = delay.as_millis() as u64, "--notify-url: delivery failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(NotifyConfig::new("http://127.0.0.1:9/hook").is_ok());
        assert!(NotifyConfig::new("https://hooks.example.com/x?y=1").is_ok());
        for bad in [
            "",
            "hooks.example.com/x",
            "ftp://x/y",
            "http://",
            "not a url",
        ] {
            assert!(NotifyConfig::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_body_is_the_documented_json() {
        let n = Notification {
            event: GRANT.into(),
            node: "n1".into(),
            reason: "r".into(),
            time: "2024-05-01T10:00:00Z".into(),
        };
        assert_eq!(
            serde_json::to_value(&n).unwrap(),
            serde_json::json!({"event": "grant", "node": "n1", "reason": "r", "time": "2024-05-01T10:00:00Z"})
        );
    }

    fn sample() -> Notification {
        Notification {
            event: STUCK.into(),
            node: "n1".into(),
            reason: "not back".into(),
            time: "2024-05-01T10:00:00Z".into(),
        }
    }

    #[test]
    fn templates() {
        let t = |s| MessageTemplate::parse(s).map(|t| t.render(&sample()));
        assert_eq!(MessageTemplate::default().render(&sample()), "n1: not back");
        assert_eq!(
            t("[{{event}}] {{ node }} at {{time}}: {{reason}}!").unwrap(),
            "[stuck] n1 at 2024-05-01T10:00:00Z: not back!"
        );
        assert_eq!(t("no placeholders").unwrap(), "no placeholders");
        assert_eq!(t("{ single } }}").unwrap(), "{ single } }}");
        let e = t("{{nodes}}").unwrap_err();
        assert!(e.contains("unknown placeholder {{nodes}}"), "{e}");
        assert!(e.contains("{{reason}}"), "{e}");
        assert!(t("{{node").unwrap_err().contains("without }}"));
        assert!(t("").unwrap_err().contains("empty"));
    }

    #[test]
    fn bodies_per_format() {
        let mut cfg = NotifyConfig::new("http://127.0.0.1:9/").unwrap();
        assert_eq!(cfg.body(&sample()), serde_json::to_value(sample()).unwrap());
        cfg.format = NotifyFormat::Slack;
        cfg.template = MessageTemplate::parse("reboot {{event}}: {{node}}").unwrap();
        assert_eq!(
            cfg.body(&sample()),
            serde_json::json!({"text": "reboot stuck: n1"})
        );
        cfg.format = NotifyFormat::Teams;
        let b = cfg.body(&sample());
        assert_eq!(b["type"], "message");
        let card = &b["attachments"][0];
        assert_eq!(
            card["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(card["content"]["type"], "AdaptiveCard");
        assert_eq!(card["content"]["body"][0]["text"], "reboot stuck: n1");
    }

    #[test]
    fn a_full_queue_drops_the_oldest() {
        let m = Metrics::new();
        let mut cfg = NotifyConfig::new("http://127.0.0.1:9/").unwrap();
        cfg.queue_capacity = 2;
        let n = Notifier::new(cfg, m.clone());
        for i in 0..5 {
            n.send(Notification {
                event: GRANT.into(),
                node: format!("n{i}"),
                reason: String::new(),
                time: String::new(),
            });
        }
        assert_eq!(n.queued(), 2);
        assert_eq!(m.notifications_dropped("queue_full"), 3);
        let q = n.inner.queue.lock().unwrap();
        assert_eq!(q[0].node, "n3");
        assert_eq!(q[1].node, "n4");
    }
}
