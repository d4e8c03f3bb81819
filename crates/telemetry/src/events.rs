//! Kubernetes Events (`events.k8s.io/v1`), best effort.
//!
//! [`EventSink::publish`] only puts the Event in a bounded queue and returns at once; the
//! [`EventDriver`] (a future the owner polls alongside its work) writes them one by one,
//! each bounded by a timeout. A full queue drops the Event, a failed write is logged: an
//! Event never blocks or fails the reboot protocol.
//!
//! As kube-runtime's `Recorder` (whose semantics this keeps): an Event is created as
//! `{object}.{nanoseconds:x}` in the object's namespace (`default` for cluster-scoped ones),
//! reported as the controller and instance given; a repeat of the same (type, reason, action,
//! regarding, related) within [`SERIES_TTL`] of the last one PATCHes that Event's `series`
//! (count, lastObservedTime) instead. Unlike the Recorder, which keeps every whole Event for
//! 6 minutes in a map that never shrinks and scans it on every publish (23.6 MB at 5,000
//! nodes), the series cache keeps per key only the Event's name and count, expires entries
//! from a queue in time order, and gives its memory back as it empties.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{EventType, Reporter};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

/// Longest note the Events API accepts (1 kB).
pub const MAX_NOTE: usize = 1024;
/// How long one Event write may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after its last occurrence a repeat still joins an Event's series (kube-runtime's
/// and client-go's 6 minutes).
pub const SERIES_TTL: Duration = Duration::from_secs(6 * 60);

/// One queued Event.
struct Pending {
    type_: EventType,
    reason: String,
    action: String,
    note: String,
    regarding: ObjectReference,
    related: Option<ObjectReference>,
}

enum Cmd {
    Publish(Box<Pending>),
    Flush(oneshot::Sender<()>),
}

/// Queues Events for the [`EventDriver`]; cheap to clone.
#[derive(Clone)]
pub struct EventSink {
    tx: Option<mpsc::Sender<Cmd>>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("enabled", &self.tx.is_some())
            .finish()
    }
}

/// Writes the queued Events; run it (poll it) as long as the sink is used.
pub struct EventDriver {
    rx: mpsc::Receiver<Cmd>,
    client: kube::Client,
    reporter: Reporter,
    series: SeriesCache,
}

/// A sink and its driver: Events about objects, reported as `reporter` (the controller's
/// name and this instance), through `client`, at most `capacity` waiting.
pub fn channel(
    client: kube::Client,
    reporter: Reporter,
    capacity: usize,
) -> (EventSink, EventDriver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        EventSink {
            tx: Some(tx),
            dropped: Arc::default(),
        },
        EventDriver {
            rx,
            client,
            reporter,
            series: SeriesCache::new(SERIES_TTL),
        },
    )
}

