//! Kubernetes Events (`events.k8s.io/v1`, through kube-runtime's [`Recorder`]), best effort.
//!
//! [`EventSink::publish`] only puts the Event in a bounded queue and returns at once; the
//! [`EventDriver`] (a future the owner polls alongside its work) writes them one by one,
//! each bounded by a timeout. A full queue drops the Event, a failed write is logged: an
//! Event never blocks or fails the reboot protocol. The Recorder folds repeats of the same
//! reason on the same object into one Event's series (within 6 minutes).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// Longest note the Events API accepts (1 kB).
pub const MAX_NOTE: usize = 1024;
/// How long one Event write may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

enum Cmd {
    Publish(Box<(Event, ObjectReference)>),
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
    recorder: Recorder,
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
            recorder: Recorder::new(client, reporter),
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
        let note: String = note.into();
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(truncate(&note, MAX_NOTE).to_string()),
            action: action.to_string(),
            secondary: None,
        };
        if tx
            .try_send(Cmd::Publish(Box::new((ev, regarding))))
            .is_err()
        {
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
    /// Writes queued Events until every sink is dropped.
    pub async fn run(mut self) {
        while let Some(cmd) = self.rx.recv().await {
            match cmd {
                Cmd::Flush(done) => {
                    let _ = done.send(());
                }
                Cmd::Publish(b) => {
                    let (ev, regarding) = *b;
                    let what = format!(
                        "{} {}",
                        regarding.kind.as_deref().unwrap_or(""),
                        regarding.name.as_deref().unwrap_or("")
                    );
                    match tokio::time::timeout(
                        WRITE_TIMEOUT,
                        self.recorder.publish(&ev, &regarding),
                    )
                    .await
                    {
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
}
