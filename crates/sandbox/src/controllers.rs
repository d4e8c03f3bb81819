//! The simulated control plane and kubelets: scheduler, ReplicaSet, Deployment and DaemonSet
//! controllers, the disruption controller (PDB status), garbage collection, the kubelet's
//! pod start and graceful termination, and volume attach/detach (the attach-detach
//! controller, a CSI external-attacher and the kubelet's `status.volumesInUse`). Driven by
//! store events, not polling.
//!
//! Volumes: a pod's `persistentVolumeClaim` C in namespace NS mounts the PersistentVolume
//! [`pv_name`] (claims are not served; each is taken as bound, ReadWriteMany). While a pod
//! bound to a node mounts it, the node lists [`volume_in_use`] and has a VolumeAttachment
//! [`volume_attachment_name`], attached after [`SimTiming::volume_attach`]. Once the last such
//! pod is gone from the store the entry leaves `volumesInUse` at once, and the
//! VolumeAttachment is deleted: the attacher's finalizer keeps it, still attached, for
//! [`SimTiming::volume_detach`], then it turns `attached: false` and is gone.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::eviction::{self, is_ready, is_terminating, pods};
use crate::resources::{self, Resource};
use crate::store::{EventType, Inner, Key, Store, controller_of, meta, now_rfc3339};

#[derive(Debug, Clone)]
pub struct SimTiming {
    /// From a pod bound to a Ready node to it running Ready.
    pub pod_start: Duration,
    /// From a VolumeAttachment created to the attacher setting `status.attached`.
    pub volume_attach: Duration,
    /// From a VolumeAttachment's deletion (its node's last pod using the volume gone) to it
    /// detached and removed.
    pub volume_detach: Duration,
}

/// The CSI driver of every simulated volume: VolumeAttachments' `spec.attacher`.
pub const ATTACHER: &str = "sandbox.csi.k8s.io";
/// The external-attacher's finalizer (`external-attacher/` and the driver's name with
/// non-alphanumerics as `-`): a VolumeAttachment being deleted stays until it is detached.
const ATTACHER_FINALIZER: &str = "external-attacher/sandbox-csi-k8s-io";

/// The PersistentVolume that claim `claim` of namespace `ns` is taken to be bound to.
pub fn pv_name(ns: &str, claim: &str) -> String {
    format!("pv-{ns}-{claim}")
}

/// The VolumeAttachment of `pv` on `node`, named as Kubernetes' CSI attacher names it:
/// `csi-` and the hex SHA-256 of the volume, the attacher and the node.
pub fn volume_attachment_name(pv: &str, node: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{pv}{ATTACHER}{node}").as_bytes(),
    );
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("csi-{hex}")
}

/// `pv`'s entry in a Node's `status.volumesInUse`: the CSI unique volume name.
pub fn volume_in_use(pv: &str) -> String {
    format!("kubernetes.io/csi/{ATTACHER}^{pv}")
}

fn res(group: &str, plural: &str) -> &'static Resource {
    resources::find(group, "v1", plural).expect("known resource")
}
fn nodes() -> &'static Resource {
    res("", "nodes")
}
fn replicasets() -> &'static Resource {
    res("apps", "replicasets")
}
fn deployments() -> &'static Resource {
    res("apps", "deployments")
}
fn daemonsets() -> &'static Resource {
    res("apps", "daemonsets")
}
fn volume_attachments() -> &'static Resource {
    res("storage.k8s.io", "volumeattachments")
}

pub fn node_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// What a batch of events left to do. Each entry names what changed, so the work per batch
/// follows the changes rather than the size of the cluster.
#[derive(Default)]
struct Dirty {
    pending_pods: bool,
    start: BTreeSet<Key>,
    replicasets: BTreeSet<Key>,
    deployments: BTreeSet<Key>,
    all_daemonsets: bool,
    daemonsets: BTreeSet<Key>,
    /// Namespaces whose every PDB is refreshed (a PDB's expected count follows its pods'
    /// controllers' scale).
    pdb_namespaces: BTreeSet<String>,
    /// Pods that changed (before and after), by namespace: the PDBs selecting one of them are
    /// refreshed.
    pdb_pods: BTreeMap<String, Vec<Arc<Value>>>,
    pdbs: BTreeSet<Key>,
    gc_uids: HashSet<String>,
    /// Nodes whose VolumeAttachments and `volumesInUse` are brought in line with their pods.
    volume_nodes: BTreeSet<String>,
    all_volume_nodes: bool,
    /// VolumeAttachments (name, uid) for the attacher to attach, and to detach and release.
    attach: Vec<(String, String)>,
    detach: Vec<(String, String)>,
}

