//! Simulated machines: per node a kubelet's view (Ready, boot ID, OS image) and a host with an
//! update_engine whose status can be driven and a reboot entry point, behind the same
//! [`host::Host`] trait the agent uses for a real host over D-Bus.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::stream::BoxStream;
use host::{Host, HostError, UpdateStatus};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::eviction::pods;
use crate::resources;
use crate::store::{Store, meta, new_uid, now_rfc3339};

pub const OS_NAME: &str = "Flatcar Container Linux by Kinvolk";
pub const INITIAL_VERSION: &str = "4081.2.0";

fn nodes() -> &'static resources::Resource {
    resources::find("", "v1", "nodes").expect("nodes")
}

/// What happens to simulated machines, for harnesses that run an agent per node: an agent
/// is stopped when its machine goes down and started again when it is back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeLifecycle {
    RebootStarted(String),
    Up(String),
}

pub struct Sim {
    store: Store,
    reboot_duration: Duration,
    hosts: Mutex<HashMap<String, SimHost>>,
    lifecycle: broadcast::Sender<NodeLifecycle>,
    stopped: AtomicBool,
}

impl Sim {
    pub fn new(store: Store, reboot_duration: Duration) -> Sim {
        Sim {
            store,
            reboot_duration,
            hosts: Mutex::default(),
            lifecycle: broadcast::channel(4096).0,
            stopped: AtomicBool::new(false),
        }
    }

    pub fn lifecycle(&self) -> broadcast::Receiver<NodeLifecycle> {
        self.lifecycle.subscribe()
    }

    pub fn shutdown(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    pub fn host(&self, node: &str) -> Option<SimHost> {
        self.hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned()
    }

    pub fn add_node(
        self: &Arc<Self>,
        name: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<SimHost> {
        let index = self.hosts.lock().unwrap_or_else(|e| e.into_inner()).len();
        let mut l = json!({
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
        });
        for (k, v) in labels {
            l[*k] = json!(v);
        }
        let registration = Registration {
            labels: l,
            index,
            machine_id: new_uid().replace('-', ""),
            system_uuid: new_uid(),
        };
        let node = registration.node(name, true, &new_uid(), INITIAL_VERSION);
        self.store
            .lock()
            .create(nodes(), node)
            .map_err(|e| anyhow::anyhow!(e.message))?;
        let host = SimHost::new(name, Arc::downgrade(self), registration);
        self.hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), host.clone());
        Ok(host)
    }

    /// The kubelet of a machine that boots registers its Node if there is none (deleted
    /// meanwhile): a fresh one, with the kubelet's labels and none of the annotations, NotReady
    /// until the next status update.
    fn register_if_missing(&self, host: &SimHost, boot_id: &str, os_version: &str) {
        let name = &host.inner.node;
        let mut st = self.store.lock();
        if st.get(nodes(), "", name).is_some() {
            return;
        }
        let node = host
            .inner
            .registration
            .node(name, false, boot_id, os_version);
        if st.create(nodes(), node).is_ok() {
            host.inner.registered_again.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn set_ready(
        &self,
        name: &str,
        ready: bool,
        boot_id: Option<String>,
        os_version: Option<&str>,
    ) {
        let now = now_rfc3339();
        let _ = self.store.lock().modify(nodes(), "", name, |v| {
            if let Some(cs) = v
                .pointer_mut("/status/conditions")
                .and_then(Value::as_array_mut)
            {
                for c in cs.iter_mut().filter(|c| c["type"] == "Ready") {
                    let status = if ready { "True" } else { "False" };
                    if c["status"] != status {
                        c["lastTransitionTime"] = json!(now);
                    }
                    c["status"] = json!(status);
                    c["lastHeartbeatTime"] = json!(now);
                    c["reason"] = json!(if ready {
                        "KubeletReady"
                    } else {
                        "KubeletNotReady"
                    });
                    c["message"] = json!(if ready {
                        "kubelet is posting ready status"
                    } else {
                        "node is rebooting"
                    });
                }
            }
            if let Some(b) = &boot_id {
                v["status"]["nodeInfo"]["bootID"] = json!(b);
            }
            if let Some(os) = os_version {
                v["status"]["nodeInfo"]["osImage"] = json!(format!("{OS_NAME} {os} (Oklo)"));
            }
            Ok(())
        });
    }

    /// The machine goes down, loses its non-DaemonSet pods, and comes back with a new boot ID.
    async fn reboot(self: Arc<Self>, host: SimHost) {
        let name = host.inner.node.clone();
        let _ = self
            .lifecycle
            .send(NodeLifecycle::RebootStarted(name.clone()));
        self.set_ready(&name, false, None, None);
        tokio::time::sleep(self.reboot_duration).await;
        if self.stopped.load(Ordering::SeqCst) || host.inner.stay_down.load(Ordering::SeqCst) {
            return;
        }
        let on_node: Vec<(String, String, bool)> = self
            .store
            .lock()
            .pods_on_node(&name)
            .map(|((ns, n), p)| {
                let ds = p
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|os| os.iter().any(|o| o["kind"] == "DaemonSet"));
                (ns.clone(), n.clone(), ds)
            })
            .collect();
        // One pod at a time, as a kubelet does: holding the store for all of a node's pods
        // stalled every other request while hundreds of nodes came back at once.
        for (ns, n, daemon) in on_node {
            let mut st = self.store.lock();
            if daemon {
                let _ = st.modify(pods(), &ns, &n, |v| {
                    v["status"] = json!({"phase": "Pending"});
                    Ok(())
                });
            } else {
                crate::controllers::kubelet_released(&mut st, &ns, &n);
            }
        }
        let version = host.finish_reboot();
        let boot_id = new_uid();
        self.register_if_missing(&host, &boot_id, &version);
        self.set_ready(&name, true, Some(boot_id.clone()), Some(&version));
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": format!("{name}."), "namespace": "default"},
            "involvedObject": {"kind": "Node", "name": name, "uid": name, "apiVersion": "v1"},
            "reason": "Rebooted", "type": "Warning",
            "message": format!("Node {name} has been rebooted, boot id: {boot_id}"),
            "source": {"component": "kubelet", "host": name},
            "firstTimestamp": now_rfc3339(), "lastTimestamp": now_rfc3339(), "count": 1,
        });
        let _ = self
            .store
            .lock()
            .create(resources::find("", "v1", "events").expect("events"), event);
        let _ = self.lifecycle.send(NodeLifecycle::Up(name));
    }
}

