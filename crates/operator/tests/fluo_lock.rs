//! Switching between FLUO's operator and ours, both ways, on the sandbox under deploy/'s RBAC.
//!
//! FLUO v0.10's operator elects its leader with client-go v0.27's `leaderelection` over the
//! `ConfigMapsLeases` lock. [`go`] reproduces that code line by line (the MultiLock of a
//! ConfigMap lock and a Lease lock, `tryAcquireOrRenew`, the jittered acquire loop, the renew
//! loop and `release`), with FLUO's timings scaled down from 90 s / 60 s / 30 s to 3 s / 2 s /
//! 1 s. Our operator runs with the fleet's fast timings (3 s / 2 s / 250 ms). A monitor checks
//! that the two never lead at once.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::PostParams;
use sandbox::Sandbox;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const LOCK: &str = operator::DEFAULT_LEASE_NAME;
const NS: &str = sandbox::identity::NAMESPACE;

/// A line-by-line reproduction of client-go v0.27.4's leader election (what FLUO v0.10 links):
/// `tools/leaderelection/leaderelection.go` and `resourcelock/{configmaplock,leaselock,
/// multilock}.go`. Errors are kube's, classified as apimachinery's `IsNotFound` and
/// `IsAlreadyExists` do (by the Status reason).
mod go {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    use k8s_openapi::jiff::Timestamp;
    use rand::Rng;
    use serde_json::Value;

    pub const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";
    pub const UNKNOWN_LEADER: &str = "leaderelection.k8s.io/unknown";

    pub type Error = kube::Error;

    pub fn is_not_found(e: &Error) -> bool {
        matches!(e, kube::Error::Api(s) if s.reason == "NotFound")
    }

    pub fn is_already_exists(e: &Error) -> bool {
        matches!(e, kube::Error::Api(s) if s.reason == "AlreadyExists")
    }

    /// What klog would print for the error: the Status message, as client-go's errors do.
    pub fn message(e: &Error) -> String {
        match e {
            kube::Error::Api(s) => s.message.clone(),
            e => e.to_string(),
        }
    }

    /// `resourcelock.LeaderElectionRecord`. Times are `metav1.Time`: `None` is Go's zero time.
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct Record {
        pub holder_identity: String,
        pub lease_duration_seconds: i64,
        pub acquire_time: Option<Timestamp>,
        pub renew_time: Option<Timestamp>,
        pub leader_transitions: i64,
    }

    fn time_json(t: &Option<Timestamp>) -> Value {
        // metav1.Time.MarshalJSON: null when zero, else RFC 3339 in seconds, UTC.
        t.map_or(Value::Null, |t| {
            json!(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        })
    }

    impl Record {
        /// json.Marshal: the struct's fields in order, none omitted.
        pub fn marshal(&self) -> Vec<u8> {
            format!(
                r#"{{"holderIdentity":{},"leaseDurationSeconds":{},"acquireTime":{},"renewTime":{},"leaderTransitions":{}}}"#,
                json!(self.holder_identity),
                self.lease_duration_seconds,
                time_json(&self.acquire_time),
                time_json(&self.renew_time),
                self.leader_transitions
            )
            .into_bytes()
        }

        /// json.Unmarshal into the struct: missing fields and nulls stay zero; a type
        /// mismatch is an error.
        pub fn unmarshal(raw: &[u8]) -> Result<Record, String> {
            let v: Value = serde_json::from_slice(raw).map_err(|e| e.to_string())?;
            let obj = v.as_object().ok_or("not an object")?;
            let mut r = Record::default();
            let int = |k: &str| -> Result<i64, String> {
                match obj.get(k) {
                    None | Some(Value::Null) => Ok(0),
                    Some(v) => v.as_i64().ok_or(format!("{k}: not a number")),
                }
            };
            let time = |k: &str| -> Result<Option<Timestamp>, String> {
                match obj.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => s.parse().map(Some).map_err(|e| format!("{e}")),
                    Some(_) => Err(format!("{k}: not a time")),
                }
            };
            if let Some(h) = obj.get("holderIdentity").filter(|v| !v.is_null()) {
                r.holder_identity = h.as_str().ok_or("holderIdentity: not a string")?.into();
            }
            r.lease_duration_seconds = int("leaseDurationSeconds")?;
            r.acquire_time = time("acquireTime")?;
            r.renew_time = time("renewTime")?;
            r.leader_transitions = int("leaderTransitions")?;
            Ok(r)
        }

        /// LeaseSpecToLeaderElectionRecord.
        fn from_lease(spec: &LeaseSpec) -> Record {
            Record {
                holder_identity: spec.holder_identity.clone().unwrap_or_default(),
                lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0).into(),
                acquire_time: spec.acquire_time.as_ref().map(|t| t.0),
                renew_time: spec.renew_time.as_ref().map(|t| t.0),
                leader_transitions: spec.lease_transitions.unwrap_or(0).into(),
            }
        }