pub async fn run(store: Store, timing: SimTiming) {
    let mut rx = store.subscribe_all();
    let mut dirty = Dirty {
        pending_pods: true,
        all_daemonsets: true,
        ..Default::default()
    };
    resync(&store, &mut dirty);
    let mut terminating: HashSet<String> = HashSet::new();
    loop {
        process(&store, &mut dirty, &timing);
        let first = rx.recv().await;
        let mut batch = Vec::new();
        match first {
            Ok(ev) => batch.push(ev),
            Err(RecvError::Lagged(_)) => resync(&store, &mut dirty),
            Err(RecvError::Closed) => return,
        }
        loop {
            match rx.try_recv() {
                Ok(ev) => batch.push(ev),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {
                    resync(&store, &mut dirty)
                }
                Err(_) => break,
            }
        }
        for ev in batch {
            note(&ev, &mut dirty, &store, &mut terminating);
        }
    }
}

fn resync(store: &Store, dirty: &mut Dirty) {
    let st = store.lock();
    dirty.pending_pods = true;
    dirty.all_daemonsets = true;
    dirty.all_volume_nodes = true;
    // The attacher's timers re-check the object when they fire, so one started twice is harmless.
    for ((_, n), va) in st.iter(volume_attachments(), None) {
        if !attached_by_us(va) {
            continue;
        }
        let uid = meta(va, "uid").unwrap_or("").to_string();
        if deleting(va) {
            dirty.detach.push((n.clone(), uid));
        } else if !attached(va) {
            dirty.attach.push((n.clone(), uid));
        }
    }
    for ((ns, n), _) in st.iter(replicasets(), None) {
        dirty.replicasets.insert((ns.clone(), n.clone()));
    }
    for ((ns, n), _) in st.iter(deployments(), None) {
        dirty.deployments.insert((ns.clone(), n.clone()));
    }
    for ((ns, n), p) in st.iter(pods(), None) {
        dirty.pdb_namespaces.insert(ns.clone());
        if p.pointer("/status/phase") == Some(&json!("Pending")) {
            dirty.start.insert((ns.clone(), n.clone()));
        }
    }
}

/// A PDB's expected pod count reads its pods' controllers' `spec.replicas`.
fn scale_changed(ev: &crate::store::WatchEvent) -> bool {
    let replicas = |o: &Value| o.pointer("/spec/replicas").cloned();
    ev.kind != EventType::Modified || ev.old.as_deref().map(replicas) != Some(replicas(&ev.object))
}

