//! Object storage with a global resourceVersion, per-bucket event logs for watches, and
//! optimistic concurrency. One mutex: operations that must be atomic (an eviction checking a
//! PodDisruptionBudget and deleting the pod) run under one lock, as etcd transactions would.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::error::{ApiError, ApiResult};
use crate::resources::{RESOURCES, Resource};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
pub struct WatchEvent {
    pub rv: u64,
    pub storage: &'static str,
    pub kind: EventType,
    pub object: Arc<Value>,
    /// The object before a change, so selector-filtered watches can turn a change that leaves
    /// the selection into DELETED, as the real server does.
    pub old: Option<Arc<Value>>,
    /// The JSON watch line most watchers are sent (this event's type, the object as stored),
    /// encoded once for all of them.
    pub json_line: OnceLock<Bytes>,
    /// When the change was committed, for latencies between commits that do not include
    /// the delay of whoever reads the feed.
    pub at: std::time::Instant,
}

pub type Key = (String, String);

/// The events a watch replays, and the receiver for the ones after them.
pub type WatchStart = (Vec<Arc<WatchEvent>>, broadcast::Receiver<Arc<WatchEvent>>);

pub struct Bucket {
    pub objects: BTreeMap<Key, Arc<Value>>,
    log: VecDeque<Arc<WatchEvent>>,
    /// Events with a resourceVersion at or below this are gone: watching from before it is 410.
    compacted_rv: u64,
    tx: broadcast::Sender<Arc<WatchEvent>>,
}

pub struct Inner {
    rv: u64,
    buckets: HashMap<&'static str, Bucket>,
    log_capacity: usize,
    all_tx: broadcast::Sender<Arc<WatchEvent>>,
    /// Pods by `spec.nodeName`, so a node's pods are found without scanning every pod.
    pods_by_node: HashMap<String, BTreeSet<Key>>,
    /// Pods the scheduler has to place (no `spec.nodeName`, not terminating), so a scheduling
    /// pass costs the pending pods, not every pod.
    unbound_pods: BTreeSet<Key>,
    /// Pods by their controller's uid, so a controller finds its pods without scanning.
    pods_by_owner: HashMap<String, BTreeSet<Key>>,
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
}

pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub fn meta<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