        /// LeaderElectionRecordToLeaseSpec: the whole spec (a zero MicroTime marshals as null).
        fn to_lease(&self) -> LeaseSpec {
            LeaseSpec {
                holder_identity: Some(self.holder_identity.clone()),
                lease_duration_seconds: Some(self.lease_duration_seconds as i32),
                acquire_time: self.acquire_time.map(MicroTime),
                renew_time: self.renew_time.map(MicroTime),
                lease_transitions: Some(self.leader_transitions as i32),
                ..Default::default()
            }
        }
    }

    fn meta(name: &str, ns: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        }
    }

    /// `configMapLock`.
    pub struct ConfigMapLock {
        pub api: Api<ConfigMap>,
        pub name: String,
        pub ns: String,
        cm: Option<ConfigMap>,
    }

    #[derive(Debug)]
    pub enum LockError {
        Api(Error),
        Other(String),
    }

    impl From<Error> for LockError {
        fn from(e: Error) -> Self {
            LockError::Api(e)
        }
    }

    impl LockError {
        pub fn is_not_found(&self) -> bool {
            matches!(self, LockError::Api(e) if is_not_found(e))
        }
        pub fn is_already_exists(&self) -> bool {
            matches!(self, LockError::Api(e) if is_already_exists(e))
        }
        pub fn message(&self) -> String {
            match self {
                LockError::Api(e) => message(e),
                LockError::Other(s) => s.clone(),
            }
        }
    }

    impl ConfigMapLock {
        pub fn new(client: &kube::Client, ns: &str, name: &str) -> Self {
            ConfigMapLock {
                api: Api::namespaced(client.clone(), ns),
                name: name.into(),
                ns: ns.into(),
                cm: None,
            }
        }

        pub async fn get(&mut self) -> Result<(Record, Vec<u8>), LockError> {
            let cm = self.api.get(&self.name).await?;
            let raw = cm
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(LEADER_ANNOTATION))
                .cloned();
            self.cm = Some(cm);
            let mut record = Record::default();
            let bytes = raw.clone().unwrap_or_default().into_bytes();
            if raw.is_some() {
                record = Record::unmarshal(&bytes).map_err(LockError::Other)?;
            }
            Ok((record, bytes))
        }

        pub async fn create(&mut self, ler: &Record) -> Result<(), LockError> {
            let mut m = meta(&self.name, &self.ns);
            m.annotations = Some(
                [(
                    LEADER_ANNOTATION.to_string(),
                    String::from_utf8(ler.marshal()).unwrap(),
                )]
                .into(),
            );
            let cm = ConfigMap {
                metadata: m,
                ..Default::default()
            };
            // Go assigns the typed client's result (an empty object on error).
            match self.api.create(&PostParams::default(), &cm).await {
                Ok(cm) => {
                    self.cm = Some(cm);
                    Ok(())
                }
                Err(e) => {
                    self.cm = Some(ConfigMap::default());
                    Err(e.into())
                }
            }
        }

        pub async fn update(&mut self, ler: &Record) -> Result<(), LockError> {
            let Some(cm) = self.cm.as_mut() else {
                return Err(LockError::Other(
                    "configmap not initialized, call get or create first".into(),
                ));
            };
            cm.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(
                    LEADER_ANNOTATION.to_string(),
                    String::from_utf8(ler.marshal()).unwrap(),
                );
            // The cached object carries the resourceVersion of the last Get/Create/Update.
            let cm = self
                .api
                .replace(&self.name, &PostParams::default(), cm)
                .await?;
            self.cm = Some(cm);
            Ok(())
        }
    }

    /// `LeaseLock`.
    pub struct LeaseLock {
        pub api: Api<Lease>,
        pub name: String,
        pub ns: String,
        lease: Option<Lease>,
    }

    impl LeaseLock {
        pub fn new(client: &kube::Client, ns: &str, name: &str) -> Self {
            LeaseLock {
                api: Api::namespaced(client.clone(), ns),
                name: name.into(),
                ns: ns.into(),
                lease: None,
            }
        }

        pub async fn get(&mut self) -> Result<(Record, Vec<u8>), LockError> {
            let lease = self.api.get(&self.name).await?;
            let record = Record::from_lease(&lease.spec.clone().unwrap_or_default());
            self.lease = Some(lease);
            let bytes = record.marshal();
            Ok((record, bytes))
        }

        pub async fn create(&mut self, ler: &Record) -> Result<(), LockError> {
            let lease = Lease {
                metadata: meta(&self.name, &self.ns),
                spec: Some(ler.to_lease()),
            };
            match self.api.create(&PostParams::default(), &lease).await {
                Ok(l) => {
                    self.lease = Some(l);
                    Ok(())
                }
                Err(e) => {
                    self.lease = Some(Lease::default());
                    Err(e.into())
                }
            }
        }

        pub async fn update(&mut self, ler: &Record) -> Result<(), LockError> {
            let Some(lease) = self.lease.as_mut() else {
                return Err(LockError::Other(
                    "lease not initialized, call get or create first".into(),
                ));
            };
            lease.spec = Some(ler.to_lease());
            let lease = self
                .api
                .replace(&self.name, &PostParams::default(), lease)
                .await?;
            self.lease = Some(lease);
            Ok(())
        }
    }

    /// The lock a FLUO replica uses: `configmapsleases` (the MultiLock), or the
    /// `configmaps` lock alone of client-go before v0.24.
    #[allow(clippy::large_enum_variant)] // one per replica
    pub enum Lock {
        Multi {
            primary: ConfigMapLock,
            secondary: LeaseLock,
            identity: String,
        },
        ConfigMap {
            lock: ConfigMapLock,
            identity: String,
        },
        /// The `leases` lock alone: what older versions of ours did.
        Lease { lock: LeaseLock, identity: String },
    }

    impl Lock {
        pub fn identity(&self) -> &str {
            match self {
                Lock::Multi { identity, .. }
                | Lock::ConfigMap { identity, .. }
                | Lock::Lease { identity, .. } => identity,
            }
        }

        /// MultiLock.Get.
        pub async fn get(&mut self) -> Result<(Record, Vec<u8>), LockError> {
            match self {
                Lock::ConfigMap { lock, .. } => lock.get().await,
                Lock::Lease { lock, .. } => lock.get().await,
                Lock::Multi {
                    primary,
                    secondary,
                    identity,
                } => {
                    let (mut primary_rec, mut primary_raw) = primary.get().await?;
                    let (secondary_rec, secondary_raw) = match secondary.get().await {
                        Ok(r) => r,
                        Err(e) => {
                            // Lock is held by old client
                            if e.is_not_found() && primary_rec.holder_identity != *identity {
                                return Ok((primary_rec, primary_raw));
                            }
                            return Err(e);
                        }
                    };
                    if primary_rec.holder_identity != secondary_rec.holder_identity {
                        primary_rec.holder_identity = UNKNOWN_LEADER.into();
                        primary_raw = primary_rec.marshal();
                    }
                    // ConcatRawRecord
                    let mut raw = primary_raw;
                    raw.push(b',');
                    raw.extend(secondary_raw);
                    Ok((primary_rec, raw))
                }
            }
        }

        /// MultiLock.Create.
        pub async fn create(&mut self, ler: &Record) -> Result<(), LockError> {
            match self {
                Lock::ConfigMap { lock, .. } => lock.create(ler).await,
                Lock::Lease { lock, .. } => lock.create(ler).await,
                Lock::Multi {
                    primary, secondary, ..
                } => {
                    if let Err(e) = primary.create(ler).await
                        && !e.is_already_exists()
                    {
                        return Err(e);
                    }
                    secondary.create(ler).await
                }
            }
        }

        /// MultiLock.Update.
        pub async fn update(&mut self, ler: &Record) -> Result<(), LockError> {
            match self {
                Lock::ConfigMap { lock, .. } => lock.update(ler).await,
                Lock::Lease { lock, .. } => lock.update(ler).await,
                Lock::Multi {
                    primary, secondary, ..
                } => {
                    primary.update(ler).await?;
                    match secondary.get().await {
                        Err(e) if e.is_not_found() => secondary.create(ler).await,
                        _ => secondary.update(ler).await,
                    }
                }
            }
        }
    }

    /// `LeaderElectionConfig`'s timings and `ReleaseOnCancel`.
    #[derive(Clone, Copy)]
    pub struct Config {
        pub lease_duration: Duration,
        pub renew_deadline: Duration,
        pub retry_period: Duration,
        pub release_on_cancel: bool,
    }

    /// FLUO's timings (90 s, 2/3 and 1/3 of it) divided by 30; FLUO does not set
    /// ReleaseOnCancel.
    pub const FLUO: Config = Config {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_secs(1),
        release_on_cancel: false,
    };

    /// `LeaderElector`'s bookkeeping.
    pub struct LeaderElector {
        pub lock: Lock,
        pub config: Config,
        observed_record: Record,
        observed_raw_record: Vec<u8>,
        observed_time: Instant,
        pub log: Arc<Mutex<Vec<(Instant, String)>>>,
    }

    impl LeaderElector {
        pub fn new(lock: Lock, config: Config) -> Self {
            LeaderElector {
                lock,
                config,
                observed_record: Record::default(),
                observed_raw_record: Vec::new(),
                observed_time: Instant::now(),
                log: Default::default(),
            }
        }

        fn klog(&self, line: String) {
            self.log.lock().unwrap().push((Instant::now(), line));
        }

        fn is_leader(&self) -> bool {
            self.observed_record.holder_identity == self.lock.identity()
        }

        fn set_observed_record(&mut self, r: &Record) {
            self.observed_record = r.clone();
            self.observed_time = Instant::now();
        }

        pub async fn try_acquire_or_renew(&mut self) -> bool {
            let now = Timestamp::now();
            let mut ler = Record {
                holder_identity: self.lock.identity().to_string(),
                lease_duration_seconds: self.config.lease_duration.as_secs() as i64,
                renew_time: Some(now),
                acquire_time: Some(now),
                leader_transitions: 0,
            };
            // 1. obtain or create the ElectionRecord
            let (old, old_raw) = match self.lock.get().await {
                Ok(r) => r,
                Err(e) => {
                    if !e.is_not_found() {
                        self.klog(format!(
                            "error retrieving resource lock {NS}/{LOCK}: {}",
                            e.message()
                        ));
                        return false;
                    }
                    if let Err(e) = self.lock.create(&ler).await {
                        self.klog(format!(
                            "error initially creating leader election record: {}",
                            e.message()
                        ));
                        return false;
                    }
                    self.set_observed_record(&ler);
                    return true;
                }
            };
            // 2. Record obtained, check the Identity & Time
            if self.observed_raw_record != old_raw {
                self.set_observed_record(&old);
                self.observed_raw_record = old_raw;
            }
            if !old.holder_identity.is_empty()
                && self.observed_time + self.config.lease_duration > Instant::now()
                && !self.is_leader()
            {
                return false;
            }
            // 3. We're going to try to update.
            if self.is_leader() {
                ler.acquire_time = old.acquire_time;
                ler.leader_transitions = old.leader_transitions;
            } else {
                ler.leader_transitions = old.leader_transitions + 1;
            }
            if let Err(e) = self.lock.update(&ler).await {
                self.klog(format!("Failed to update lock: {}", e.message()));
                return false;
            }
            self.set_observed_record(&ler);
            true
        }

        pub async fn release(&mut self) -> bool {
            if !self.is_leader() {
                return true;
            }
            let now = Timestamp::now();
            let ler = Record {
                leader_transitions: self.observed_record.leader_transitions,
                lease_duration_seconds: 1,
                renew_time: Some(now),
                acquire_time: Some(now),
                ..Default::default()
            };
            if let Err(e) = self.lock.update(&ler).await {
                self.klog(format!("Failed to release lock: {}", e.message()));
                return false;
            }
            self.set_observed_record(&ler);
            true
        }
    }

    /// wait.Jitter(d, 1.2).
    fn jitter(d: Duration) -> Duration {
        d + d.mul_f64(rand::rng().random_range(0.0..1.0) * 1.2)
    }

    /// A running `leaderelection.RunOrDie`.
    pub struct Replica {
        pub leading: Arc<AtomicBool>,
        /// tryAcquireOrRenew calls of the acquire loop.
        pub attempts: Arc<AtomicUsize>,
        pub acquired_at: Arc<Mutex<Option<Instant>>>,
        pub log: Arc<Mutex<Vec<(Instant, String)>>>,
        pub stop: CancellationToken,
        handle: tokio::task::JoinHandle<()>,
    }

    impl Replica {
        pub fn start(mut le: LeaderElector) -> Replica {
            let leading = Arc::new(AtomicBool::new(false));
            let attempts = Arc::new(AtomicUsize::new(0));
            let acquired_at = Arc::new(Mutex::new(None));
            let log = le.log.clone();
            let stop = CancellationToken::new();
            let (l, a, at, s) = (
                leading.clone(),
                attempts.clone(),
                acquired_at.clone(),
                stop.clone(),
            );
            let handle = tokio::spawn(async move {
                let cfg = le.config;
                // acquire: wait.JitterUntil(..., RetryPeriod, JitterFactor, sliding, ctx.Done())
                loop {
                    if s.is_cancelled() {
                        return;
                    }
                    a.fetch_add(1, Ordering::SeqCst);
                    if le.try_acquire_or_renew().await {
                        le.klog(format!("successfully acquired lease {NS}/{LOCK}"));
                        break;
                    }
                    tokio::select! {
                        _ = s.cancelled() => return,
                        _ = tokio::time::sleep(jitter(cfg.retry_period)) => {}
                    }
                }
                *at.lock().unwrap() = Some(Instant::now());
                l.store(true, Ordering::SeqCst);
                // renew: wait.Until(PollImmediateUntil(RetryPeriod, ..., RenewDeadline), RetryPeriod)
                'renew: loop {
                    let deadline = Instant::now() + cfg.renew_deadline;
                    loop {
                        let r = tokio::select! {
                            _ = s.cancelled() => break 'renew,
                            r = tokio::time::timeout_at(deadline, le.try_acquire_or_renew()) => r,
                        };
                        match r {
                            Ok(true) => break,
                            Ok(false) => {}
                            Err(_) => {
                                le.klog("failed to renew lease: timed out".into());
                                break 'renew;
                            }
                        }
                        tokio::select! {
                            _ = s.cancelled() => break 'renew,
                            _ = tokio::time::sleep(cfg.retry_period) => {}
                        }
                        if Instant::now() >= deadline {
                            le.klog("failed to renew lease: timed out".into());
                            break 'renew;
                        }
                    }
                    tokio::select! {
                        _ = s.cancelled() => break,
                        _ = tokio::time::sleep(cfg.retry_period) => {}
                    }
                }
                // OnStartedLeading's context is cancelled before the release.
                l.store(false, Ordering::SeqCst);
                if cfg.release_on_cancel {
                    le.release().await;
                }
            });
            Replica {
                leading,
                attempts,
                acquired_at,
                log,
                stop,
                handle,
            }
        }

        pub fn lines(&self) -> Vec<String> {
            self.log
                .lock()
                .unwrap()
                .iter()
                .map(|(_, l)| l.clone())
                .collect()
        }

        pub fn acquired_at(&self) -> Option<Instant> {
            *self.acquired_at.lock().unwrap()
        }

        pub async fn stop(self) {
            self.stop.cancel();
            tokio::time::timeout(Duration::from_secs(10), self.handle)
                .await
                .expect("the FLUO reproduction stops")
                .unwrap();
        }
    }
}