fn note(
    ev: &crate::store::WatchEvent,
    dirty: &mut Dirty,
    store: &Store,
    terminating: &mut HashSet<String>,
) {
    let o = &ev.object;
    let ns = meta(o, "namespace").unwrap_or("").to_string();
    let name = meta(o, "name").unwrap_or("").to_string();
    match ev.storage {
        "pods" => {
            let changed = dirty.pdb_pods.entry(ns.clone()).or_default();
            changed.extend(ev.old.iter().cloned());
            changed.push(o.clone());
            match controller_of(o) {
                Some(("ReplicaSet", rs, _)) => {
                    dirty.replicasets.insert((ns.clone(), rs.to_string()));
                }
                Some(("DaemonSet", ds, _)) => {
                    dirty.daemonsets.insert((ns.clone(), ds.to_string()));
                }
                _ => {}
            }
            let before = ev.old.as_deref().and_then(mounted);
            let after = (ev.kind != EventType::Deleted)
                .then(|| mounted(o))
                .flatten();
            if before != after {
                for (node, _) in before.iter().chain(&after) {
                    dirty.volume_nodes.insert(node.to_string());
                }
            }
            if ev.kind == EventType::Deleted {
                return;
            }
            let bound = o
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            if !bound && !is_terminating(o) {
                dirty.pending_pods = true;
            }
            if bound && o.pointer("/status/phase") == Some(&json!("Pending")) && !is_terminating(o)
            {
                dirty.start.insert((ns.clone(), name.clone()));
            }
            if is_terminating(o) {
                let uid = meta(o, "uid").unwrap_or("").to_string();
                if terminating.insert(uid.clone()) {
                    let grace = o
                        .pointer("/metadata/deletionGracePeriodSeconds")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    let store = store.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(grace)).await;
                        let mut st = store.lock();
                        if st
                            .get(pods(), &ns, &name)
                            .is_some_and(|p| meta(&p, "uid") == Some(uid.as_str()))
                        {
                            kubelet_released(&mut st, &ns, &name);
                        }
                    });
                }
            }
        }
        "nodes" => {
            // Only a node that can take pods can place a pod that found no node before; loads
            // change with pods, not nodes.
            if ev.kind != EventType::Deleted && schedulable(o) {
                dirty.pending_pods = true;
            }
            // A new node gets the volumes of pods bound before it existed, a deleted one loses
            // its attachments, and a volumesInUse someone else rewrote is the kubelet's again.
            fn in_use(n: &Value) -> Option<&Value> {
                n.pointer("/status/volumesInUse")
            }
            if ev.kind != EventType::Modified || ev.old.as_deref().map(in_use) != Some(in_use(o)) {
                dirty.volume_nodes.insert(name.clone());
            }
            // DaemonSets follow the set of nodes and their labels.
            fn labels(n: &Value) -> Option<&Value> {
                n.pointer("/metadata/labels")
            }
            if ev.kind != EventType::Modified || ev.old.as_deref().map(labels) != Some(labels(o)) {
                dirty.all_daemonsets = true;
            }
            if node_ready(o) {
                let st = store.lock();
                for ((pns, pn), p) in st.pods_on_node(&name) {
                    if p.pointer("/status/phase") == Some(&json!("Pending")) {
                        dirty.start.insert((pns.clone(), pn.clone()));
                    }
                }
            }
        }
        "replicasets" => {
            if scale_changed(ev) {
                dirty.pdb_namespaces.insert(ns.clone());
            }
            // The owning Deployment's status follows its ReplicaSet's.
            if let Some(d) = o
                .pointer("/metadata/ownerReferences/0")
                .filter(|r| r["kind"] == "Deployment")
                .and_then(|r| r["name"].as_str())
            {
                dirty.deployments.insert((ns.clone(), d.to_string()));
            }
            if ev.kind == EventType::Deleted {
                dirty
                    .gc_uids
                    .insert(meta(o, "uid").unwrap_or("").to_string());
            } else {
                dirty.replicasets.insert((ns, name));
            }
        }
        "statefulsets" if scale_changed(ev) => {
            dirty.pdb_namespaces.insert(ns);
        }
        "deployments" => {
            if ev.kind == EventType::Deleted {
                dirty
                    .gc_uids
                    .insert(meta(o, "uid").unwrap_or("").to_string());
            } else {
                dirty.deployments.insert((ns, name));
            }
        }
        "daemonsets" => {
            if ev.kind == EventType::Deleted {
                dirty
                    .gc_uids
                    .insert(meta(o, "uid").unwrap_or("").to_string());
            }
            dirty.daemonsets.insert((ns, name));
        }
        "poddisruptionbudgets" => {
            dirty.pdbs.insert((ns, name));
        }
        "volumeattachments" => {
            let node = o.pointer("/spec/nodeName").and_then(Value::as_str);
            if ev.kind == EventType::Deleted {
                // A volume still in use there gets a new VolumeAttachment (one being deleted
                // cannot be taken back).
                if let Some(node) = node {
                    dirty.volume_nodes.insert(node.to_string());
                }
                return;
            }
            if !attached_by_us(o) {
                return;
            }
            let uid = meta(o, "uid").unwrap_or("").to_string();
            let old = ev.old.as_deref();
            if deleting(o) {
                if !old.is_some_and(deleting) {
                    dirty.detach.push((name, uid));
                }
            } else if !attached(o) && (ev.kind == EventType::Added || old.is_some_and(attached)) {
                // New, or set back to detached by someone: the attacher (re)attaches.
                dirty.attach.push((name, uid));
            }
        }
        _ => {}
    }
}

/// The node a pod is bound to and the PersistentVolumes it mounts there; None when it mounts
/// none, is not bound, or has finished (the kubelet unmounts a finished pod's volumes).
fn mounted(pod: &Value) -> Option<(&str, BTreeSet<String>)> {
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())?;
    if matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    ) {
        return None;
    }
    let ns = meta(pod, "namespace").unwrap_or("");
    let pvs: BTreeSet<String> = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(|v| v.pointer("/persistentVolumeClaim/claimName")?.as_str())
        .filter(|c| !c.is_empty())
        .map(|c| pv_name(ns, c))
        .collect();
    (!pvs.is_empty()).then_some((node, pvs))
}