pub fn object_rv(obj: &Value) -> u64 {
    meta(obj, "resourceVersion")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl Store {
    pub fn new(log_capacity: usize) -> Self {
        let mut buckets = HashMap::new();
        for r in RESOURCES {
            buckets.entry(r.storage).or_insert_with(|| Bucket {
                objects: BTreeMap::new(),
                log: VecDeque::new(),
                compacted_rv: 0,
                tx: broadcast::channel(65_536).0,
            });
        }
        let inner = Inner {
            rv: 1,
            buckets,
            log_capacity,
            all_tx: broadcast::channel(262_144).0,
            pods_by_node: HashMap::new(),
            unbound_pods: BTreeSet::new(),
            pods_by_owner: HashMap::new(),
        };
        Store {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not wedge the whole API server.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every change to every bucket, for the simulated controllers.
    pub fn subscribe_all(&self) -> broadcast::Receiver<Arc<WatchEvent>> {
        self.lock().all_tx.subscribe()
    }
}

const POD_STORAGE: &str = "pods";

fn node_name_of(pod: &Value) -> Option<&str> {
    pod.get("spec")?.get("nodeName")?.as_str()
}

/// What the scheduler places: no node (an empty `spec.nodeName` is none) and not terminating.
pub fn is_unbound(pod: &Value) -> bool {
    node_name_of(pod).is_none_or(str::is_empty)
        && pod.pointer("/metadata/deletionTimestamp").is_none()
}

/// The kind, name and uid in the ownerReference with `controller: true`.
pub fn controller_of(obj: &Value) -> Option<(&str, &str, &str)> {
    let o = obj
        .pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true)?;
    Some((o["kind"].as_str()?, o["name"].as_str()?, o["uid"].as_str()?))
}

/// Moves `key` from the set under `was` to the set under `is`, dropping emptied sets.
fn move_key(
    index: &mut HashMap<String, BTreeSet<Key>>,
    key: &Key,
    was: Option<&str>,
    is: Option<&str>,
) {
    if was == is {
        return;
    }
    if let Some(n) = was
        && let Some(keys) = index.get_mut(n)
    {
        keys.remove(key);
        if keys.is_empty() {
            index.remove(n);
        }
    }
    if let Some(n) = is {
        index.entry(n.to_string()).or_default().insert(key.clone());
    }
}

fn key_of(r: &Resource, ns: &str, name: &str) -> Key {
    (
        if r.namespaced {
            ns.to_string()
        } else {
            String::new()
        },
        name.to_string(),
    )
}

impl Inner {
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    pub fn bucket(&self, r: &Resource) -> &Bucket {
        &self.buckets[r.storage]
    }

    /// The pods bound to `node` (`spec.nodeName`), in key order (namespace, name).
    pub fn pods_on_node<'a>(
        &'a self,
        node: &str,
    ) -> impl Iterator<Item = (&'a Key, &'a Arc<Value>)> + 'a {
        let objects = &self.buckets[POD_STORAGE].objects;
        self.pods_by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(move |k| objects.get_key_value(k))
    }

    /// How many pods are bound to `node`, terminating ones included (the scheduler's load).
    pub fn pod_count_on_node(&self, node: &str) -> usize {
        self.pods_by_node.get(node).map_or(0, BTreeSet::len)
    }

    /// Pods waiting for the scheduler ([`is_unbound`]), in key order.
    pub fn unbound_pods(&self) -> impl Iterator<Item = (&Key, &Arc<Value>)> + '_ {
        let objects = &self.buckets[POD_STORAGE].objects;
        self.unbound_pods
            .iter()
            .filter_map(move |k| objects.get_key_value(k))
    }

    /// The pods whose controller has `uid`, in key order.
    pub fn pods_owned_by<'a>(
        &'a self,
        uid: &str,
    ) -> impl Iterator<Item = (&'a Key, &'a Arc<Value>)> + 'a {
        let objects = &self.buckets[POD_STORAGE].objects;
        self.pods_by_owner
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(move |k| objects.get_key_value(k))
    }

    /// Keeps the pod indexes ([`Inner::pods_on_node`], [`Inner::unbound_pods`],
    /// [`Inner::pods_owned_by`]) in step with a pod stored or removed at `key`.
    fn reindex(&mut self, r: &Resource, key: &Key, old: Option<&Value>, new: Option<&Value>) {
        if r.storage != POD_STORAGE {
            return;
        }
        move_key(
            &mut self.pods_by_node,
            key,
            old.and_then(node_name_of),
            new.and_then(node_name_of),
        );
        move_key(
            &mut self.pods_by_owner,
            key,
            old.and_then(controller_of).map(|c| c.2),
            new.and_then(controller_of).map(|c| c.2),
        );
        if new.is_some_and(is_unbound) {
            self.unbound_pods.insert(key.clone());
        } else {
            self.unbound_pods.remove(key);
        }
    }

    pub fn get(&self, r: &Resource, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.bucket(r).objects.get(&key_of(r, ns, name)).cloned()
    }

    /// Objects in key order (namespace, name), as etcd returns them; `ns = None` is all namespaces.
    pub fn iter<'a>(
        &'a self,
        r: &Resource,
        ns: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = (&'a Key, &'a Arc<Value>)> + 'a> {
        let objects = &self.bucket(r).objects;
        match ns {
            Some(ns) if r.namespaced => Box::new(
                objects
                    .range((ns.to_string(), String::new())..)
                    .take_while(move |((n, _), _)| n == ns),
            ),
            _ => Box::new(objects.iter()),
        }
    }

    fn emit(&mut self, r: &Resource, kind: EventType, object: Arc<Value>, old: Option<Arc<Value>>) {
        let ev = Arc::new(WatchEvent {
            rv: self.rv,
            storage: r.storage,
            kind,
            object,
            old,
            json_line: OnceLock::new(),
            at: std::time::Instant::now(),
        });
        let cap = self.log_capacity;
        let b = self.buckets.get_mut(r.storage).expect("bucket");
        b.log.push_back(ev.clone());
        while b.log.len() > cap {
            if let Some(old) = b.log.pop_front() {
                b.compacted_rv = old.rv;
            }
        }
        let _ = b.tx.send(ev.clone());
        let _ = self.all_tx.send(ev);
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores a new object, filling in the metadata the server owns.
    pub fn create(&mut self, r: &Resource, mut obj: Value) -> ApiResult<Arc<Value>> {
        let ns = meta(&obj, "namespace").unwrap_or("").to_string();
        if r.namespaced {
            if ns.is_empty() {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object is empty",
                ));
            }
            if self.get(ns_resource(), "", &ns).is_none() {
                return Err(ApiError::not_found("", "namespaces", &ns));
            }
        }
        let mut name = meta(&obj, "name").unwrap_or("").to_string();
        if name.is_empty() {
            match meta(&obj, "generateName") {
                Some(prefix) if !prefix.is_empty() => {
                    let suffix: String = (0..5)
                        .map(|_| {
                            let c = b"bcdfghjklmnpqrstvwxz2456789";
                            c[rand::random_range(0..c.len())] as char
                        })
                        .collect();
                    name = format!("{prefix}{suffix}");
                }
                _ => {
                    return Err(ApiError::invalid(
                        r.kind,
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            }
        }
        validate_name(r, &name)?;
        let key = key_of(r, &ns, &name);
        if self.bucket(r).objects.contains_key(&key) {
            return Err(ApiError::already_exists(r.group, r.plural, &name));
        }
        let rv = self.next_rv();
        let m = obj["metadata"]
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        m.insert("name".into(), json!(name));
        if !r.namespaced {
            m.remove("namespace");
        }
        m.insert("uid".into(), json!(new_uid()));
        m.insert("resourceVersion".into(), json!(rv.to_string()));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        if r.kind != "Pod" && r.kind != "Node" && r.kind != "Event" && r.kind != "Lease" {
            m.insert("generation".into(), json!(1));
        }
        obj["apiVersion"] = json!(r.api_version());
        obj["kind"] = json!(r.kind);
        if r.kind == "Namespace" && obj.pointer("/status/phase").is_none() {
            obj["status"] = json!({"phase": "Active"});
        }
        let obj = Arc::new(obj);
        self.reindex(r, &key, None, Some(&obj));
        self.buckets
            .get_mut(r.storage)
            .expect("bucket")
            .objects
            .insert(key, obj.clone());
        self.emit(r, EventType::Added, obj.clone(), None);
        Ok(obj)
    }

    /// Replaces an object with `new`, keeping server-owned metadata. A `resourceVersion` in `new`
    /// that differs from the stored one is a 409 Conflict. An update that changes nothing does
    /// not bump the resourceVersion, as in the real server.
    pub fn replace(
        &mut self,
        r: &Resource,
        ns: &str,
        name: &str,
        mut new: Value,
    ) -> ApiResult<Arc<Value>> {
        let old = self
            .get(r, ns, name)
            .ok_or_else(|| ApiError::not_found(r.group, r.plural, name))?;
        if let Some(want) = meta(&new, "resourceVersion")
            && !want.is_empty()
            && want != meta(&old, "resourceVersion").unwrap_or("")
        {
            return Err(ApiError::conflict(r.group, r.plural, name));
        }
        if !new.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        if !new.get("metadata").is_some_and(Value::is_object) {
            new["metadata"] = json!({});
        }
        keep_unchangeable_metadata(&mut new, &old);
        copy_metadata(&mut new, &old, "resourceVersion");
        self.put(r, ns, name, old, new)
    }

    /// Stores `new` in place of `old` (both already checked), bumping the resourceVersion and
    /// generation; a write that changes nothing is not an event.
    fn put(
        &mut self,
        r: &Resource,
        ns: &str,
        name: &str,
        old: Arc<Value>,
        mut new: Value,
    ) -> ApiResult<Arc<Value>> {
        new["apiVersion"] = json!(r.api_version());
        new["kind"] = json!(r.kind);
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if new == *old {
            return Ok(old);
        }
        if old["metadata"].get("generation").is_some() && new.get("spec") != old.get("spec") {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            new["metadata"]["generation"] = json!(g);
        }
        // Deleting the last finalizer of an object being deleted completes the deletion.
        if new["metadata"].get("deletionTimestamp").is_some()
            && new["metadata"]
                .get("finalizers")
                .and_then(Value::as_array)
                .is_none_or(|f| f.is_empty())
            && r.kind != "Pod"
        {
            return self.remove(r, ns, name);
        }
        let rv = self.next_rv();
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        let new = Arc::new(new);
        let key = key_of(r, ns, name);
        self.reindex(r, &key, Some(&old), Some(&new));
        self.buckets
            .get_mut(r.storage)
            .expect("bucket")
            .objects
            .insert(key, new.clone());
        self.emit(r, EventType::Modified, new.clone(), Some(old));
        Ok(new)
    }

    /// Applies `f` to a copy of the object and stores the result: the server's own writes, which
    /// may change server-owned metadata such as deletionTimestamp.
    pub fn modify(
        &mut self,
        r: &Resource,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value) -> ApiResult<()>,
    ) -> ApiResult<Arc<Value>> {
        let old = self
            .get(r, ns, name)
            .ok_or_else(|| ApiError::not_found(r.group, r.plural, name))?;
        let mut new = (*old).clone();
        f(&mut new)?;
        self.put(r, ns, name, old, new)
    }

    /// Removes an object now, whatever its grace period or finalizers.
    pub fn remove(&mut self, r: &Resource, ns: &str, name: &str) -> ApiResult<Arc<Value>> {
        let key = key_of(r, ns, name);
        let old = self
            .buckets
            .get_mut(r.storage)
            .expect("bucket")
            .objects
            .remove(&key)
            .ok_or_else(|| ApiError::not_found(r.group, r.plural, name))?;
        self.reindex(r, &key, Some(&old), None);
        let rv = self.next_rv();
        let mut gone = (*old).clone();
        gone["metadata"]["resourceVersion"] = json!(rv.to_string());
        let gone = Arc::new(gone);
        self.emit(r, EventType::Deleted, gone.clone(), Some(old));
        Ok(gone)
    }

    /// Events after `since` and a receiver for later ones, taken atomically so none is missed.
    /// `Err` (410 Gone) when events after `since` were already compacted away.
    pub fn watch_from(&self, r: &Resource, since: u64) -> ApiResult<WatchStart> {
        let b = self.bucket(r);
        if since < b.compacted_rv {
            return Err(ApiError::gone(format!(
                "too old resource version: {since} ({})",
                b.compacted_rv + 1
            )));
        }
        let replay = b.log.iter().filter(|e| e.rv > since).cloned().collect();
        Ok((replay, b.tx.subscribe()))
    }

    /// Events at or below this resourceVersion are gone for `r`'s watches and lists.
    pub fn compacted_rv(&self, r: &Resource) -> u64 {
        self.bucket(r).compacted_rv
    }

    /// Drops all watch history, so any watch from an older resourceVersion gets 410 Gone.
    pub fn compact(&mut self) {
        let rv = self.rv;
        for b in self.buckets.values_mut() {
            b.log.clear();
            b.compacted_rv = rv;
        }
    }
}