/// FLUO's operator (the reproduction), as deploy/'s operator service account.
fn fluo(sb: &Sandbox, identity: &str, config: go::Config) -> go::Replica {
    let client = sb.client_for(&sandbox::UserInfo::operator()).unwrap();
    let lock = go::Lock::Multi {
        primary: go::ConfigMapLock::new(&client, NS, LOCK),
        secondary: go::LeaseLock::new(&client, NS, LOCK),
        identity: identity.into(),
    };
    go::Replica::start(go::LeaderElector::new(lock, config))
}

/// Our operator as deploy/ runs it (its service account, FLUO's lock name), always
/// campaigning (no node needs it in these tests), with the fleet's fast timings.
fn ours(sb: &Sandbox, identity: &str) -> (Replica, operator::metrics::Metrics) {
    let mut cfg = operator::Config::new(NS, op_config(1));
    cfg.identity = identity.into();
    cfg.lease = fleet::fast_lease();
    cfg.release_lease_after_idle = None;
    let metrics = cfg.metrics.clone();
    let r = Replica::start_as(sb, &sandbox::UserInfo::operator(), cfg).expect("operator starts");
    (r, metrics)
}

/// Who leads, sampled every 20 ms: panics (at [`Exclusion::check`]) if both ever did at once.
struct Exclusion {
    both: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Exclusion {
    fn watch(ours: &[&operator::metrics::Metrics], fluo: &[Arc<AtomicBool>]) -> Exclusion {
        let both = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let ours: Vec<_> = ours.iter().map(|m| (*m).clone()).collect();
        let fluo = fluo.to_vec();
        let (b, s) = (both.clone(), stop.clone());
        tokio::spawn(async move {
            while !s.is_cancelled() {
                let n = ours.iter().filter(|m| m.is_leader()).count()
                    + fluo.iter().filter(|l| l.load(Ordering::SeqCst)).count();
                if n > 1 {
                    b.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Exclusion { both, stop }
    }

    fn check(self) {
        self.stop.cancel();
        assert_eq!(
            self.both.load(Ordering::SeqCst),
            0,
            "samples with two leaders at once"
        );
    }
}

async fn lock_objects(admin: &kube::Client) -> (Option<ConfigMap>, Option<Lease>) {
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), NS);
    let leases: Api<Lease> = Api::namespaced(admin.clone(), NS);
    (
        cms.get_opt(LOCK).await.unwrap(),
        leases.get_opt(LOCK).await.unwrap(),
    )
}

/// The holders the ConfigMap's record and the Lease name.
async fn holders(admin: &kube::Client) -> (Option<String>, Option<String>) {
    let (cm, lease) = lock_objects(admin).await;
    let cm_holder = cm.map(|cm| {
        let raw = cm.metadata.annotations.unwrap_or_default()[go::LEADER_ANNOTATION].clone();
        go::Record::unmarshal(raw.as_bytes())
            .expect("the ConfigMap's record parses as Go does")
            .holder_identity
    });
    let lease_holder = lease.map(|l| {
        l.spec
            .unwrap_or_default()
            .holder_identity
            .unwrap_or_default()
    });
    (cm_holder, lease_holder)
}

async fn wait_leading(m: &operator::metrics::Metrics, what: &str) -> Instant {
    wait_for(what, PATIENCE, || async {
        m.is_leader().then(Instant::now)
    })
    .await
}

/// The sandbox serves ConfigMaps as kube-apiserver does for this lock: an update with a stale
/// resourceVersion is a 409 Conflict, a second create a 409 AlreadyExists, the annotation
/// comes back byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_serves_the_config_map_lock_like_kube_apiserver() {
    let sb = sandbox().await;
    let admin = sb.client_as("admin").unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), NS);
    let raw = r#"{"holderIdentity":"fluo-1","leaseDurationSeconds":90,"acquireTime":"2026-12-06T20:00:00Z","renewTime":"2026-12-06T20:00:30Z","leaderTransitions":3}"#;
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": LOCK, "annotations": {go::LEADER_ANNOTATION: raw}}
    }))
    .unwrap();
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    let e = cms.create(&PostParams::default(), &cm).await.unwrap_err();
    assert!(go::is_already_exists(&e), "{e:?}");
    assert_eq!(
        go::message(&e),
        format!("configmaps \"{LOCK}\" already exists")
    );
    let got = cms.get(LOCK).await.unwrap();
    assert_eq!(
        got.metadata.annotations.as_ref().unwrap()[go::LEADER_ANNOTATION],
        raw
    );
    let mut first = got.clone();
    first
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(go::LEADER_ANNOTATION.into(), "{}".into());
    cms.replace(LOCK, &PostParams::default(), &first)
        .await
        .unwrap();
    // `got` still carries the first resourceVersion.
    let e = cms
        .replace(LOCK, &PostParams::default(), &got)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"),
        "{e:?}"
    );
    assert_eq!(
        created.metadata.resource_version,
        got.metadata.resource_version
    );
    let now = cms.get(LOCK).await.unwrap();
    assert_eq!(
        now.metadata.annotations.as_ref().unwrap()[go::LEADER_ANNOTATION],
        "{}"
    );
    let e = cms.get("nope").await.unwrap_err();
    assert!(go::is_not_found(&e), "{e:?}");
}