/// A reference to the Node `name` (Events about it are written in namespace `default`).
pub fn node_ref(name: &str, uid: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(name.into()),
        uid,
        ..Default::default()
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl EventSink {
    /// A sink that writes nothing.
    pub fn disabled() -> Self {
        EventSink {
            tx: None,
            dropped: Arc::default(),
        }
    }

    /// Queues an Event about `regarding`; never waits. `reason` and `action` are PascalCase
    /// identifiers, `note` a human-readable sentence (cut to 1 kB).
    pub fn publish(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: impl Into<String>,
    ) {
        let Some(tx) = &self.tx else {
            return;
        };
        let mut note: String = note.into();
        note.truncate(truncate(&note, MAX_NOTE).len());
        let ev = Pending {
            type_,
            reason: reason.to_string(),
            action: action.to_string(),
            note,
            regarding,
            related: None,
        };
        if tx.try_send(Cmd::Publish(Box::new(ev))).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            debug!(%reason, "event queue full (or closed); dropping the event");
        }
    }

    /// Waits (at most `timeout`) until the Events queued so far were written or given up;
    /// false on timeout.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let Some(tx) = &self.tx else {
            return true;
        };
        let (done, wait) = oneshot::channel();
        let sent = tokio::time::timeout(timeout, async {
            tx.send(Cmd::Flush(done)).await.is_ok() && wait.await.is_ok()
        });
        sent.await.unwrap_or(false)
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl EventDriver {
    /// Repeats within `ttl` (instead of [`SERIES_TTL`]) join a series; for tests.
    pub fn with_series_ttl(mut self, ttl: Duration) -> Self {
        self.series = SeriesCache::new(ttl);
        self
    }

    /// Writes queued Events until every sink is dropped.
    pub async fn run(mut self) {
        while let Some(cmd) = self.rx.recv().await {
            match cmd {
                Cmd::Flush(done) => {
                    let _ = done.send(());
                }
                Cmd::Publish(ev) => {
                    let what = format!(
                        "{} {}",
                        ev.regarding.kind.as_deref().unwrap_or(""),
                        ev.regarding.name.as_deref().unwrap_or("")
                    );
                    match tokio::time::timeout(WRITE_TIMEOUT, self.write(&ev)).await {
                        Ok(Ok(())) => {
                            debug!(reason = %ev.reason, regarding = %what, "event written")
                        }
                        Ok(Err(e)) => {
                            warn!(reason = %ev.reason, regarding = %what, error = %e, "cannot write an event (ignored)")
                        }
                        Err(_) => {
                            warn!(reason = %ev.reason, regarding = %what, "writing an event timed out (ignored)")
                        }
                    }
                }
            }
        }
    }

    /// Creates the Event, or PATCHes the series of the same Event written within the TTL.
    async fn write(&mut self, ev: &Pending) -> Result<(), kube::Error> {
        let now = Instant::now();
        let stamp = Timestamp::now();
        self.series.expire(now);
        let key = series_key(ev);
        let namespace = ev.regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        if let Some(s) = self.series.get(&key, now) {
            let count = s.count.saturating_add(1);
            let patch = K8sEvent {
                series: Some(EventSeries {
                    count,
                    last_observed_time: MicroTime(stamp),
                }),
                ..Default::default()
            };
            match events
                .patch(&s.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.series.observed(&key, count, now);
                    return Ok(());
                }
                // Deleted meanwhile (the API server's event TTL, or by hand): start afresh.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.new_event(ev, namespace, stamp);
        let name = event.metadata.name.clone().unwrap_or_default();
        events.create(&PostParams::default(), &event).await?;
        self.series.insert(key, name, now);
        Ok(())
    }

    fn new_event(&self, ev: &Pending, namespace: &str, now: Timestamp) -> K8sEvent {
        let object = ev
            .regarding
            .name
            .as_deref()
            .unwrap_or(&self.reporter.controller);
        K8sEvent {
            metadata: ObjectMeta {
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            },
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: Some(ev.note.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(ev.regarding.clone()),
            related: ev.related.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..Default::default()
        }
    }
}

/// What makes repeats one series: type, reason, action, regarding and related (the reporter is
/// the driver's own), as one string; object names cannot hold a NUL.
fn series_key(ev: &Pending) -> Arc<str> {
    let mut k = String::with_capacity(96);
    let _ = write!(k, "{:?}\0{}\0{}", ev.type_, ev.reason, ev.action);
    for r in std::iter::once(&ev.regarding).chain(&ev.related) {
        for f in [&r.api_version, &r.kind, &r.namespace, &r.name, &r.uid] {
            k.push('\0');
            k.push_str(f.as_deref().unwrap_or(""));
        }
    }
    k.into()
}

/// One series: the Event it PATCHes, how often it happened, when last.
#[derive(Debug, Clone)]
struct Series {
    name: Box<str>,
    count: i32,
    last: Instant,
}

/// The series of the Events written within the TTL.
struct SeriesCache {
    ttl: Duration,
    entries: HashMap<Arc<str>, Series>,
    /// Every key once, oldest first by the time it was queued (at most its `last`); a key
    /// seen again since is queued again when its turn comes, so expiring never scans the map.
    queue: VecDeque<(Instant, Arc<str>)>,
}

impl SeriesCache {
    fn new(ttl: Duration) -> Self {
        SeriesCache {
            ttl,
            entries: HashMap::new(),
            queue: VecDeque::new(),
        }
    }

    fn live(&self, s: &Series, now: Instant) -> bool {
        now.saturating_duration_since(s.last) < self.ttl
    }

    /// The series of `key` if its last Event is younger than the TTL.
    fn get(&self, key: &str, now: Instant) -> Option<Series> {
        self.entries.get(key).filter(|s| self.live(s, now)).cloned()
    }

    fn insert(&mut self, key: Arc<str>, name: String, now: Instant) {
        let s = Series {
            name: name.into(),
            count: 1,
            last: now,
        };
        // A key that expired but is not dequeued yet keeps its queue slot.
        if self.entries.insert(key.clone(), s).is_none() {
            self.queue.push_back((now, key));
        }
    }

    fn observed(&mut self, key: &str, count: i32, now: Instant) {
        if let Some(s) = self.entries.get_mut(key) {
            s.count = count;
            s.last = now;
        }
    }

    /// Drops the series whose last Event is older than the TTL, from the front of the queue.
    fn expire(&mut self, now: Instant) {
        let mut dropped = false;
        while let Some((queued, _)) = self.queue.front() {
            if now.saturating_duration_since(*queued) < self.ttl {
                break;
            }
            let Some((_, key)) = self.queue.pop_front() else {
                break;
            };
            match self.entries.get(&key) {
                Some(s) if self.live(s, now) => {
                    let last = s.last;
                    self.queue.push_back((last, key));
                }
                _ => {
                    self.entries.remove(&key);
                    dropped = true;
                }
            }
        }
        // A burst (a rollout of thousands of nodes) must not hold its memory for good.
        if dropped
            && self.entries.capacity() > 64
            && self.entries.len() * 4 < self.entries.capacity()
        {
            self.entries.shrink_to(self.entries.len() * 2);
            self.queue.shrink_to(self.queue.len() * 2);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(reason: &str, node: &str) -> Pending {
        Pending {
            type_: EventType::Normal,
            reason: reason.into(),
            action: "Act".into(),
            note: String::new(),
            regarding: node_ref(node, None),
            related: None,
        }
    }

    #[test]
    fn the_key_tells_type_reason_action_and_objects_apart() {
        let a = series_key(&pending("R", "n1"));
        assert_eq!(a, series_key(&pending("R", "n1")));
        assert_ne!(a, series_key(&pending("R", "n2")));
        assert_ne!(a, series_key(&pending("S", "n1")));
        let mut w = pending("R", "n1");
        w.type_ = EventType::Warning;
        assert_ne!(a, series_key(&w));
        let mut rel = pending("R", "n1");
        rel.related = Some(node_ref("n2", None));
        assert_ne!(a, series_key(&rel));
    }

    #[test]
    fn series_expire_in_time_order_and_give_their_memory_back() {
        let ttl = Duration::from_secs(360);
        let t0 = Instant::now();
        let mut c = SeriesCache::new(ttl);
        for i in 0..10_000 {
            c.insert(
                series_key(&pending("R", &format!("n{i}"))),
                format!("e{i}"),
                t0,
            );
        }
        let big = c.entries.capacity();
        // A repeat keeps its series alive from its own time on.
        let k = series_key(&pending("R", "n7"));
        let later = t0 + Duration::from_secs(300);
        c.observed(&k, 2, later);
        c.expire(t0 + ttl - Duration::from_secs(1));
        assert_eq!(c.len(), 10_000);
        assert!(c.get(&series_key(&pending("R", "n8")), t0 + ttl).is_none());
        c.expire(t0 + ttl);
        assert_eq!(c.len(), 1);
        assert!(c.entries.capacity() < big / 100, "{}", c.entries.capacity());
        let s = c.get(&k, t0 + ttl).unwrap();
        assert_eq!((&*s.name, s.count), ("e7", 2));
        c.expire(later + ttl);
        assert_eq!(c.len(), 0);
        assert!(c.queue.is_empty());
        // A key that expired but is still queued is not queued twice when written again.
        c.insert(k.clone(), "a".into(), later + ttl);
        c.insert(k.clone(), "b".into(), later + ttl + ttl);
        assert_eq!(c.queue.len(), 1);
        assert_eq!(&*c.get(&k, later + ttl + ttl).unwrap().name, "b");
    }
}