pub fn ns_resource() -> &'static Resource {
    crate::resources::find("", "v1", "namespaces").expect("namespaces")
}

fn validate_name(r: &Resource, name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || c == '-'
                || c == '.'
                || (r.kind.ends_with("Role")
                    || r.kind.ends_with("Binding")
                    || r.kind.starts_with("ValidatingAdmission"))
                    && c == ':'
        })
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            r.kind,
            name,
            format!(
                "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ))
    }
}

/// What an update cannot change (kube-apiserver's BeforeUpdate): `new` takes `old`'s name,
/// namespace, uid, timestamps and generation, or loses them where `old` has none. `new`'s
/// metadata must be an object.
pub(crate) fn keep_unchangeable_metadata(new: &mut Value, old: &Value) {
    for f in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        copy_metadata(new, old, f);
    }
}

/// `new.metadata[f]` as `old.metadata[f]`: copied, or removed where `old` has none.
fn copy_metadata(new: &mut Value, old: &Value, f: &str) {
    match old["metadata"].get(f) {
        Some(v) => new["metadata"][f] = v.clone(),
        None => {
            if let Some(m) = new["metadata"].as_object_mut() {
                m.remove(f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static Resource {
        crate::resources::find("", "v1", "pods").expect("pods")
    }

    /// What the index must always equal: a scan of every pod.
    fn scanned(st: &Inner, node: &str) -> Vec<Key> {
        st.iter(pods(), None)
            .filter(|(_, p)| node_name_of(p) == Some(node))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn indexed(st: &Inner, node: &str) -> Vec<Key> {
        st.pods_on_node(node).map(|(k, _)| k.clone()).collect()
    }

    /// Every pod index against a scan of every pod.
    fn check_indexes(st: &Inner) {
        for n in ["n1", "n2", "n3"] {
            assert_eq!(indexed(st, n), scanned(st, n), "node {n}");
            assert_eq!(st.pod_count_on_node(n), scanned(st, n).len(), "node {n}");
        }
        let unbound: Vec<Key> = st
            .iter(pods(), None)
            .filter(|(_, p)| is_unbound(p))
            .map(|(k, _)| k.clone())
            .collect();
        let indexed: Vec<Key> = st.unbound_pods().map(|(k, _)| k.clone()).collect();
        assert_eq!(indexed, unbound, "unbound pods");
        for uid in ["u1", "u2"] {
            let owned: Vec<Key> = st
                .iter(pods(), None)
                .filter(|(_, p)| controller_of(p).is_some_and(|c| c.2 == uid))
                .map(|(k, _)| k.clone())
                .collect();
            let indexed: Vec<Key> = st.pods_owned_by(uid).map(|(k, _)| k.clone()).collect();
            assert_eq!(indexed, owned, "owner {uid}");
        }
    }

    fn owner(uid: &str, controller: bool) -> Value {
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": uid, "uid": uid, "controller": controller}])
    }

    #[test]
    fn pod_indexes_follow_creates_binds_moves_owners_and_removals() {
        let store = Store::new(100);
        let mut st = store.lock();
        st.create(ns_resource(), json!({"metadata": {"name": "a"}}))
            .unwrap();
        st.create(ns_resource(), json!({"metadata": {"name": "b"}}))
            .unwrap();
        for (ns, name, node) in [
            ("b", "p1", Some("n1")),
            ("a", "p2", Some("n1")),
            ("a", "p3", Some("n2")),
            ("a", "p4", None),
        ] {
            let mut pod = json!({"metadata": {"name": name, "namespace": ns, "ownerReferences": owner("u1", true)}, "spec": {}});
            if let Some(n) = node {
                pod["spec"]["nodeName"] = json!(n);
            }
            st.create(pods(), pod).unwrap();
        }
        // An empty nodeName is unbound; a pod without a controller is owned by nobody.
        st.create(
            pods(),
            json!({"metadata": {"name": "p5", "namespace": "a", "ownerReferences": owner("u2", false)}, "spec": {"nodeName": ""}}),
        )
        .unwrap();
        let check = check_indexes;
        check(&st);
        assert_eq!(
            st.unbound_pods()
                .map(|(k, _)| k.1.as_str())
                .collect::<Vec<_>>(),
            ["p4", "p5"]
        );
        assert_eq!(
            indexed(&st, "n1"),
            vec![("a".into(), "p2".into()), ("b".into(), "p1".into())]
        );
        // Bound by the scheduler, moved (by hand), unbound, changed elsewhere, removed.
        st.modify(pods(), "a", "p4", |v| {
            v["spec"]["nodeName"] = json!("n3");
            Ok(())
        })
        .unwrap();
        check(&st);
        st.replace(
            pods(),
            "a",
            "p3",
            json!({"metadata": {"name": "p3", "namespace": "a"}, "spec": {"nodeName": "n1"}}),
        )
        .unwrap();
        check(&st);
        st.modify(pods(), "b", "p1", |v| {
            v["spec"] = json!({});
            Ok(())
        })
        .unwrap();
        check(&st);
        st.modify(pods(), "a", "p2", |v| {
            v["metadata"]["labels"] = json!({"x": "y"});
            Ok(())
        })
        .unwrap();
        check(&st);
        // Adopted by another controller; a terminating unbound pod is not the scheduler's.
        st.modify(pods(), "a", "p3", |v| {
            v["metadata"]["ownerReferences"] = owner("u2", true);
            Ok(())
        })
        .unwrap();
        check(&st);
        st.modify(pods(), "a", "p5", |v| {
            v["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            Ok(())
        })
        .unwrap();
        check(&st);
        assert_eq!(st.unbound_pods().count(), 1, "p1 only");
        st.remove(pods(), "a", "p2").unwrap();
        check(&st);
        assert_eq!(indexed(&st, "n1"), vec![("a".into(), "p3".into())]);
        assert!(
            !st.pods_by_node.contains_key("n2"),
            "empty entries are dropped"
        );
    }
}