/// (a) Our operator leads, then shuts down and releases: FLUO's very first try acquires.
/// The sandbox starts with the Lease an older version of ours left (no ConfigMap): our
/// operator adds the ConfigMap half.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_ours_releases_fluo_acquires_on_its_first_try() {
    let sb = sandbox().await;
    let admin = sb.client_as("admin").unwrap();
    let leases: Api<Lease> = Api::namespaced(admin.clone(), NS);
    let released: Lease = serde_json::from_value(json!({
        "metadata": {"name": LOCK},
        "spec": {"holderIdentity": "", "leaseDurationSeconds": 1, "leaseTransitions": 4,
                 "acquireTime": "2026-12-06T19:00:00.000000Z", "renewTime": "2026-12-06T19:00:00.000000Z"}
    }))
    .unwrap();
    leases
        .create(&PostParams::default(), &released)
        .await
        .unwrap();

    let (op, m) = ours(&sb, "update-operator-new");
    wait_leading(&m, "our operator to lead").await;
    assert_eq!(
        holders(&admin).await,
        (
            Some("update-operator-new".into()),
            Some("update-operator-new".into())
        )
    );
    op.stop().await.unwrap();
    assert_eq!(
        holders(&admin).await,
        (Some(String::new()), Some(String::new()))
    );

    let started = Instant::now();
    let f = fluo(&sb, "fluo-1", go::FLUO);
    let acquired = wait_for("FLUO to lead", PATIENCE, || async { f.acquired_at() }).await;
    let lines = f.lines();
    println!(
        "FLUO acquired {:?} after it started, on try {}",
        acquired - started,
        f.attempts.load(Ordering::SeqCst)
    );
    assert_eq!(f.attempts.load(Ordering::SeqCst), 1, "{lines:#?}");
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("already exists") || l.contains("error")),
        "{lines:#?}"
    );
    // The first try runs at once (JitterUntil calls first, then waits): well within one
    // retry period.
    assert!(
        acquired - started < go::FLUO.retry_period,
        "{:?}",
        acquired - started
    );
    assert_eq!(
        holders(&admin).await,
        (Some("fluo-1".into()), Some("fluo-1".into()))
    );
    let (cm, lease) = lock_objects(&admin).await;
    let rec = go::Record::unmarshal(
        cm.unwrap().metadata.annotations.unwrap()[go::LEADER_ANNOTATION].as_bytes(),
    )
    .unwrap();
    assert_eq!(rec.lease_duration_seconds, 3);
    // The transitions go on from the old Lease's count: ours took it (5), FLUO took it (6).
    assert_eq!(rec.leader_transitions, 6, "{rec:?}");
    assert_eq!(lease.unwrap().spec.unwrap().lease_transitions, Some(6));
    f.stop().await;
}