/// What a machine's kubelet registers its Node with.
struct Registration {
    labels: Value,
    index: usize,
    machine_id: String,
    system_uuid: String,
}

impl Registration {
    fn node(&self, name: &str, ready: bool, boot_id: &str, os_version: &str) -> Value {
        let index = self.index;
        let ip = format!("10.0.{}.{}", index / 250, index % 250 + 2);
        let now = now_rfc3339();
        let cond = |t: &str, s: &str, reason: &str, msg: &str| json!({"type": t, "status": s, "reason": reason, "message": msg, "lastHeartbeatTime": now, "lastTransitionTime": now});
        let ready = if ready {
            cond(
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
            )
        } else {
            cond(
                "Ready",
                "False",
                "KubeletNotReady",
                "container runtime status check may not have completed yet",
            )
        };
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": self.labels, "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {"podCIDR": format!("10.244.{}.0/24", index % 250), "providerID": format!("sandbox://{name}")},
            "status": {
                "conditions": [
                    cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                    cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                    cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                    ready,
                ],
                "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
                "capacity": {"cpu": "4", "memory": "16393232Ki", "pods": "110", "ephemeral-storage": "101430960Ki"},
                "allocatable": {"cpu": "4", "memory": "16290832Ki", "pods": "110", "ephemeral-storage": "93478772582"},
                "nodeInfo": {
                    "bootID": boot_id, "machineID": self.machine_id, "systemUUID": self.system_uuid,
                    "kernelVersion": "6.6.60-flatcar", "osImage": format!("{OS_NAME} {os_version} (Oklo)"),
                    "containerRuntimeVersion": "containerd://1.7.23", "kubeletVersion": "v1.33.0",
                    "kubeProxyVersion": "v1.33.0", "operatingSystem": "linux", "architecture": "amd64",
                },
            },
        })
    }
}

struct HostInner {
    node: String,
    registration: Registration,
    /// Times its kubelet registered the Node again after it was deleted.
    registered_again: AtomicU32,
    sim: Weak<Sim>,
    status: watch::Sender<UpdateStatus>,
    os_version: Mutex<String>,
    reboot_error: Mutex<Option<String>>,
    rebooting: AtomicBool,
    reboots: AtomicU32,
    stay_down: AtomicBool,
    /// Reboot calls still to accept without going down.
    lost_reboots: AtomicU32,
    /// Reboot calls accepted without going down so far.
    reboots_lost: AtomicU32,
}