fn attached_by_us(va: &Value) -> bool {
    va.pointer("/spec/attacher").and_then(Value::as_str) == Some(ATTACHER)
}

fn attached(va: &Value) -> bool {
    va.pointer("/status/attached") == Some(&json!(true))
}

fn deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some()
}

fn process(store: &Store, dirty: &mut Dirty, timing: &SimTiming) {
    let mut st = store.lock();
    if !dirty.gc_uids.is_empty() {
        collect_garbage(&mut st, &std::mem::take(&mut dirty.gc_uids));
    }
    for (ns, n) in std::mem::take(&mut dirty.deployments) {
        reconcile_deployment(&mut st, &ns, &n);
    }
    for (ns, n) in std::mem::take(&mut dirty.replicasets) {
        reconcile_replicaset(&mut st, &ns, &n);
    }
    if std::mem::take(&mut dirty.all_daemonsets) {
        dirty.daemonsets = st
            .iter(daemonsets(), None)
            .map(|(k, _)| k.clone())
            .collect();
    }
    if !dirty.daemonsets.is_empty() {
        let node_list: Vec<Arc<Value>> = st.iter(nodes(), None).map(|(_, n)| n.clone()).collect();
        for (ns, n) in std::mem::take(&mut dirty.daemonsets) {
            reconcile_daemonset(&mut st, &node_list, &ns, &n);
        }
    }
    if std::mem::take(&mut dirty.pending_pods) {
        schedule(&mut st);
    }
    for (ns, n) in std::mem::take(&mut dirty.start) {
        let Some(p) = st.get(pods(), &ns, &n) else {
            continue;
        };
        let uid = meta(&p, "uid").unwrap_or("").to_string();
        let node = p
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        // start_pod re-checks everything, so a pod noted twice is harmless.
        if node.is_empty() || !st.get(nodes(), "", &node).is_some_and(|nd| node_ready(&nd)) {
            continue;
        }
        let store = store.clone();
        let delay = timing.pod_start;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut st = store.lock();
            start_pod(&mut st, &ns, &n, &uid, &node);
        });
    }
    volumes(store, &mut st, dirty, timing);
    let mut pdbs = std::mem::take(&mut dirty.pdbs);
    for ns in std::mem::take(&mut dirty.pdb_namespaces) {
        pdbs.extend(st.iter(eviction::pdbs(), Some(&ns)).map(|(k, _)| k.clone()));
    }
    for (ns, changed) in std::mem::take(&mut dirty.pdb_pods) {
        for (k, pdb) in st.iter(eviction::pdbs(), Some(&ns)) {
            if pdbs.contains(k) {
                continue;
            }
            let Some(sel) = eviction::selector_of(pdb) else {
                continue;
            };
            if changed
                .iter()
                .any(|p| sel.matches(p.pointer("/metadata/labels").and_then(Value::as_object)))
            {
                pdbs.insert(k.clone());
            }
        }
    }
    for (ns, n) in pdbs {
        eviction::refresh(&mut st, &ns, &n);
    }
}

/// The attach-detach controller and the kubelet for the nodes noted, then the attacher's
/// timers for the VolumeAttachments noted.
fn volumes(store: &Store, st: &mut Inner, dirty: &mut Dirty, timing: &SimTiming) {
    if std::mem::take(&mut dirty.all_volume_nodes) {
        let known = st.iter(nodes(), None).map(|((_, n), _)| n.clone());
        let attached_to = st
            .iter(volume_attachments(), None)
            .filter_map(|(_, va)| va.pointer("/spec/nodeName")?.as_str().map(str::to_string));
        let all: Vec<String> = known.chain(attached_to).collect();
        dirty.volume_nodes.extend(all);
    }
    let todo = std::mem::take(&mut dirty.volume_nodes);
    if !todo.is_empty() {
        // One pass over the VolumeAttachments for the whole batch, not one per node.
        let mut by_node: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
        for (_, va) in st.iter(volume_attachments(), None) {
            if let Some(n) = va.pointer("/spec/nodeName").and_then(Value::as_str)
                && attached_by_us(va)
                && todo.contains(n)
            {
                by_node.entry(n.to_string()).or_default().push(va.clone());
            }
        }
        for node in &todo {
            let vas = by_node.remove(node).unwrap_or_default();
            reconcile_volumes(st, node, &vas);
        }
    }
    for (name, uid) in std::mem::take(&mut dirty.attach) {
        after(store, timing.volume_attach, move |st| {
            attach_volume(st, &name, &uid)
        });
    }
    for (name, uid) in std::mem::take(&mut dirty.detach) {
        after(store, timing.volume_detach, move |st| {
            detach_volume(st, &name, &uid)
        });
    }
}

