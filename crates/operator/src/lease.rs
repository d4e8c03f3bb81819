//! Leader election through a `coordination.k8s.io/v1` Lease, with client-go's
//! record format and semantics, so a FLUO replica (client-go's Lease lock of
//! the same name) and ours exclude each other during a switch-over.
//!
//! - Acquire and renew are updates carrying the Lease's `resourceVersion`: of
//!   two replicas racing for a free or expired Lease, exactly one wins (409
//!   for the other).
//! - Another holder's lease counts as expired only after it has not changed
//!   for its `leaseDurationSeconds`, measured on our own monotonic clock from
//!   when we first saw that record (no trust in wall clocks across machines).
//! - The holder renews every `retry_period` with one update of the Lease it
//!   last wrote (its `resourceVersion`); only when that answers 409 (someone
//!   else wrote the Lease since) does it read the Lease again. An idle leader
//!   makes one request per `retry_period`, not a read and a write.
//! - Each successful renewal that
//!   started at `t0` makes the holder the leader until `t0 + renew_deadline`;
//!   no other replica can take the Lease before `t0 + lease_duration`. The
//!   leader's work stops at the renew deadline if renewing keeps failing, so
//!   two replicas never act at once.
//! - On shutdown the leader's work is stopped first, then the Lease is
//!   released (holder emptied, duration 1 s, as client-go's
//!   `ReleaseOnCancel`), so a standby takes over within one retry period.
//! - With a `wanted` signal ([`crate::work`]), a replica campaigns only while
//!   some node needs an operator, and a leader whose work ends
//!   [`WorkEnd::Idle`] releases the Lease the same way: an idle cluster costs
//!   no renewals.
//!
//! kube-lease-manager was not used: its `watch()` keeps reporting leadership
//! while renewals fail (no renew deadline), a standby sleeps until the old
//! expiry even after a release, and it relies on server-side-apply conflicts
//! for mutual exclusion instead of resourceVersion preconditions.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Timings of the election (client-go's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a Lease stays valid after its last renewal (written to the Lease).
    pub lease_duration: Duration,
    /// The leader stops acting if it could not renew for this long; shorter
    /// than `lease_duration`.
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby retries.
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    /// client-go's defaults: 15 s, 10 s, 2 s.
    fn default() -> Self {
        LeaseTiming {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl LeaseTiming {
    /// Checks `retry_period < renew_deadline < lease_duration` and a whole
    /// number of seconds (at least 1) for `lease_duration`.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_duration < Duration::from_secs(1) || self.lease_duration.subsec_nanos() != 0 {
            return Err("lease_duration must be a whole number of seconds, at least 1".into());
        }
        if self.renew_deadline >= self.lease_duration {
            return Err("renew_deadline must be shorter than lease_duration".into());
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err("retry_period must be positive and shorter than renew_deadline".into());
        }
        Ok(())
    }
}

/// The leader's licence to act. Cloned into the leader's work, which must
/// check [`Leadership::may_act`] before every write and stop when
/// [`Leadership::cancelled`] fires.
#[derive(Clone)]
pub struct Leadership {
    token: CancellationToken,
    /// (until when we may start writes, until when no one else can hold the Lease)
    deadlines: Arc<Mutex<(Instant, Instant)>>,
}

impl Leadership {
    fn new(token: CancellationToken, renewed_at: Instant, t: &LeaseTiming) -> Self {
        Leadership {
            token,
            deadlines: Arc::new(Mutex::new((
                renewed_at + t.renew_deadline,
                renewed_at + t.lease_duration,
            ))),
        }
    }

    fn renewed(&self, at: Instant, t: &LeaseTiming) {
        let mut d = self.deadlines.lock().unwrap_or_else(|e| e.into_inner());
        *d = (
            d.0.max(at + t.renew_deadline),
            d.1.max(at + t.lease_duration),
        );
    }