/// A simulated Flatcar host: update_engine and logind.
#[derive(Clone)]
pub struct SimHost {
    inner: Arc<HostInner>,
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl SimHost {
    fn new(node: &str, sim: Weak<Sim>, registration: Registration) -> SimHost {
        let idle = UpdateStatus {
            last_checked_time: unix_now(),
            progress: 0.0,
            current_operation: "UPDATE_STATUS_IDLE".into(),
            new_version: "0.0.0".into(),
            new_size: 0,
        };
        SimHost {
            inner: Arc::new(HostInner {
                node: node.to_string(),
                registration,
                registered_again: AtomicU32::new(0),
                sim,
                status: watch::channel(idle).0,
                os_version: Mutex::new(INITIAL_VERSION.to_string()),
                reboot_error: Mutex::new(None),
                rebooting: AtomicBool::new(false),
                reboots: AtomicU32::new(0),
                stay_down: AtomicBool::new(false),
                lost_reboots: AtomicU32::new(0),
                reboots_lost: AtomicU32::new(0),
            }),
        }
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The running OS version.
    pub fn os_version(&self) -> String {
        self.inner
            .os_version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// /etc/os-release of this machine.
    pub fn os_release(&self) -> String {
        format!(
            "NAME=\"Flatcar Container Linux by Kinvolk\"\nID=flatcar\nID_LIKE=coreos\nVERSION={v}\nVERSION_ID={v}\nPRETTY_NAME=\"{OS_NAME} {v} (Oklo)\"\n",
            v = self.os_version()
        )
    }

    /// update_engine's current status.
    pub fn status(&self) -> UpdateStatus {
        self.inner.status.borrow().clone()
    }

    /// Sets update_engine's status, as a StatusUpdate signal would carry it.
    pub fn set_status(&self, s: UpdateStatus) {
        self.inner.status.send_replace(s);
    }

    /// An update arrives: update_engine checks, downloads, verifies, installs and then needs a reboot.
    pub async fn offer_update(&self, version: &str) {
        let steps = [
            ("UPDATE_STATUS_CHECKING_FOR_UPDATE", 0.0, ""),
            ("UPDATE_STATUS_UPDATE_AVAILABLE", 0.0, version),
            ("UPDATE_STATUS_DOWNLOADING", 0.5, version),
            ("UPDATE_STATUS_VERIFYING", 1.0, version),
            ("UPDATE_STATUS_FINALIZING", 1.0, version),
            ("UPDATE_STATUS_UPDATED_NEED_REBOOT", 1.0, version),
        ];
        for (op, progress, v) in steps {
            self.set_status(UpdateStatus {
                last_checked_time: unix_now(),
                progress,
                current_operation: op.into(),
                new_version: v.into(),
                new_size: 300_000_000,
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Makes logind's Reboot fail with `error` (None: succeed again).
    pub fn fail_reboots(&self, error: Option<&str>) {
        *self
            .inner
            .reboot_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = error.map(str::to_string);
    }

    /// From now on a reboot never ends: the machine goes down and stays down (a dead disk).
    pub fn stay_down(&self) {
        self.inner.stay_down.store(true, Ordering::SeqCst);
    }

    /// The next `n` reboot calls are accepted (logind answers) but the machine never goes
    /// down: a shutdown that hangs, or a reboot lost to a race.
    pub fn lose_reboots(&self, n: u32) {
        self.inner.lost_reboots.store(n, Ordering::SeqCst);
    }

    /// Reboot calls that were accepted and lost so far.
    /// Times its kubelet registered the Node again because it was deleted while the
    /// machine was down.
    pub fn registered_again(&self) -> u32 {
        self.inner.registered_again.load(Ordering::SeqCst)
    }

    pub fn reboots_lost(&self) -> u32 {
        self.inner.reboots_lost.load(Ordering::SeqCst)
    }

    /// How many times this machine rebooted.
    pub fn reboots(&self) -> u32 {
        self.inner.reboots.load(Ordering::SeqCst)
    }

    pub fn is_rebooting(&self) -> bool {
        self.inner.rebooting.load(Ordering::SeqCst)
    }

    /// Boots into the installed update, if any; returns the running version.
    fn finish_reboot(&self) -> String {
        let s = self.status();
        let mut os = self
            .inner
            .os_version
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if s.current_operation == "UPDATE_STATUS_UPDATED_NEED_REBOOT" && !s.new_version.is_empty() {
            *os = s.new_version.clone();
        }
        self.set_status(UpdateStatus {
            last_checked_time: unix_now(),
            progress: 0.0,
            current_operation: "UPDATE_STATUS_IDLE".into(),
            new_version: "0.0.0".into(),
            new_size: 0,
        });
        self.inner.reboots.fetch_add(1, Ordering::SeqCst);
        self.inner.rebooting.store(false, Ordering::SeqCst);
        os.clone()
    }
}

impl Host for SimHost {
    async fn status_updates(&self) -> Result<BoxStream<'static, UpdateStatus>, HostError> {
        let rx = self.inner.status.subscribe();
        let stream = futures::stream::unfold((rx, true), |(mut rx, first)| async move {
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let s = rx.borrow_and_update().clone();
            Some((s, (rx, false)))
        });
        Ok(Box::pin(stream))
    }

    async fn reboot(&self) -> Result<(), HostError> {
        if let Some(e) = self
            .inner
            .reboot_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Err(HostError::Other(e));
        }
        let sim = self
            .inner
            .sim
            .upgrade()
            .ok_or_else(|| HostError::Other("the sandbox is gone".into()))?;
        if self.inner.rebooting.load(Ordering::SeqCst) {
            return Ok(());
        }
        if self
            .inner
            .lost_reboots
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            self.inner.reboots_lost.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        if self.inner.rebooting.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        tokio::spawn(sim.reboot(self.clone()));
        Ok(())
    }
}

/// Node names helper for harnesses.
pub fn node_name(obj: &Value) -> &str {
    meta(obj, "name").unwrap_or("")
}