/// Runs `f` under the store's lock once `delay` has passed, on a timer task of its own, so
/// the wait never holds the lock.
fn after(store: &Store, delay: Duration, f: impl FnOnce(&mut Inner) + Send + 'static) {
    let store = store.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        f(&mut store.lock());
    });
}

/// What `node`'s pods mount decides its `volumesInUse` (the kubelet) and its
/// VolumeAttachments (the attach-detach controller). `vas` are the ones of our attacher there.
fn reconcile_volumes(st: &mut Inner, node: &str, vas: &[Arc<Value>]) {
    let Some(n) = st.get(nodes(), "", node) else {
        // A node that is gone has nothing attached any more; its kubelet reports nothing.
        for va in vas {
            release(st, va);
        }
        return;
    };
    let wanted: BTreeSet<String> = st
        .pods_on_node(node)
        .filter_map(|(_, p)| mounted(p))
        .flat_map(|(_, pvs)| pvs)
        .collect();
    // Sorted and unique, as the kubelet reports them (the set is sorted, the prefix shared).
    let in_use: Vec<String> = wanted.iter().map(|pv| volume_in_use(pv)).collect();
    let want = (!in_use.is_empty()).then(|| json!(in_use));
    if n.pointer("/status/volumesInUse") != want.as_ref() {
        let _ = st.modify(nodes(), "", node, |v| {
            match want {
                Some(w) => v["status"]["volumesInUse"] = w,
                // Go's omitempty: an empty list is no field.
                None => {
                    if let Some(s) = v.get_mut("status").and_then(Value::as_object_mut) {
                        s.remove("volumesInUse");
                    }
                }
            }
            Ok(())
        });
    }
    for va in vas {
        let pv = va
            .pointer("/spec/source/persistentVolumeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !wanted.contains(pv) {
            release(st, va);
        }
    }
    for pv in &wanted {
        // One being deleted stays until detached; its DELETED event brings us back here.
        let name = volume_attachment_name(pv, node);
        if st.get(volume_attachments(), "", &name).is_some() {
            continue;
        }
        let _ = st.create(
            volume_attachments(),
            json!({
                "apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
                // The attacher puts its finalizer on before attaching; here at once, so a
                // volume is never detached without the detach delay.
                "metadata": {"name": name, "finalizers": [ATTACHER_FINALIZER]},
                "spec": {"attacher": ATTACHER, "nodeName": node, "source": {"persistentVolumeName": pv}},
                "status": {"attached": false},
            }),
        );
    }
}

/// The attach-detach controller deletes a VolumeAttachment no longer needed; the attacher's
/// finalizer keeps it until [`detach_volume`].
fn release(st: &mut Inner, va: &Value) {
    if !deleting(va) {
        let name = meta(va, "name").unwrap_or("");
        let _ = crate::api::delete_object(st, volume_attachments(), "", name, None);
    }
}

/// The attacher, once the attach delay passed: attached, if it is still the same object and
/// still wanted.
fn attach_volume(st: &mut Inner, name: &str, uid: &str) {
    let Some(va) = st.get(volume_attachments(), "", name) else {
        return;
    };
    if meta(&va, "uid") != Some(uid) || deleting(&va) || attached(&va) {
        return;
    }
    let _ = st.modify(volume_attachments(), "", name, |v| {
        let fins = v["metadata"]["finalizers"].as_array().cloned();
        let mut fins = fins.unwrap_or_default();
        if !fins.contains(&json!(ATTACHER_FINALIZER)) {
            fins.push(json!(ATTACHER_FINALIZER));
            v["metadata"]["finalizers"] = json!(fins);
        }
        v["status"]["attached"] = json!(true);
        Ok(())
    });
}