    fn soft_deadline(&self) -> Instant {
        self.deadlines.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Still the leader: not cancelled and renewed recently enough.
    pub fn may_act(&self) -> bool {
        !self.token.is_cancelled() && Instant::now() < self.soft_deadline()
    }

    /// Time left before another replica could possibly hold the Lease, if we
    /// may still act: writes are bounded by it.
    pub fn time_left(&self) -> Option<Duration> {
        if !self.may_act() {
            return None;
        }
        let hard = self.deadlines.lock().unwrap_or_else(|e| e.into_inner()).1;
        hard.checked_duration_since(Instant::now())
    }

    /// Resolves when leadership ends (lost, or shutdown).
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// The token that is cancelled when leadership ends.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

/// The parts of a Lease record whose change proves the holder is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RecordKey {
    holder: String,
    renew: Option<String>,
    acquire: Option<String>,
    duration: Option<i32>,
    transitions: Option<i32>,
}

fn record_key(spec: &LeaseSpec) -> RecordKey {
    RecordKey {
        holder: spec.holder_identity.clone().unwrap_or_default(),
        renew: spec.renew_time.as_ref().map(|t| t.0.to_string()),
        acquire: spec.acquire_time.as_ref().map(|t| t.0.to_string()),
        duration: spec.lease_duration_seconds,
        transitions: spec.lease_transitions,
    }
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
    field_manager: String,
    observed: Option<(RecordKey, Instant)>,
    /// The Lease as our last successful write left it, while we hold it.
    written: Option<Lease>,
    /// Annotations every acquire and renewal writes (the operator's published settings):
    /// part of the same update, so they cost no extra request.
    annotations: Vec<(String, String)>,
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the Lease (acquired or renewed); the attempt started at this instant.
    Held(Instant),
    /// Someone else holds it.
    Other(String),
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Elector {
    /// An elector for Lease `name` in `namespace` as `identity`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: LeaseTiming,
        field_manager: &str,
    ) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
            field_manager: field_manager.to_string(),
            observed: None,
            written: None,
            annotations: Vec::new(),
        }
    }

    /// Also writes annotation `key=value` on the Lease with every acquire and renewal.
    pub fn with_annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.push((key.to_string(), value.to_string()));
        self
    }

    fn annotate(&self, lease: &mut Lease) {
        if self.annotations.is_empty() {
            return;
        }
        let a = lease
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        for (k, v) in &self.annotations {
            a.insert(k.clone(), v.clone());
        }
    }

    fn post_params(&self) -> PostParams {
        PostParams {
            field_manager: Some(self.field_manager.clone()),
            ..Default::default()
        }
    }

    fn observe(&mut self, spec: &LeaseSpec, at: Instant) -> Instant {
        let key = record_key(spec);
        match &self.observed {
            Some((k, t)) if *k == key => *t,
            _ => {
                self.observed = Some((key, at));
                at
            }
        }
    }

    /// Remembers the Lease a successful write returned, if it names us.
    fn wrote(&mut self, lease: Lease, t0: Instant) {
        let Some(spec) = &lease.spec else {
            self.written = None;
            return;
        };
        self.observe(spec, t0);
        self.written =
            (spec.holder_identity.as_deref() == Some(self.identity.as_str())).then_some(lease);
    }

    /// Renews from the Lease we last wrote, without reading it first. `None`:
    /// nothing to renew from, or the Lease changed since (409), so the caller
    /// reads it.
    async fn renew_written(&mut self, t0: Instant) -> Option<Result<Attempt, kube::Error>> {
        let mut lease = self.written.take()?;
        let spec = lease.spec.take().unwrap_or_default();
        lease.spec = Some(LeaseSpec {
            renew_time: Some(MicroTime(Timestamp::now())),
            ..spec
        });
        self.annotate(&mut lease);
        // The resourceVersion is that of our write: any write since is a 409.
        match self.replace(&lease, t0).await {
            Ok(true) => Some(Ok(Attempt::Held(t0))),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Writes `lease` (whose metadata.resourceVersion makes a concurrent change a 409) and
    /// remembers the result. `false`: 409, someone else wrote it since.
    async fn replace(&mut self, lease: &Lease, t0: Instant) -> Result<bool, kube::Error> {
        match self
            .api
            .replace(&self.name, &self.post_params(), lease)
            .await
        {
            Ok(updated) => {
                self.wrote(updated, t0);
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Acquires the Lease if it is free, expired or ours, and renews it if ours.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let t0 = Instant::now();
        if let Some(r) = self.renew_written(t0).await {
            return r;
        }
        let now = MicroTime(Timestamp::now());
        let duration_secs = self.timing.lease_duration.as_secs().min(i32::MAX as u64) as i32;
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let mut lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            self.annotate(&mut lease);
            return match self.api.create(&self.post_params(), &lease).await {
                Ok(created) => {
                    self.wrote(created, t0);
                    Ok(Attempt::Held(t0))
                }
                Err(e) if is_conflict(&e) => Ok(Attempt::Other(String::new())),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let observed_at = self.observe(&spec, t0);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.identity;
        if !holder.is_empty() && !mine {
            let held_for = spec
                .lease_duration_seconds
                .filter(|d| *d > 0)
                .map(|d| Duration::from_secs(d as u64))
                .unwrap_or(self.timing.lease_duration);
            if t0 < observed_at + held_for {
                return Ok(Attempt::Other(holder));
            }
            info!(lease = %self.name, previous = %holder, "the lease expired; taking it over");
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(duration_secs),
            acquire_time: if mine {
                spec.acquire_time.clone().or(Some(now.clone()))
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if mine || holder.is_empty() && transitions == 0 {
                transitions
            } else {
                transitions.saturating_add(1)
            }),
            ..spec
        });
        self.annotate(&mut lease);
        Ok(if self.replace(&lease, t0).await? {
            Attempt::Held(t0)
        } else {
            Attempt::Other(holder)
        })
    }

    /// [`Elector::release`] within 5 s, logging the outcome with `reason` (a Lease not
    /// released runs out by itself).
    async fn release_logged(&mut self, reason: &str) {
        match tokio::time::timeout(Duration::from_secs(5), self.release()).await {
            Ok(Ok(())) => info!(lease = %self.name, reason, "released the lease"),
            Ok(Err(e)) => {
                warn!(lease = %self.name, reason, error = %e, "cannot release the lease; it runs out by itself")
            }
            Err(_) => {
                warn!(lease = %self.name, reason, "releasing the lease timed out; it runs out by itself")
            }
        }
    }

    /// Empties the Lease if we hold it (client-go's release).
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        self.written = None;
        for _ in 0..3 {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else {
                return Ok(());
            };
            let spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(());
            }
            let now = MicroTime(Timestamp::now());
            lease.spec = Some(LeaseSpec {
                holder_identity: Some(String::new()),
                lease_duration_seconds: Some(1),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                ..spec
            });
            match self
                .api
                .replace(&self.name, &self.post_params(), &lease)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn jittered(d: Duration) -> Duration {
    // client-go's JitterFactor 1.2 is generous; a standby waits 1x..1.5x.
    d.mul_f64(1.0 + rand::rng().random_range(0.0..0.5))
}

/// How the leader's work ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkEnd {
    /// Nothing left to do: give the Lease up and campaign again when wanted.
    Idle,
    /// It saw its leadership end (the renew deadline passed).
    LeadershipEnded,
}

/// Why a term as leader ended.
enum TermEnd {
    Shutdown,
    Lost(&'static str),
    WorkEnded(anyhow::Result<WorkEnd>),
}

/// Waits until `wanted` says a leader is wanted; `false` on shutdown. A
/// signal whose sender is gone counts as always wanted.
async fn until_wanted(
    wanted: &mut Option<watch::Receiver<bool>>,
    shutdown: &CancellationToken,
) -> bool {
    let Some(w) = wanted else { return true };
    let gone = tokio::select! {
        _ = shutdown.cancelled() => return false,
        r = w.wait_for(|want| *want) => r.is_err(),
    };
    if gone {
        *wanted = None;
    }
    true
}

/// Campaigns for the Lease until `shutdown`; while leader, runs `work` with a
/// [`Leadership`] and stops it as soon as leadership ends. With `wanted`, it
/// campaigns only while that says a leader is wanted, and a `work` that ends
/// [`WorkEnd::Idle`] has the Lease released (without `wanted`, that is an
/// error: the work must not end). Releases the Lease on shutdown. Returns an
/// error only if `work` fails or panics.
pub async fn run_elected<F, Fut>(
    mut elector: Elector,
    shutdown: CancellationToken,
    mut wanted: Option<watch::Receiver<bool>>,
    mut work: F,
) -> anyhow::Result<()>
where
    F: FnMut(Leadership) -> Fut,
    Fut: Future<Output = anyhow::Result<WorkEnd>> + Send + 'static,
{
    let timing = elector.timing;
    let mut error_backoff = shell::Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut last_holder: Option<String> = None;
    let mut first = true;
    loop {
        // Campaign.
        let acquired_at = loop {
            // A starting replica campaigns once whatever the nodes say, so a new
            // operator takes a look (and gives the Lease up again if idle).
            if shutdown.is_cancelled() || (!first && !until_wanted(&mut wanted, &shutdown).await) {
                return Ok(());
            }
            first = false;
            let attempt = tokio::select! {
                biased;
                _ = shutdown.cancelled() => None,
                r = tokio::time::timeout(timing.renew_deadline, elector.try_acquire_or_renew()) => Some(r),
            };
            let Some(attempt) = attempt else {
                // The interrupted attempt may have taken the Lease: give it back.
                let _ = tokio::time::timeout(Duration::from_secs(5), elector.release()).await;
                return Ok(());
            };
            let wait = match attempt {
                Ok(Ok(Attempt::Held(t0))) => break t0,
                Ok(Ok(Attempt::Other(holder))) => {
                    if last_holder.as_ref() != Some(&holder) && !holder.is_empty() {
                        info!(lease = %elector.name, %holder, "standing by: the lease is held by another replica");
                    }
                    last_holder = Some(holder);
                    error_backoff.reset();
                    jittered(timing.retry_period)
                }
                Ok(Err(e)) => {
                    warn!(lease = %elector.name, error = %e, "cannot read or write the leader election lease; retrying");
                    error_backoff.next_delay().max(timing.retry_period)
                }
                Err(_) => {
                    warn!(lease = %elector.name, "leader election request timed out; retrying");
                    timing.retry_period
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        };
        last_holder = None;
        info!(lease = %elector.name, identity = %elector.identity, "became the leader");
        let token = shutdown.child_token();
        let leadership = Leadership::new(token.clone(), acquired_at, &timing);
        let mut task = tokio::spawn(work(leadership.clone()));
        let mut next_renew = Instant::now() + timing.retry_period;
        let end = loop {
            let deadline = leadership.soft_deadline();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break TermEnd::Shutdown,
                res = &mut task => break TermEnd::WorkEnded(match res {
                    Ok(r) => r,
                    Err(e) => Err(anyhow::anyhow!("the leader's work panicked: {e}")),
                }),
                _ = tokio::time::sleep_until(deadline) => break TermEnd::Lost("could not renew the lease before the renew deadline"),
                _ = tokio::time::sleep_until(next_renew) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, elector.try_acquire_or_renew()).await {
                        Ok(Ok(Attempt::Held(t0))) => {
                            leadership.renewed(t0, &timing);
                            next_renew = Instant::now() + timing.retry_period;
                        }
                        // A 409 while we still held it: someone else wrote the Lease
                        // (e.g. an admin annotating it `paused`); read it again soon.
                        Ok(Ok(Attempt::Other(h))) if h == elector.identity => {
                            debug!(lease = %elector.name, "the lease changed under our renewal; retrying");
                            next_renew = Instant::now() + (timing.retry_period / 4).max(Duration::from_millis(50));
                        }
                        Ok(Ok(Attempt::Other(_))) => break TermEnd::Lost("the lease is held by another replica"),
                        Ok(Err(e)) => {
                            warn!(lease = %elector.name, error = %e, "cannot renew the lease; retrying until the renew deadline");
                            next_renew = Instant::now() + (timing.retry_period / 4).max(Duration::from_millis(100));
                        }
                        Err(_) => break TermEnd::Lost("renewing the lease timed out"),
                    }
                }
            }
        };
        // Stop acting first, then (on shutdown, failure or idleness) release.
        token.cancel();
        let result = match end {
            TermEnd::WorkEnded(Ok(WorkEnd::Idle)) if wanted.is_some() => {
                elector
                    .release_logged("nothing to do until a node needs an operator")
                    .await;
                continue;
            }
            TermEnd::WorkEnded(Ok(WorkEnd::LeadershipEnded)) => {
                warn!(lease = %elector.name, "lost leadership (renew deadline); stopped acting");
                continue;
            }
            TermEnd::WorkEnded(r) => {
                Some(r.and_then(|_| Err(anyhow::anyhow!("the leader's work ended unexpectedly"))))
            }
            TermEnd::Shutdown | TermEnd::Lost(_) => {
                if tokio::time::timeout(timing.lease_duration, &mut task)
                    .await
                    .is_err()
                {
                    warn!("the leader's work did not stop in time; aborting it");
                    task.abort();
                }
                if let TermEnd::Lost(why) = end {
                    warn!(lease = %elector.name, reason = why, "lost leadership; stopped acting");
                    continue;
                }
                None
            }
        };
        elector.release_logged("leader term ended").await;
        return result.unwrap_or(Ok(()));
    }
}
