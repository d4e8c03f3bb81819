//! Leader election through client-go's `ConfigMapsLeases` lock, with client-go's record
//! format and semantics: a ConfigMap (its record in the annotation
//! `control-plane.alpha.kubernetes.io/leader`) and a `coordination.k8s.io/v1` Lease of the
//! same name, read and written together by client-go's MultiLock rules. FLUO's operator uses
//! this very lock (`flatcar-linux-update-operator-lock`), so a FLUO replica and ours exclude
//! each other, and either takes over at its next try once the other has released (with the
//! Lease alone, FLUO's first try failed creating the Lease that already existed and then waited
//! out its 90 s lease on an "unknown" leader: about 170 s). Older versions of ours, which use the
//! Lease alone, are excluded too (the Lease write carries the resourceVersion it was read at).
//!
//! - Acquire and renew are updates carrying each object's `resourceVersion`,
//!   the ConfigMap first: of two replicas racing for a free or expired lock,
//!   exactly one wins (409 for the other).
//! - Another holder's lease counts as expired only after it has not changed
//!   for its `leaseDurationSeconds`, measured on our own monotonic clock from
//!   when we first saw that record (no trust in wall clocks across machines).
//! - The holder renews every `retry_period` with one update of each object as
//!   it last wrote it (their `resourceVersion`s); only when that answers 409
//!   (someone else wrote one since) does it read them again. A leader makes
//!   two requests per `retry_period`, no reads.
//! - Each successful renewal that
//!   started at `t0` makes the holder the leader until `t0 + renew_deadline`;
//!   no other replica can take the Lease before `t0 + lease_duration`. The
//!   leader's work stops at the renew deadline if renewing keeps failing, so
//!   two replicas never act at once.
//! - On shutdown the leader's work is stopped first, then both objects are
//!   released (holder emptied, duration 1 s, as client-go's
//!   `ReleaseOnCancel`), so a standby, ours or FLUO's, takes over at its next
//!   try.
//! - With a `wanted` signal ([`crate::work`]), a replica campaigns only while
//!   some node needs an operator, and a leader whose work ends
//!   [`WorkEnd::Idle`] releases the lock the same way: an idle cluster costs
//!   no renewals.
//!
//! kube-lease-manager was not used: its `watch()` keeps reporting leadership
//! while renewals fail (no renew deadline), a standby sleeps until the old
//! expiry even after a release, and it relies on server-side-apply conflicts
//! for mutual exclusion instead of resourceVersion preconditions.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ConfigMap;
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

/// client-go's `LeaderElectionRecordAnnotationKey`: the annotation a ConfigMap lock keeps its
/// record in.
pub const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

/// client-go's `resourcelock.UnknownLeader`: the holder a MultiLock reports while its two
/// objects name different holders.
pub const UNKNOWN_LEADER: &str = "leaderelection.k8s.io/unknown";

/// On the lock's ConfigMap while its record is only a copy of the Lease's (the record's text):
/// set when we add a missing ConfigMap for a Lease that a Lease-only client (an older version
/// of ours) holds or released. While it matches the record, the copy follows the Lease, so a
/// release of the Lease frees the whole lock at once. Any real write of the record (FLUO's or
/// ours) makes it stale: client-go keeps other annotations but rewrites the record.
pub const MIRROR_ANNOTATION: &str = "flatcar-linux-update.v1.flatcar-linux.net/lock-mirrors-lease";

/// client-go's `LeaderElectionRecord` as Go writes it into the ConfigMap's annotation: every
/// field, times in whole seconds (`metav1.Time`) or `null`. Unknown fields are ignored, as Go does.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ElectionRecord {
    #[serde(default)]
    pub holder_identity: String,
    #[serde(default)]
    pub lease_duration_seconds: i64,
    #[serde(default, with = "go_time")]
    pub acquire_time: Option<Timestamp>,
    #[serde(default, with = "go_time")]
    pub renew_time: Option<Timestamp>,
    #[serde(default)]
    pub leader_transitions: i64,
}

/// `metav1.Time`'s JSON: RFC 3339 in whole seconds, UTC; `null` for Go's zero time.
mod go_time {
    use k8s_openapi::jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse::<Timestamp>().map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl ElectionRecord {
    /// client-go's `LeaseSpecToLeaderElectionRecord`.
    pub fn from_lease(spec: &LeaseSpec) -> ElectionRecord {
        ElectionRecord {
            holder_identity: spec.holder_identity.clone().unwrap_or_default(),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0).into(),
            acquire_time: spec.acquire_time.as_ref().map(|t| t.0),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
            leader_transitions: spec.lease_transitions.unwrap_or(0).into(),
        }
    }