/// (b) While one side holds the lock the other never acquires, both ways; (c) FLUO with
/// ReleaseOnCancel releases and our standby leads within one of its retry periods (jittered
/// by up to 1.5x); FLUO v0.10 itself does not release, and then our standby waits out FLUO's
/// lease, never less.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_side_waits_while_the_other_holds_and_takes_over_once_released() {
    let sb = sandbox().await;
    let admin = sb.client_as("admin").unwrap();
    let ours_retry = fleet::fast_lease().retry_period;

    // Ours holds; FLUO tries for several of its retry periods and several lease durations.
    let (op, m) = ours(&sb, "update-operator");
    wait_leading(&m, "our operator to lead").await;
    let f = fluo(&sb, "fluo-1", go::FLUO);
    let ex = Exclusion::watch(&[&m], std::slice::from_ref(&f.leading));
    let hold = go::FLUO.lease_duration * 3;
    tokio::time::sleep(hold).await;
    let tries = f.attempts.load(Ordering::SeqCst);
    println!("FLUO tried {tries} times in {hold:?} while ours held the lock");
    assert!(tries >= 3, "{tries}");
    assert!(f.acquired_at().is_none(), "{:#?}", f.lines());
    assert!(m.is_leader());
    assert!(
        !f.lines().iter().any(|l| l.contains("error")),
        "{:#?}",
        f.lines()
    );
    // Ours shuts down: FLUO's next try takes over.
    let released = Instant::now();
    op.stop().await.unwrap();
    let acquired = wait_for("FLUO to lead", PATIENCE, || async { f.acquired_at() }).await;
    println!(
        "FLUO led {:?} after ours began to shut down",
        acquired - released
    );
    assert!(
        acquired - released <= go::FLUO.retry_period.mul_f64(2.2) + Duration::from_millis(500),
        "{:?}",
        acquired - released
    );

    // FLUO holds (renewing every retry period); ours stands by for three FLUO lease durations.
    let (op, m) = ours(&sb, "update-operator");
    let ex2 = Exclusion::watch(&[&m], std::slice::from_ref(&f.leading));
    tokio::time::sleep(hold).await;
    assert!(!m.is_leader(), "ours took the lock from a live FLUO");
    assert!(f.leading.load(Ordering::SeqCst));
    assert_eq!(
        holders(&admin).await,
        (Some("fluo-1".into()), Some("fluo-1".into()))
    );

    // FLUO v0.10 stops without releasing: ours waits out FLUO's lease (3 s here, 90 s in
    // FLUO), counted from the last change it saw.
    let stopped = Instant::now();
    f.stop().await;
    let led = wait_leading(&m, "ours to lead after FLUO's lease ran out").await;
    println!(
        "ours led {:?} after FLUO stopped without releasing",
        led - stopped
    );
    assert!(
        led - stopped >= go::FLUO.lease_duration - go::FLUO.retry_period,
        "{:?}",
        led - stopped
    );
    ex.check();
    ex2.check();

    // FLUO with ReleaseOnCancel (client-go's option) takes over, then releases.
    op.stop().await.unwrap();
    let f = fluo(
        &sb,
        "fluo-2",
        go::Config {
            release_on_cancel: true,
            ..go::FLUO
        },
    );
    wait_for("FLUO to lead", PATIENCE, || async { f.acquired_at() }).await;
    let (op, m) = ours(&sb, "update-operator");
    let ex = Exclusion::watch(&[&m], std::slice::from_ref(&f.leading));
    tokio::time::sleep(ours_retry * 8).await;
    assert!(!m.is_leader());
    let released = Instant::now();
    f.stop().await;
    let led = wait_leading(&m, "ours to lead after FLUO released").await;
    println!(
        "ours led {:?} after FLUO released (our retry period: {ours_retry:?})",
        led - released
    );
    // Our next jittered retry (at most 1.5 retry periods), plus the requests and the leader's
    // first list before it reports leading, on a machine shared with other builds.
    assert!(
        led - released <= ours_retry.mul_f64(1.5) + Duration::from_millis(500),
        "{:?}",
        led - released
    );
    ex.check();
    op.stop().await.unwrap();
}