/// The attacher, once the detach delay passed: detached (`attached: false`), then its
/// finalizer lifted, which ends the deletion.
fn detach_volume(st: &mut Inner, name: &str, uid: &str) {
    let Some(va) = st.get(volume_attachments(), "", name) else {
        return;
    };
    if meta(&va, "uid") != Some(uid) || !deleting(&va) {
        return;
    }
    let _ = st.modify(volume_attachments(), "", name, |v| {
        v["status"]["attached"] = json!(false);
        Ok(())
    });
    let _ = st.modify(volume_attachments(), "", name, |v| {
        if let Some(f) = v
            .pointer_mut("/metadata/finalizers")
            .and_then(Value::as_array_mut)
        {
            f.retain(|x| x != ATTACHER_FINALIZER);
        }
        Ok(())
    });
}

/// The kubelet is done with a pod (its grace period is over, or its node went down): the
/// pod is deleted, unless finalizers hold it. Then, as in Kubernetes, it stays Terminating
/// with its containers stopped until they are lifted (the store then completes the
/// deletion).
pub(crate) fn kubelet_released(st: &mut Inner, ns: &str, name: &str) {
    let held = st.get(pods(), ns, name).is_some_and(|p| {
        p.pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
    });
    if !held {
        let _ = st.remove(pods(), ns, name);
        return;
    }
    let _ = st.modify(pods(), ns, name, |v| {
        if v.pointer("/metadata/deletionTimestamp").is_none() {
            v["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        }
        v["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        if let Some(cs) = v
            .pointer_mut("/status/conditions")
            .and_then(Value::as_array_mut)
        {
            for c in cs
                .iter_mut()
                .filter(|c| c["type"] == "Ready" || c["type"] == "ContainersReady")
            {
                c["status"] = json!("False");
            }
        }
        Ok(())
    });
}

/// Ready and not cordoned: a node the scheduler may place pods on.
fn schedulable(node: &Value) -> bool {
    node_ready(node) && node.pointer("/spec/unschedulable") != Some(&json!(true))
}

/// The kubelet starting a pod's containers: Running and Ready, if the pod is still the same one
/// on a node that is still Ready.
fn start_pod(st: &mut Inner, ns: &str, name: &str, uid: &str, node: &str) {
    let Some(p) = st.get(pods(), ns, name) else {
        return;
    };
    if meta(&p, "uid") != Some(uid)
        || is_terminating(&p)
        || p.pointer("/status/phase") != Some(&json!("Pending"))
    {
        return;
    }
    let Some(nd) = st.get(nodes(), "", node) else {
        return;
    };
    if !node_ready(&nd) || p.pointer("/spec/nodeName") != Some(&json!(node)) {
        return;
    }
    let host_ip = nd
        .pointer("/status/addresses/0/address")
        .cloned()
        .unwrap_or(json!("10.0.0.1"));
    let now = now_rfc3339();
    let containers: Vec<Value> = p
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    json!({
                        "name": c["name"], "image": c["image"], "imageID": "", "ready": true, "started": true,
                        "restartCount": 0, "containerID": format!("containerd://{}", &uid.replace('-', "")),
                        "state": {"running": {"startedAt": now}},
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let ip = format!(
        "10.244.{}.{}",
        rand::random_range(0..255),
        rand::random_range(1..255)
    );
    let cond = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    let _ = st.modify(pods(), ns, name, |v| {
        v["status"] = json!({
            "phase": "Running",
            "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
            "hostIP": host_ip, "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now,
            "containerStatuses": containers, "qosClass": "BestEffort",
        });
        Ok(())
    });
}

/// Places each unbound pod on the schedulable node (nodeSelector honoured) with the fewest
/// pods, ties to the first name.
fn schedule(st: &mut Inner) {
    let pending: Vec<(Key, Arc<Value>)> = st
        .unbound_pods()
        .map(|(k, p)| (k.clone(), p.clone()))
        .collect();
    if pending.is_empty() {
        return;
    }
    let candidates: Vec<(String, Arc<Value>)> = st
        .iter(nodes(), None)
        .filter(|(_, n)| schedulable(n))
        .map(|((_, name), n)| (name.clone(), n.clone()))
        .collect();
    let mut load: HashMap<String, usize> = candidates
        .iter()
        .map(|(name, _)| (name.clone(), st.pod_count_on_node(name)))
        .collect();
    // Candidates by (load, name), so a pod without a nodeSelector finds its node without a scan.
    let mut by_load: BTreeSet<(usize, String)> =
        load.iter().map(|(n, l)| (*l, n.clone())).collect();
    for ((ns, name), pod) in pending {
        let selector = pod
            .pointer("/spec/nodeSelector")
            .and_then(Value::as_object)
            .filter(|sel| !sel.is_empty());
        let best = match selector {
            None => by_load.first().map(|(_, n)| n.clone()),
            Some(sel) => candidates
                .iter()
                .filter(|(_, n)| {
                    sel.iter().all(|(k, v)| {
                        n.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v)
                    })
                })
                .map(|(name, _)| (load[name], name))
                .min()
                .map(|(_, n)| n.clone()),
        };
        let Some(node) = best else { continue };
        let l = load.get_mut(&node).expect("a candidate");
        by_load.remove(&(*l, node.clone()));
        *l += 1;
        by_load.insert((*l, node.clone()));
        let _ = st.modify(pods(), &ns, &name, |v| {
            v["spec"]["nodeName"] = json!(node);
            Ok(())
        });
    }
}

fn pod_from_template(owner: &Value, kind: &str, template: &Value, node: Option<&str>) -> Value {
    let name = meta(owner, "name").unwrap_or("");
    let ns = meta(owner, "namespace").unwrap_or("");
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": template.get("metadata").cloned().unwrap_or(json!({})),
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    });
    pod["metadata"]["generateName"] = json!(format!("{name}-"));
    pod["metadata"]["namespace"] = json!(ns);
    pod["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": kind, "name": name, "uid": meta(owner, "uid"),
        "controller": true, "blockOwnerDeletion": true,
    }]);
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
        let tolerations = pod["spec"]["tolerations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut t = tolerations;
        t.push(json!({"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}));
        pod["spec"]["tolerations"] = json!(t);
    }
    if pod.pointer("/spec/terminationGracePeriodSeconds").is_none() {
        pod["spec"]["terminationGracePeriodSeconds"] = json!(30);
    }
    pod["status"] = json!({"phase": "Pending"});
    pod
}

fn owned_pods(st: &Inner, ns: &str, uid: &str) -> Vec<Arc<Value>> {
    st.pods_owned_by(uid)
        .filter(|((n, _), _)| n == ns)
        .map(|(_, p)| p.clone())
        .collect()
}

fn reconcile_replicaset(st: &mut Inner, ns: &str, name: &str) {
    let Some(rs) = st.get(replicasets(), ns, name) else {
        return;
    };
    let uid = meta(&rs, "uid").unwrap_or("").to_string();
    let want = rs
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0) as usize;
    let live: Vec<Arc<Value>> = owned_pods(st, ns, &uid)
        .into_iter()
        .filter(|p| {
            !is_terminating(p)
                && !matches!(
                    p.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded" | "Failed")
                )
        })
        .collect();
    let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
    for _ in live.len()..want {
        let _ = st.create(
            pods(),
            pod_from_template(&rs, "ReplicaSet", &template, None),
        );
    }
    if live.len() > want {
        for p in live.iter().rev().take(live.len() - want) {
            let _ = crate::api::delete_object(st, pods(), ns, meta(p, "name").unwrap_or(""), None);
        }
    }
    let live = owned_pods(st, ns, &uid);
    let active: Vec<&Arc<Value>> = live.iter().filter(|p| !is_terminating(p)).collect();
    let ready = active.iter().filter(|p| is_ready(p)).count();
    let status = json!({
        "replicas": active.len(), "fullyLabeledReplicas": active.len(), "readyReplicas": ready,
        "availableReplicas": ready, "observedGeneration": rs.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
    });
    if rs.get("status") != Some(&status) {
        let _ = st.modify(replicasets(), ns, name, |v| {
            v["status"] = status;
            Ok(())
        });
    }
}

fn template_hash(template: &Value) -> String {
    // FNV-1a, as stable as the real pod-template-hash needs to be here.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in template.to_string().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|i| alphabet[((h >> (i * 6)) % alphabet.len() as u64) as usize] as char)
        .collect()
}

fn reconcile_deployment(st: &mut Inner, ns: &str, name: &str) {
    let Some(d) = st.get(deployments(), ns, name) else {
        return;
    };
    let uid = meta(&d, "uid").unwrap_or("").to_string();
    let replicas = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let mut template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let hash = template_hash(&template);
    template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
    let rs_name = format!("{name}-{hash}");
    let owned: Vec<Arc<Value>> = st
        .iter(replicasets(), Some(ns))
        .filter(|(_, r)| controller_of(r).is_some_and(|(_, _, u)| u == uid))
        .map(|(_, r)| r.clone())
        .collect();
    for r in &owned {
        let n = meta(r, "name").unwrap_or("").to_string();
        if n != rs_name && r.pointer("/spec/replicas") != Some(&json!(0)) {
            let _ = st.modify(replicasets(), ns, &n, |v| {
                v["spec"]["replicas"] = json!(0);
                Ok(())
            });
        }
    }
    match st.get(replicasets(), ns, &rs_name) {
        None => {
            let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
            selector["matchLabels"]["pod-template-hash"] = json!(hash);
            let rs = json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {
                    "name": rs_name, "namespace": ns,
                    "labels": template["metadata"]["labels"],
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
                },
                "spec": {"replicas": replicas, "selector": selector, "template": template},
            });
            let _ = st.create(replicasets(), rs);
        }
        Some(r) if r.pointer("/spec/replicas") != Some(&json!(replicas)) => {
            let _ = st.modify(replicasets(), ns, &rs_name, |v| {
                v["spec"]["replicas"] = json!(replicas);
                Ok(())
            });
        }
        Some(_) => {}
    }
    let rs = st.get(replicasets(), ns, &rs_name);
    let ready = rs
        .as_ref()
        .and_then(|r| r.pointer("/status/readyReplicas"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let current = rs
        .as_ref()
        .and_then(|r| r.pointer("/status/replicas"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let status = json!({
        "observedGeneration": d.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        "replicas": current, "updatedReplicas": current, "readyReplicas": ready, "availableReplicas": ready,
        "unavailableReplicas": (replicas - ready).max(0),
    });
    if d.get("status") != Some(&status) {
        let _ = st.modify(deployments(), ns, name, |v| {
            v["status"] = status;
            Ok(())
        });
    }
}

fn reconcile_daemonset(st: &mut Inner, node_list: &[Arc<Value>], ns: &str, name: &str) {
    let Some(ds) = st.get(daemonsets(), ns, name) else {
        return;
    };
    let uid = meta(&ds, "uid").unwrap_or("").to_string();
    let template = ds.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let selector = template
        .pointer("/spec/nodeSelector")
        .and_then(Value::as_object)
        .cloned();
    let known: HashSet<&str> = node_list.iter().filter_map(|n| meta(n, "name")).collect();
    // Nodes with a pod of this set, terminating or not: a terminating one is replaced only
    // once it is gone.
    let mut covered: HashSet<String> = HashSet::new();
    for p in owned_pods(st, ns, &uid) {
        let node = p
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !known.contains(node) {
            let _ = st.remove(pods(), ns, meta(&p, "name").unwrap_or(""));
        } else {
            covered.insert(node.to_string());
        }
    }
    let mut desired = 0;
    for n in node_list {
        let node = meta(n, "name").unwrap_or("");
        let fits = selector.as_ref().is_none_or(|sel| {
            sel.iter()
                .all(|(k, v)| n.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v))
        });
        if !fits {
            continue;
        }
        desired += 1;
        if !covered.contains(node) {
            let _ = st.create(
                pods(),
                pod_from_template(&ds, "DaemonSet", &template, Some(node)),
            );
        }
    }
    let owned = owned_pods(st, ns, &uid);
    let ready = owned.iter().filter(|p| is_ready(p)).count();
    let status = json!({
        "desiredNumberScheduled": desired, "currentNumberScheduled": owned.len(), "numberMisscheduled": 0,
        "numberReady": ready, "numberAvailable": ready, "updatedNumberScheduled": owned.len(),
        "observedGeneration": ds.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
    });
    if ds.get("status") != Some(&status) {
        let _ = st.modify(daemonsets(), ns, name, |v| {
            v["status"] = status;
            Ok(())
        });
    }
}

/// Background-propagation garbage collection of objects whose controller was deleted.
fn collect_garbage(st: &mut Inner, uids: &HashSet<String>) {
    let doomed: BTreeSet<Key> = uids
        .iter()
        .flat_map(|u| st.pods_owned_by(u).map(|(k, _)| k.clone()))
        .collect();
    for (ns, n) in doomed {
        let _ = crate::api::delete_object(st, pods(), &ns, &n, None);
    }
    let doomed: Vec<Key> = st
        .iter(replicasets(), None)
        .filter(|(_, o)| controller_of(o).is_some_and(|(_, _, u)| uids.contains(u)))
        .map(|(k, _)| k.clone())
        .collect();
    for (ns, n) in doomed {
        let _ = crate::api::delete_object(st, replicasets(), &ns, &n, None);
    }
}