    /// client-go's `LeaderElectionRecordToLeaseSpec`, keeping the spec's other fields.
    pub fn to_lease(&self, base: LeaseSpec) -> LeaseSpec {
        let int = |v: i64| Some(v.clamp(i32::MIN.into(), i32::MAX.into()) as i32);
        LeaseSpec {
            holder_identity: Some(self.holder_identity.clone()),
            lease_duration_seconds: int(self.lease_duration_seconds),
            acquire_time: self.acquire_time.map(MicroTime),
            renew_time: self.renew_time.map(MicroTime),
            lease_transitions: int(self.leader_transitions),
            ..base
        }
    }

    /// The record in a ConfigMap lock, and its raw text (client-go's `configMapLock.Get`: no
    /// annotation is an empty record; one that is not a record is an error).
    pub fn from_config_map(cm: &ConfigMap) -> anyhow::Result<(ElectionRecord, String)> {
        let Some(raw) = cm
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LEADER_ANNOTATION))
        else {
            return Ok((ElectionRecord::default(), String::new()));
        };
        let rec = serde_json::from_str(raw).map_err(|e| {
            anyhow::anyhow!(
                "ConfigMap {}: annotation {LEADER_ANNOTATION} is not a leader election record: {e}",
                cm.metadata.name.as_deref().unwrap_or_default()
            )
        })?;
        Ok((rec, raw.clone()))
    }

    /// Writes the record into the ConfigMap's annotation, keeping the others but
    /// [`MIRROR_ANNOTATION`].
    pub fn put_into(&self, cm: &mut ConfigMap) {
        let json = serde_json::to_string(self).expect("a record serialises");
        let a = cm.metadata.annotations.get_or_insert_with(Default::default);
        a.remove(MIRROR_ANNOTATION);
        a.insert(LEADER_ANNOTATION.to_string(), json);
    }

    /// Writes the record as a copy of the Lease's, marked [`MIRROR_ANNOTATION`].
    fn mirror_into(&self, cm: &mut ConfigMap) {
        self.put_into(cm);
        let a = cm.metadata.annotations.get_or_insert_with(Default::default);
        let json = a[LEADER_ANNOTATION].clone();
        a.insert(MIRROR_ANNOTATION.to_string(), json);
    }

    /// Whether the ConfigMap's record is still the copy [`ElectionRecord::mirror_into`] wrote.
    fn is_mirror(cm: &ConfigMap) -> bool {
        cm.metadata.annotations.as_ref().is_some_and(|a| {
            a.get(MIRROR_ANNOTATION).is_some()
                && a.get(MIRROR_ANNOTATION) == a.get(LEADER_ANNOTATION)
        })
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

/// What a standby compares between attempts, as client-go compares the MultiLock's raw record:
/// the ConfigMap's annotation text and the Lease's record.
type Observed = (Option<String>, Option<RecordKey>);

/// One replica's side of the election.
///
/// The lock is client-go's `ConfigMapsLeases` MultiLock, the one FLUO's operator uses: a
/// ConfigMap (primary, its record in annotation [`LEADER_ANNOTATION`]) and a Lease (secondary)
/// of the same name. Both are read (ConfigMap first), both written with the same record
/// (ConfigMap first), and two different holders mean [`UNKNOWN_LEADER`], so FLUO and we take
/// turns with no wait once the other has released. Stricter than client-go in one place: the
/// Lease is updated with the resourceVersion it was read at (client-go reads it again and
/// overwrites), so a Lease-only replica (an older version of ours) is excluded too.
pub struct Elector {
    leases: Api<Lease>,
    config_maps: Api<ConfigMap>,
    name: String,
    identity: String,
    timing: LeaseTiming,
    field_manager: String,
    observed: Option<(Observed, Instant)>,
    /// Both objects as our last successful write left them, while we hold them.
    written: Option<(ConfigMap, Lease)>,
    /// Annotations every acquire and renewal writes on the Lease (the operator's published
    /// settings): part of the same update, so they cost no extra request.
    annotations: Vec<(String, String)>,
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the lock (acquired or renewed); the attempt started at this instant.
    Held(Instant),
    /// Someone else holds it.
    Other(String),
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn named(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        ..Default::default()
    }
}

impl Elector {
    /// An elector for the lock `name` (ConfigMap and Lease) in `namespace` as `identity`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: LeaseTiming,
        field_manager: &str,
    ) -> Self {
        Elector {
            leases: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client, namespace),
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

    fn observe(&mut self, key: Observed, at: Instant) -> Instant {
        match &self.observed {
            Some((k, t)) if *k == key => *t,
            _ => {
                self.observed = Some((key, at));
                at
            }
        }
    }

    /// Remembers both objects a successful write returned, if they name us.
    fn wrote(&mut self, cm: ConfigMap, lease: Lease, t0: Instant) {
        let raw = ElectionRecord::from_config_map(&cm).ok();
        let spec = lease.spec.clone().unwrap_or_default();
        self.observe((raw.map(|r| r.1), Some(record_key(&spec))), t0);
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        self.written = ours.then_some((cm, lease));
    }

    fn record(&self, now: Timestamp) -> ElectionRecord {
        ElectionRecord {
            holder_identity: self.identity.clone(),
            lease_duration_seconds: self.timing.lease_duration.as_secs().min(i32::MAX as u64)
                as i64,
            acquire_time: Some(now),
            renew_time: Some(now),
            leader_transitions: 0,
        }
    }

    /// Renews from the objects we last wrote, without reading them first. `None`: nothing to
    /// renew from, or one changed since (409), so the caller reads both.
    async fn renew_written(&mut self, t0: Instant) -> Option<anyhow::Result<Attempt>> {
        let (mut cm, mut lease) = self.written.take()?;
        let (mut rec, _) = ElectionRecord::from_config_map(&cm).ok()?;
        rec.renew_time = Some(Timestamp::now());
        rec.put_into(&mut cm);
        // The resourceVersions are those of our writes: any write since is a 409.
        let pp = self.post_params();
        let cm = match self.config_maps.replace(&self.name, &pp, &cm).await {
            Ok(cm) => cm,
            Err(e) if is_conflict(&e) => return None,
            Err(e) => return Some(Err(e.into())),
        };
        lease.spec = Some(rec.to_lease(lease.spec.take().unwrap_or_default()));
        self.annotate(&mut lease);
        match self.leases.replace(&self.name, &pp, &lease).await {
            Ok(lease) => {
                self.wrote(cm, lease, t0);
                Some(Ok(Attempt::Held(t0)))
            }
            Err(e) if is_conflict(&e) => None,
            Err(e) => Some(Err(e.into())),
        }
    }

    /// Acquires the lock if it is free, expired or ours, and renews it if ours.
    pub async fn try_acquire_or_renew(&mut self) -> anyhow::Result<Attempt> {
        let t0 = Instant::now();
        if let Some(r) = self.renew_written(t0).await {
            return r;
        }
        let now = Timestamp::now();
        // MultiLock.Get: the primary (ConfigMap), then the secondary (Lease).
        let cm = self.config_maps.get_opt(&self.name).await?;
        let lease = self.leases.get_opt(&self.name).await?;
        let cm = match (cm, &lease) {
            (Some(cm), _) => cm,
            (None, None) => return self.create_both(now, t0).await,
            (None, Some(lease)) => {
                // Only the Lease (written by a version of ours before the ConfigMap half):
                // add the ConfigMap with the Lease's own record, claiming nothing, so FLUO
                // finds one holder (or none) instead of failing to create the pair.
                let rec = ElectionRecord::from_lease(&lease.spec.clone().unwrap_or_default());
                let mut cm = ConfigMap {
                    metadata: named(&self.name),
                    ..Default::default()
                };
                rec.mirror_into(&mut cm);
                match self.config_maps.create(&self.post_params(), &cm).await {
                    Ok(cm) => {
                        info!(lock = %self.name, holder = %rec.holder_identity, "created the ConfigMap half of the leader election lock (FLUO's ConfigMapsLeases lock)");
                        cm
                    }
                    Err(e) if is_conflict(&e) => return Ok(Attempt::Other(rec.holder_identity)),
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let lease_spec = lease.as_ref().map(|l| l.spec.clone().unwrap_or_default());
        let lease_rec = lease_spec.as_ref().map(ElectionRecord::from_lease);
        let mut cm = cm;
        if let Some(lr) = lease_rec
            .as_ref()
            .filter(|_| ElectionRecord::is_mirror(&cm))
        {
            // The copy follows the Lease (a Lease-only holder renewed or released), with the
            // resourceVersion read: a 409 means someone wrote the ConfigMap since.
            let (copied, _) = ElectionRecord::from_config_map(&cm)?;
            if serde_json::to_string(lr)? != serde_json::to_string(&copied)? {
                lr.mirror_into(&mut cm);
                cm = match self
                    .config_maps
                    .replace(&self.name, &self.post_params(), &cm)
                    .await
                {
                    Ok(cm) => cm,
                    Err(e) if is_conflict(&e) => {
                        return Ok(Attempt::Other(lr.holder_identity.clone()));
                    }
                    Err(e) => return Err(e.into()),
                };
            }
        }
        let (cm_rec, cm_raw) = ElectionRecord::from_config_map(&cm)?;
        // The primary's record, or UnknownLeader when the two name different holders (a
        // missing Lease: a ConfigMap-only lock of an older client-go; its record counts).
        let mut rec = cm_rec.clone();
        if lease_rec
            .as_ref()
            .is_some_and(|l| l.holder_identity != cm_rec.holder_identity)
        {
            rec.holder_identity = UNKNOWN_LEADER.to_string();
        }
        let observed_at = self.observe((Some(cm_raw), lease_spec.as_ref().map(record_key)), t0);
        let holder = rec.holder_identity.clone();
        let mine = holder == self.identity;
        if !holder.is_empty() && !mine {
            // The longest duration either object names: FLUO writes 90 s and renews every
            // 30 s, so our own 15 s would take the lock from a live FLUO.
            let held_for = [
                Some(cm_rec.lease_duration_seconds),
                lease_rec.as_ref().map(|r| r.lease_duration_seconds),
            ]
            .into_iter()
            .flatten()
            .filter(|d| *d > 0)
            .max()
            .map(|d| Duration::from_secs(d as u64))
            .unwrap_or(self.timing.lease_duration);
            if t0 < observed_at + held_for {
                return Ok(Attempt::Other(holder));
            }
            info!(lock = %self.name, previous = %holder, "the lease expired; taking it over");
        }
        let transitions = rec.leader_transitions;
        let new = ElectionRecord {
            acquire_time: if mine {
                rec.acquire_time.or(Some(now))
            } else {
                Some(now)
            },
            leader_transitions: if mine || holder.is_empty() && transitions == 0 {
                transitions
            } else {
                transitions.saturating_add(1)
            },
            ..self.record(now)
        };
        self.write_both(cm, lease, &new, &holder, t0).await
    }

    /// Creates both objects naming us (client-go's Create when the primary is missing).
    async fn create_both(&mut self, now: Timestamp, t0: Instant) -> anyhow::Result<Attempt> {
        let rec = self.record(now);
        let mut cm = ConfigMap {
            metadata: named(&self.name),
            ..Default::default()
        };
        rec.put_into(&mut cm);
        let pp = self.post_params();
        // An AlreadyExists (409) means another replica created it first: we stand by
        // (client-go would go on and create the Lease, ending with two holders).
        let cm = match self.config_maps.create(&pp, &cm).await {
            Ok(cm) => cm,
            Err(e) if is_conflict(&e) => return Ok(Attempt::Other(String::new())),
            Err(e) => return Err(e.into()),
        };
        let mut lease = Lease {
            metadata: named(&self.name),
            spec: Some(rec.to_lease(LeaseSpec::default())),
        };
        self.annotate(&mut lease);
        match self.leases.create(&pp, &lease).await {
            Ok(lease) => {
                self.wrote(cm, lease, t0);
                Ok(Attempt::Held(t0))
            }
            Err(e) if is_conflict(&e) => Ok(Attempt::Other(String::new())),
            Err(e) => Err(e.into()),
        }
    }

    /// MultiLock.Update: the ConfigMap, then the Lease (created if missing), each with the
    /// resourceVersion it was read at. `holder`: whom we read as holder, for a 409.
    async fn write_both(
        &mut self,
        mut cm: ConfigMap,
        lease: Option<Lease>,
        rec: &ElectionRecord,
        holder: &str,
        t0: Instant,
    ) -> anyhow::Result<Attempt> {
        let pp = self.post_params();
        rec.put_into(&mut cm);
        let cm = match self.config_maps.replace(&self.name, &pp, &cm).await {
            Ok(cm) => cm,
            Err(e) if is_conflict(&e) => return Ok(Attempt::Other(holder.to_string())),
            Err(e) => return Err(e.into()),
        };
        let Some(mut lease) = lease else {
            let mut lease = Lease {
                metadata: named(&self.name),
                spec: Some(rec.to_lease(LeaseSpec::default())),
            };
            self.annotate(&mut lease);
            return match self.leases.create(&pp, &lease).await {
                Ok(lease) => {
                    self.wrote(cm, lease, t0);
                    Ok(Attempt::Held(t0))
                }
                Err(e) if is_conflict(&e) => Ok(Attempt::Other(holder.to_string())),
                Err(e) => Err(e.into()),
            };
        };
        let read = record_key(&lease.spec.clone().unwrap_or_default());
        // Twice at most: a 409 from a write that left the record alone (an admin's
        // annotation) is retried on the fresh Lease; any other change means someone else.
        for _ in 0..2 {
            lease.spec = Some(rec.to_lease(lease.spec.take().unwrap_or_default()));
            self.annotate(&mut lease);
            match self.leases.replace(&self.name, &pp, &lease).await {
                Ok(lease) => {
                    self.wrote(cm, lease, t0);
                    return Ok(Attempt::Held(t0));
                }
                Err(e) if is_conflict(&e) => match self.leases.get_opt(&self.name).await? {
                    Some(fresh) if record_key(&fresh.spec.clone().unwrap_or_default()) == read => {
                        lease = fresh
                    }
                    _ => break,
                },
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Attempt::Other(holder.to_string()))
    }

    /// [`Elector::release`] within 5 s, logging the outcome with `reason` (a lock not
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

    /// Empties whichever of the two objects names us (client-go's release: holder emptied,
    /// duration 1 s, the transitions kept), the ConfigMap first.
    pub async fn release(&mut self) -> anyhow::Result<()> {
        self.written = None;
        let pp = self.post_params();
        'attempt: for _ in 0..3 {
            let cm = self.config_maps.get_opt(&self.name).await?;
            let lease = self.leases.get_opt(&self.name).await?;
            let now = Timestamp::now();
            let released = |transitions| ElectionRecord {
                holder_identity: String::new(),
                lease_duration_seconds: 1,
                acquire_time: Some(now),
                renew_time: Some(now),
                leader_transitions: transitions,
            };
            if let Some(mut cm) = cm {
                let (rec, _) = ElectionRecord::from_config_map(&cm)?;
                if rec.holder_identity == self.identity {
                    released(rec.leader_transitions).put_into(&mut cm);
                    match self.config_maps.replace(&self.name, &pp, &cm).await {
                        Ok(_) => {}
                        Err(e) if is_conflict(&e) => continue 'attempt,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            let Some(mut lease) = lease else {
                return Ok(());
            };
            let spec = lease.spec.take().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(());
            }
            let rec = released(spec.lease_transitions.unwrap_or(0).into());
            lease.spec = Some(rec.to_lease(spec));
            match self.leases.replace(&self.name, &pp, &lease).await {
                Ok(_) => return Ok(()),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The ConfigMap's record must read as Go's `json.Unmarshal` of client-go's
    /// `LeaderElectionRecord` expects, and ours must read what Go's `json.Marshal` wrote.
    #[test]
    fn the_config_map_record_is_gos_json() {
        let t: Timestamp = "2026-12-06T20:00:30.123456Z".parse().unwrap();
        let rec = ElectionRecord {
            holder_identity: "op-1".into(),
            lease_duration_seconds: 15,
            acquire_time: Some(t),
            renew_time: None,
            leader_transitions: 2,
        };
        let json = serde_json::to_string(&rec).unwrap();
        // Go's field order, whole seconds, a zero time as null.
        assert_eq!(
            json,
            r#"{"holderIdentity":"op-1","leaseDurationSeconds":15,"acquireTime":"2026-12-06T20:00:30Z","renewTime":null,"leaderTransitions":2}"#
        );
        // FLUO's, with a field newer client-go adds and one missing: both are fine.
        let go = r#"{"holderIdentity":"fluo","leaseDurationSeconds":90,"acquireTime":"2026-12-06T20:00:00Z","renewTime":"2026-12-06T20:00:30Z","strategy":"x"}"#;
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "lock", "annotations": {LEADER_ANNOTATION: go}}
        }))
        .unwrap();
        let (rec, raw) = ElectionRecord::from_config_map(&cm).unwrap();
        assert_eq!(raw, go);
        assert_eq!(rec.holder_identity, "fluo");
        assert_eq!(rec.lease_duration_seconds, 90);
        assert_eq!(rec.leader_transitions, 0);
        assert_eq!(
            rec.renew_time,
            Some("2026-12-06T20:00:30Z".parse().unwrap())
        );
        // No annotation: an empty record, as client-go reads it; garbage is an error.
        let empty = ConfigMap::default();
        assert_eq!(
            ElectionRecord::from_config_map(&empty).unwrap(),
            (ElectionRecord::default(), String::new())
        );
        let mut bad = cm.clone();
        bad.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(LEADER_ANNOTATION.into(), "not json".into());
        assert!(ElectionRecord::from_config_map(&bad).is_err());
        // A Lease's record and back keeps the times to the microsecond.
        let spec = rec.to_lease(LeaseSpec::default());
        assert_eq!(ElectionRecord::from_lease(&spec), rec);
    }
}