/// Both start at once on an empty namespace, twice each side: exactly one leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_from_nothing_exactly_one_leads() {
    let sb = sandbox().await;
    let (a, ma) = ours(&sb, "update-operator-a");
    let f1 = fluo(&sb, "fluo-1", go::FLUO);
    let (b, mb) = ours(&sb, "update-operator-b");
    let f2 = fluo(&sb, "fluo-2", go::FLUO);
    let ex = Exclusion::watch(&[&ma, &mb], &[f1.leading.clone(), f2.leading.clone()]);
    let leaders = || {
        [ma.is_leader(), mb.is_leader()]
            .into_iter()
            .chain([&f1, &f2].map(|f| f.leading.load(Ordering::SeqCst)))
            .filter(|l| *l)
            .count()
    };
    // client-go itself may need a lease duration to settle a race on an empty namespace
    // (its Create goes on past an AlreadyExists ConfigMap); no one leads twice meanwhile.
    wait_for("one leader", PATIENCE, || async {
        (leaders() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(go::FLUO.lease_duration).await;
    assert_eq!(leaders(), 1, "{:#?} {:#?}", f1.lines(), f2.lines());
    ex.check();
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    f1.stop().await;
    f2.stop().await;
}

/// (d) An old FLUO lock: client-go before v0.24 with the ConfigMap lock alone (no Lease).
/// Ours respects it while it is renewed, takes over only after it has not changed for its
/// lease duration, and then adds the Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_config_map_only_lock_is_respected() {
    let sb = sandbox().await;
    let admin = sb.client_as("admin").unwrap();
    let client = sb.client_for(&sandbox::UserInfo::operator()).unwrap();
    let old = go::Replica::start(go::LeaderElector::new(
        go::Lock::ConfigMap {
            lock: go::ConfigMapLock::new(&client, NS, LOCK),
            identity: "fluo-old".into(),
        },
        go::FLUO,
    ));
    wait_for("the old FLUO to lead", PATIENCE, || async {
        old.acquired_at()
    })
    .await;
    assert_eq!(holders(&admin).await, (Some("fluo-old".into()), None));

    let (op, m) = ours(&sb, "update-operator");
    let ex = Exclusion::watch(&[&m], std::slice::from_ref(&old.leading));
    tokio::time::sleep(go::FLUO.lease_duration * 3).await;
    assert!(!m.is_leader(), "ours took the lock from a live old FLUO");
    assert_eq!(holders(&admin).await, (Some("fluo-old".into()), None));

    let stopped = Instant::now();
    old.stop().await;
    let led = wait_leading(&m, "ours to lead after the old lock ran out").await;
    println!("ours led {:?} after the old FLUO stopped", led - stopped);
    assert!(
        led - stopped >= go::FLUO.lease_duration - go::FLUO.retry_period,
        "{:?}",
        led - stopped
    );
    ex.check();
    assert_eq!(
        holders(&admin).await,
        (
            Some("update-operator".into()),
            Some("update-operator".into())
        )
    );
    op.stop().await.unwrap();
}

/// The gap this lock closes, as the reproduction shows it: a released Lease and no ConfigMap
/// (what ours left when it used the Lease alone). FLUO's first try creates the ConfigMap, fails
/// on the Lease, and FLUO then waits out its lease on an "unknown" leader (about 170 s with
/// FLUO's real timings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_alone_keeps_fluo_waiting() {
    let sb = sandbox().await;
    let admin = sb.client_as("admin").unwrap();
    let leases: Api<Lease> = Api::namespaced(admin.clone(), NS);
    let released: Lease = serde_json::from_value(json!({
        "metadata": {"name": LOCK},
        "spec": {"holderIdentity": "", "leaseDurationSeconds": 1, "leaseTransitions": 1}
    }))
    .unwrap();
    leases
        .create(&PostParams::default(), &released)
        .await
        .unwrap();
    let started = Instant::now();
    let f = fluo(&sb, "fluo-1", go::FLUO);
    let acquired = wait_for("FLUO to lead at last", PATIENCE, || async {
        f.acquired_at()
    })
    .await;
    let waited = acquired - started;
    println!(
        "FLUO led {waited:?} after it started ({} tries); {:?} scaled to FLUO's timings",
        f.attempts.load(Ordering::SeqCst),
        waited * 30
    );
    let lines = f.lines();
    assert_eq!(
        lines[0],
        format!(
            "error initially creating leader election record: leases.coordination.k8s.io \"{LOCK}\" already exists"
        ),
        "{lines:#?}"
    );
    assert!(waited >= go::FLUO.lease_duration, "{waited:?}");
    f.stop().await;
}

/// An older version of ours (the Lease alone, released on shutdown: client-go's Lease lock with
/// ReleaseOnCancel) and this one, as during a rolling update: each waits while the other
/// holds, and this one leads at its next try once the old one released, as the ConfigMap it
/// added for FLUO follows the Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_lease_only_version_and_ours_take_turns() {
    let sb = sandbox().await;
    let admin = sb.client_as("admin").unwrap();
    let client = sb.client_for(&sandbox::UserInfo::operator()).unwrap();
    let ours_retry = fleet::fast_lease().retry_period;
    let old_version = |identity: &str| {
        go::Replica::start(go::LeaderElector::new(
            go::Lock::Lease {
                lock: go::LeaseLock::new(&client, NS, LOCK),
                identity: identity.into(),
            },
            go::Config {
                release_on_cancel: true,
                ..go::FLUO
            },
        ))
    };
    let old = old_version("update-operator-old");
    wait_for("the old version to lead", PATIENCE, || async {
        old.acquired_at()
    })
    .await;
    let (op, m) = ours(&sb, "update-operator-new");
    let ex = Exclusion::watch(&[&m], std::slice::from_ref(&old.leading));
    tokio::time::sleep(go::FLUO.lease_duration * 3).await;
    assert!(
        !m.is_leader(),
        "ours took the lock from a live older version"
    );
    // The ConfigMap ours added names the Lease's holder, so FLUO would wait too.
    assert_eq!(
        holders(&admin).await,
        (
            Some("update-operator-old".into()),
            Some("update-operator-old".into())
        )
    );
    let released = Instant::now();
    old.stop().await;
    let led = wait_leading(&m, "ours to lead after the old version released").await;
    println!(
        "ours led {:?} after the older version released (our retry period: {ours_retry:?})",
        led - released
    );
    assert!(
        led - released <= ours_retry.mul_f64(1.5) + Duration::from_millis(500),
        "{:?}",
        led - released
    );
    ex.check();

    // Back: ours holds, an older version waits, then takes over at its next try.
    let old = old_version("update-operator-old-2");
    let ex = Exclusion::watch(&[&m], std::slice::from_ref(&old.leading));
    tokio::time::sleep(go::FLUO.lease_duration * 3).await;
    assert!(old.acquired_at().is_none(), "{:#?}", old.lines());
    let released = Instant::now();
    op.stop().await.unwrap();
    let acquired = wait_for("the old version to lead", PATIENCE, || async {
        old.acquired_at()
    })
    .await;
    println!(
        "the older version led {:?} after ours began to shut down",
        acquired - released
    );
    assert!(
        acquired - released <= go::FLUO.retry_period.mul_f64(2.2) + Duration::from_millis(500),
        "{:?}",
        acquired - released
    );
    ex.check();
    old.stop().await;
}
