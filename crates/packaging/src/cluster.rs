//! A sandbox cluster whose update-operator and update-agents run as the shipped manifests
//! say: the container's command, args and environment are taken from a rendered Deployment
//! and DaemonSet (kustomize or Helm), and the process runs either on the host or from the
//! OCI image in runc. Each simulated node gets its own private dbus-daemon with
//! update_engine and logind fakes bridged to the sandbox's simulated host, so the agent
//! talks real D-Bus and a logind `Reboot` really reboots the simulated node; the agent's
//! container is killed when its node goes down and started again when it is up, as the
//! kubelet would.
//!
//! The sandbox authorizes with RBAC and enforces the manifests' admission policy; each
//! container is its pod's service account (an agent's token carries its node's name): in
//! runc through the in-cluster path a pod has (the service-account folder and
//! `KUBERNETES_SERVICE_HOST`/`PORT`, over HTTPS), on the host through a kubeconfig with the
//! same token.
//!
//! What a pod would get and a process here cannot is said where it is substituted:
//! - every pod has its own network namespace, so `--metrics-address` is moved to a free
//!   loopback port (runc runs here only without a network namespace);
//! - on the host (no mounts), the agent's hostPath files are passed as the flags that
//!   name them (`--dbus-address`, `--os-release-path`, `--update-conf-paths`).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use host::Host;
use host::testing::{FakeLogind, FakeUpdateEngine, TestBus};
use sandbox::identity::{NODE_NAME_EXTRA, POD_NAME_EXTRA, UserInfo};
use sandbox::{NodeLifecycle, Sandbox, SimHost};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

pub const OPERATOR_DEPLOYMENT: &str = "flatcar-linux-update-operator";
pub const AGENT_DAEMONSET: &str = "flatcar-linux-update-agent";

/// The operator's and the agent's pod templates, as rendered.
#[derive(Debug, Clone)]
pub struct Workloads {
    pub operator: Value,
    pub agent: Value,
}

impl Workloads {
    /// Finds the operator's Deployment and the agent's DaemonSet among rendered objects.
    pub fn from_manifests(objects: &[Value]) -> Workloads {
        let find = |kind: &str, name: &str| {
            objects
                .iter()
                .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("the manifests have no {kind} {name}"))
                .clone()
        };
        Workloads {
            operator: find("Deployment", OPERATOR_DEPLOYMENT),
            agent: find("DaemonSet", AGENT_DAEMONSET),
        }
    }
}

/// Where the containers run.
#[derive(Debug, Clone)]
pub enum Runtime {
    /// As processes on the host, from the workspace's own build (`crate::binary`).
    Host,
    /// From an unpacked OCI image (its config.json and rootfs, as `umoci unpack` leaves
    /// them), in runc.
    Runc { bundle: PathBuf },
}

/// Whether `n` is through its update to `version`: labelled with it, no reboot needed, not
/// granted, not in progress, not cordoned.
pub fn rolled_out(n: &k8s_openapi::api::core::v1::Node, version: &str) -> bool {
    use protocol::keys;
    use sandbox::testing::{annotation, label, unschedulable};
    label(n, keys::LABEL_VERSION) == Some(version)
        && annotation(n, keys::REBOOT_NEEDED) == Some(keys::FALSE)
        && annotation(n, keys::REBOOT_OK) != Some(keys::TRUE)
        && annotation(n, keys::REBOOT_IN_PROGRESS) != Some(keys::TRUE)
        && !unschedulable(n)
}

/// The YAML documents of a multi-document stream, as JSON values (empty ones dropped).
pub fn yaml_docs(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// One container of a workload's pod template, resolved for one pod.
#[derive(Debug, Clone)]
struct Spec {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    uid: Option<u64>,
    gid: Option<u64>,
    read_only_root: bool,
    mounts: Vec<(String, String)>,       // (mountPath, volume name)
    host_paths: HashMap<String, String>, // volume name -> hostPath
}

fn spec_of(workload: &Value, node: Option<&str>) -> Spec {
    let pod = &workload["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut argv = strings(&c["command"]);
    argv.extend(strings(&c["args"]));
    assert!(!argv.is_empty(), "the container has no command: {c}");
    let namespace = workload["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let mut env = Vec::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("env name").to_string();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else {
            match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("spec.nodeName") => node.unwrap_or("").to_string(),
                Some("metadata.namespace") => namespace.to_string(),
                Some("metadata.name") => format!(
                    "{}-pod",
                    workload["metadata"]["name"].as_str().unwrap_or("")
                ),
                other => panic!("env {name}: fieldRef {other:?} is not simulated"),
            }
        };
        env.push((name, value));
    }
    let ctx = |k: &str| {
        c["securityContext"][k]
            .as_u64()
            .or(pod["securityContext"][k].as_u64())
    };
    let mounts = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["mountPath"].as_str().unwrap_or("").to_string(),
                m["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let host_paths = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            Some((
                v["name"].as_str()?.to_string(),
                v["hostPath"]["path"].as_str()?.to_string(),
            ))
        })
        .collect();
    Spec {
        argv,
        env,
        uid: ctx("runAsUser"),
        gid: ctx("runAsGroup"),
        read_only_root: c["securityContext"]["readOnlyRootFilesystem"] == true,
        mounts,
        host_paths,
    }
}

/// Each pod has its own network namespace; here they share the host's, so the metrics
/// listener moves to a free loopback port.
fn own_metrics_port(argv: &mut [String]) {
    for a in argv.iter_mut() {
        if a.starts_with("--metrics-address=") {
            *a = "--metrics-address=127.0.0.1:0".into();
        }
    }
}

/// A running container: a process on the host, or a runc container.
pub struct Container {
    name: String,
    child: Child,
    runc: Option<(PathBuf, String)>, // (runc --root, container id)
    log: PathBuf,
}

impl Container {
    /// What it printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    fn kill(&mut self) {
        if let Some((root, id)) = &self.runc {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(root)
                .args(["kill", id, "KILL"])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some((root, id)) = &self.runc {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(root)
                .args(["delete", "--force", id])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How a container reaches the API server, as its pod's service account.
#[derive(Debug, Clone)]
enum ApiAccess {
    /// What a pod gets: the service account's folder (`token`, `ca.crt`, `namespace`)
    /// mounted at its fixed path, and `KUBERNETES_SERVICE_HOST`/`PORT` naming the sandbox's
    /// HTTPS endpoint. The binaries use their in-cluster configuration, as in a pod.
    InCluster {
        dir: PathBuf,
        env: Vec<(String, String)>,
    },
    /// A kubeconfig with the same token and CA: a process on the host cannot have the
    /// service-account folder at its fixed path.
    Kubeconfig(PathBuf),
}

const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The identity kube-apiserver gives the pod of `workload` on `node`: its service
/// account, with the node's and the pod's names as a projected token carries them.
fn identity(workload: &Value, node: Option<&str>) -> UserInfo {
    let namespace = workload["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let account = workload["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    let mut user = UserInfo::service_account(namespace, account);
    if let Some(node) = node {
        let pod = format!(
            "{}-{node}",
            workload["metadata"]["name"].as_str().unwrap_or("")
        );
        user.extra.insert(NODE_NAME_EXTRA.into(), vec![node.into()]);
        user.extra.insert(POD_NAME_EXTRA.into(), vec![pod]);
    }
    user
}

/// Writes what the container of `workload` on `node` needs to reach the API server.
fn access_for(
    sandbox: &Sandbox,
    runtime: &Runtime,
    dir: &Path,
    workload: &Value,
    node: Option<&str>,
) -> ApiAccess {
    let user = identity(workload, node);
    let name = format!(
        "{}-{}",
        workload["metadata"]["name"].as_str().unwrap_or(""),
        node.unwrap_or("pod")
    );
    match runtime {
        Runtime::Runc { .. } => {
            let dir = dir.join("serviceaccounts").join(name);
            let env = sandbox
                .service_account_dir(&user, &dir)
                .expect("service account folder");
            ApiAccess::InCluster { dir, env }
        }
        Runtime::Host => {
            let path = dir.join(format!("{name}.kubeconfig"));
            sandbox
                .write_kubeconfig_for(&user, &path)
                .expect("kubeconfig");
            ApiAccess::Kubeconfig(path)
        }
    }
}

struct Launcher {
    runtime: Runtime,
    dir: PathBuf,
    runc_root: PathBuf,
    next_id: Mutex<u32>,
}

impl Launcher {
    fn start(
        &self,
        name: &str,
        mut spec: Spec,
        access: &ApiAccess,
        host_files: &HashMap<String, PathBuf>,
    ) -> Container {
        own_metrics_port(&mut spec.argv);
        let n = {
            let mut g = self.next_id.lock().unwrap();
            *g += 1;
            *g
        };
        let id = format!("{name}-{n}");
        let log = self.dir.join(format!("{id}.log"));
        let out = File::create(&log).expect("container log");
        match &self.runtime {
            Runtime::Host => {
                let program = Path::new(&spec.argv[0])
                    .file_name()
                    .expect("a command path")
                    .to_string_lossy()
                    .into_owned();
                let mut cmd = Command::new(crate::binary(&program));
                cmd.args(&spec.argv[1..]);
                // Without mounts, the files a hostPath would provide are named by flags.
                for (mount_path, volume) in &spec.mounts {
                    let Some(file) = host_files.get(volume) else {
                        continue;
                    };
                    let flag = match mount_path.as_str() {
                        "/var/run/dbus" => format!(
                            "--dbus-address=unix:path={}",
                            file.join("system_bus_socket").display()
                        ),
                        "/etc/os-release" => format!("--os-release-path={}", file.display()),
                        "/etc/flatcar" => {
                            format!("--update-conf-paths={}", file.join("update.conf").display())
                        }
                        _ => continue,
                    };
                    cmd.arg(flag);
                }
                cmd.env_clear()
                    .envs(spec.env.iter().map(|(k, v)| (k, v)))
                    .env("RUST_LOG", "info");
                match access {
                    ApiAccess::Kubeconfig(path) => {
                        cmd.env("KUBECONFIG", path);
                    }
                    ApiAccess::InCluster { .. } => {
                        unreachable!("a process on the host uses a kubeconfig")
                    }
                }
                let child = cmd
                    .stdin(Stdio::null())
                    .stdout(out.try_clone().unwrap())
                    .stderr(out)
                    .spawn()
                    .unwrap_or_else(|e| panic!("{program} starts: {e}"));
                Container {
                    name: id,
                    child,
                    runc: None,
                    log,
                }
            }
            Runtime::Runc { bundle } => {
                let config = runc_config(bundle, &spec, access, host_files);
                let b = self.dir.join(&id);
                std::fs::create_dir_all(&b).unwrap();
                std::fs::write(
                    b.join("config.json"),
                    serde_json::to_vec_pretty(&config).unwrap(),
                )
                .unwrap();
                let runc = crate::tool("runc", "runc");
                let child = Command::new(runc)
                    .arg("--root")
                    .arg(&self.runc_root)
                    .args(["run", "--bundle"])
                    .arg(&b)
                    .arg(&id)
                    .stdin(Stdio::null())
                    .stdout(out.try_clone().unwrap())
                    .stderr(out)
                    .spawn()
                    .expect("runc starts");
                Container {
                    name: id.clone(),
                    child,
                    runc: Some((self.runc_root.clone(), id)),
                    log,
                }
            }
        }
    }
}

/// The image's own runtime config (from `umoci unpack`) with what the pod spec says:
/// command and args, environment, user, read-only root, no capabilities, the volumes.
/// Removed because runc cannot set them up here: rlimits, the network and cgroup
/// namespaces.
fn runc_config(
    bundle: &Path,
    spec: &Spec,
    access: &ApiAccess,
    host_files: &HashMap<String, PathBuf>,
) -> Value {
    let text =
        std::fs::read_to_string(bundle.join("config.json")).expect("the bundle's config.json");
    let mut c: Value = serde_json::from_str(&text).expect("config.json is JSON");
    let p = &mut c["process"];
    p.as_object_mut().unwrap().remove("rlimits");
    p["terminal"] = json!(false);
    p["args"] = json!(spec.argv);
    let mut env: Vec<String> = p["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str().map(String::from))
        .collect();
    env.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
    if let ApiAccess::InCluster { env: service, .. } = access {
        env.extend(service.iter().map(|(k, v)| format!("{k}={v}")));
    }
    env.push("RUST_LOG=info".into());
    p["env"] = json!(env);
    if let Some(uid) = spec.uid {
        p["user"]["uid"] = json!(uid);
        p["user"]["gid"] = json!(spec.gid.unwrap_or(uid));
    }
    // The manifests drop every capability and forbid privilege escalation.
    p["capabilities"] =
        json!({"bounding": [], "effective": [], "permitted": [], "inheritable": [], "ambient": []});
    p["noNewPrivileges"] = json!(true);
    c["root"] = json!({
        "path": bundle.join("rootfs"),
        "readonly": spec.read_only_root,
    });
    if let Some(ns) = c["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "network" && n["type"] != "cgroup");
    }
    let mounts = c["mounts"].as_array_mut().expect("mounts");
    let bind = |dst: &str, src: &Path, ro: bool| {
        let mut options = vec!["rbind", "nosuid", "nodev"];
        if ro {
            options.push("ro");
        }
        json!({"destination": dst, "type": "bind", "source": src, "options": options})
    };
    match access {
        ApiAccess::InCluster { dir, .. } => mounts.push(bind(SERVICE_ACCOUNT_DIR, dir, true)),
        ApiAccess::Kubeconfig(_) => {
            unreachable!("a runc container gets the service account folder")
        }
    }
    for (mount_path, volume) in &spec.mounts {
        let src = host_files
            .get(volume)
            .unwrap_or_else(|| panic!("no simulated host path for volume {volume}"));
        // The D-Bus socket directory is the only read-write mount in the manifests.
        mounts.push(bind(mount_path, src, mount_path != "/var/run/dbus"));
    }
    c
}

/// A simulated node's D-Bus side: update_engine and logind on a private bus, bridged to
/// the sandbox's simulated host.
struct NodeBus {
    bus: TestBus,
    _engine: Arc<FakeUpdateEngine>,
    logind: Arc<FakeLogind>,
    bridges: Vec<JoinHandle<()>>,
}

impl Drop for NodeBus {
    fn drop(&mut self) {
        for b in &self.bridges {
            b.abort();
        }
    }
}

impl NodeBus {
    async fn start(host: SimHost) -> NodeBus {
        let bus = TestBus::start().unwrap_or_else(|e| {
            panic!("dbus-daemon does not start ({e}): apt-get install dbus (scripts/setup installs every tool the tests need)")
        });
        let engine = Arc::new(
            FakeUpdateEngine::start(bus.address(), host.status())
                .await
                .expect("fake update_engine"),
        );
        let logind = Arc::new(FakeLogind::start(bus.address()).await.expect("fake logind"));
        // update_engine says what the simulated host's update_engine says.
        let status = tokio::spawn({
            let (engine, host) = (engine.clone(), host.clone());
            async move {
                let mut updates = host.status_updates().await.expect("status stream");
                while let Some(s) = updates.next().await {
                    let _ = engine.set_status(s).await;
                }
            }
        });
        // logind's Reboot reboots the simulated host.
        let reboot = tokio::spawn({
            let logind = logind.clone();
            async move {
                let mut seen = 0;
                loop {
                    logind.wait_for_reboot_calls(seen + 1).await;
                    seen += 1;
                    let _ = host.reboot().await;
                }
            }
        });
        NodeBus {
            bus,
            _engine: engine,
            logind,
            bridges: vec![status, reboot],
        }
    }

    /// The bus socket's directory, with the socket also under the name a host's system bus
    /// has (`system_bus_socket`), so it can be mounted at /var/run/dbus unchanged.
    fn socket_dir(&self) -> PathBuf {
        // `unix:path=/tmp/…/bus,guid=…`
        let path = self
            .bus
            .address()
            .strip_prefix("unix:path=")
            .and_then(|a| a.split(',').next())
            .expect("a unix:path= address");
        let dir = Path::new(path).parent().unwrap().to_path_buf();
        let link = dir.join("system_bus_socket");
        if !link.exists() {
            std::os::unix::fs::symlink(Path::new(path).file_name().unwrap(), &link).unwrap();
        }
        dir
    }
}

struct Node {
    host: SimHost,
    bus: NodeBus,
    /// hostPath volume name -> the simulated host's file or directory.
    files: HashMap<String, PathBuf>,
    access: ApiAccess,
    agent: Option<Container>,
    starts: u32,
}

/// The sandbox with the operator and one agent per node running as the workloads say.
pub struct Cluster {
    pub sandbox: Sandbox,
    launcher: Arc<Launcher>,
    workloads: Workloads,
    operator_access: ApiAccess,
    nodes: Arc<Mutex<HashMap<String, Node>>>,
    operator: Option<Container>,
    follower: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a sandbox with `nodes` that authorizes with RBAC, applies `manifests` to it
    /// as the admin with `kubectl apply` (their RBAC and admission policy included), and
    /// starts the operator and an agent on every node as the manifests' workloads say, each
    /// as its pod's service account: what the manifests do not grant is refused.
    pub async fn start(runtime: Runtime, manifests: &[Value], nodes: &[&str]) -> Cluster {
        let workloads = Workloads::from_manifests(manifests);
        let sandbox = Sandbox::start(sandbox::Options {
            pod_start: Duration::from_millis(50),
            reboot_duration: Duration::from_secs(1),
            authorization: sandbox::authz::Mode::Rbac,
            ..Default::default()
        })
        .await
        .expect("sandbox starts");
        let dir = tempfile::tempdir().expect("tempdir");
        let runc_root = dir.path().join("runc");
        std::fs::create_dir_all(&runc_root).unwrap();
        let launcher = Arc::new(Launcher {
            runtime,
            dir: dir.path().to_path_buf(),
            runc_root,
            next_id: Mutex::new(0),
        });
        // A simulated pod has no process to end early on SIGTERM: it would take the whole
        // default grace period (30 s) on every drain. The real binaries exit at once.
        let mut manifests = manifests.to_vec();
        for o in &mut manifests {
            let spec = &mut o["spec"]["template"]["spec"];
            if spec.is_object() && spec.get("terminationGracePeriodSeconds").is_none() {
                spec["terminationGracePeriodSeconds"] = json!(1);
            }
        }
        apply(&sandbox.kubeconfig_path(), &manifests);
        let operator_access = access_for(
            &sandbox,
            &launcher.runtime,
            dir.path(),
            &workloads.operator,
            None,
        );
        let agent_spec = spec_of(&workloads.agent, None);
        let mut members = HashMap::new();
        for name in nodes {
            let host = sandbox.add_node(name, &[]).expect("node");
            let bus = NodeBus::start(host.clone()).await;
            // What a Flatcar host has at the DaemonSet's hostPaths.
            let root = dir.path().join("hosts").join(name);
            let mut files = HashMap::new();
            for (volume, host_path) in &agent_spec.host_paths {
                let path = match host_path.as_str() {
                    "/var/run/dbus" => bus.socket_dir(),
                    "/etc/os-release" => {
                        let f = root.join("os-release");
                        std::fs::create_dir_all(&root).unwrap();
                        std::fs::write(&f, host.os_release()).unwrap();
                        f
                    }
                    other => {
                        let d = root.join(other.trim_start_matches('/'));
                        std::fs::create_dir_all(&d).unwrap();
                        if other == "/etc/flatcar" {
                            std::fs::write(d.join("update.conf"), "GROUP=stable\n").unwrap();
                        }
                        d
                    }
                };
                files.insert(volume.clone(), path);
            }
            let access = access_for(
                &sandbox,
                &launcher.runtime,
                dir.path(),
                &workloads.agent,
                Some(name),
            );
            members.insert(
                name.to_string(),
                Node {
                    host,
                    bus,
                    files,
                    access,
                    agent: None,
                    starts: 0,
                },
            );
        }
        let nodes = Arc::new(Mutex::new(members));
        // The kubelet's part: a node going down takes its agent with it; a node coming
        // up starts it again.
        let mut lifecycle = sandbox.lifecycle();
        let follower = tokio::spawn({
            let (nodes, launcher, agent) =
                (nodes.clone(), launcher.clone(), workloads.agent.clone());
            async move {
                while let Ok(ev) = lifecycle.recv().await {
                    let mut g = nodes.lock().unwrap();
                    match ev {
                        NodeLifecycle::RebootStarted(n) => {
                            if let Some(node) = g.get_mut(&n) {
                                node.agent = None;
                            }
                        }
                        NodeLifecycle::Up(n) => {
                            if let Some(node) = g.get_mut(&n) {
                                start_agent(&launcher, &agent, &n, node);
                            }
                        }
                    }
                }
            }
        });
        let operator = launcher.start(
            "update-operator",
            spec_of(&workloads.operator, None),
            &operator_access,
            &HashMap::new(),
        );
        {
            let mut g = nodes.lock().unwrap();
            for (name, node) in g.iter_mut() {
                start_agent(&launcher, &workloads.agent, name, node);
            }
        }
        Cluster {
            sandbox,
            launcher,
            workloads,
            operator_access,
            nodes,
            operator: Some(operator),
            follower,
            _dir: dir,
        }
    }

    /// logind Reboot calls on `node`'s bus so far.
    pub fn reboot_calls(&self, node: &str) -> usize {
        self.nodes.lock().unwrap()[node]
            .bus
            .logind
            .reboot_calls()
            .len()
    }

    /// How many times `node`'s agent was started.
    pub fn agent_starts(&self, node: &str) -> u32 {
        self.nodes.lock().unwrap()[node].starts
    }

    /// Every container's log, the ones that ended included, for a failure message.
    pub fn logs(&self) -> String {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.launcher.dir)
            .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default();
        files.retain(|f| f.extension().is_some_and(|e| e == "log"));
        files.sort();
        let mut out = String::new();
        for f in files {
            let name = f.file_stem().unwrap_or_default().to_string_lossy();
            out += &format!(
                "--- {name}\n{}\n",
                std::fs::read_to_string(&f).unwrap_or_default()
            );
        }
        out
    }

    /// Whether the operator's and every agent's container still runs.
    pub fn all_running(&mut self) -> bool {
        let op = self.operator.as_mut().is_some_and(Container::running);
        op && self
            .nodes
            .lock()
            .unwrap()
            .values_mut()
            .all(|n| n.agent.as_mut().is_none_or(Container::running))
    }

    /// Restarts the operator (e.g. after changing its flags in `workloads`).
    pub fn restart_operator(&mut self) {
        self.operator = None;
        self.operator = Some(self.launcher.start(
            "update-operator",
            spec_of(&self.workloads.operator, None),
            &self.operator_access,
            &HashMap::new(),
        ));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.follower.abort();
        self.operator = None;
        for node in self.nodes.lock().unwrap().values_mut() {
            node.agent = None;
        }
    }
}

/// `kubectl apply -f -` of `objects`, as a user installs them.
fn apply(kubeconfig: &Path, objects: &[Value]) {
    use std::io::Write;
    let stream: String = objects
        .iter()
        .map(|o| format!("---\n{}", serde_yaml::to_string(o).expect("YAML")))
        .collect();
    let mut child = Command::new(crate::tool("kubectl", "kubernetes-client"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stream.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl apply of the manifests failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start_agent(launcher: &Launcher, agent: &Value, name: &str, node: &mut Node) {
    node.agent = None;
    // The host booted its installed version: its os-release says so.
    if let Some(f) = node.files.values().find(|f| f.ends_with("os-release")) {
        std::fs::write(f, node.host.os_release()).expect("os-release");
    }
    node.agent = Some(launcher.start(
        &format!("update-agent-{name}"),
        spec_of(agent, Some(name)),
        &node.access,
        &node.files,
    ));
    node.starts += 1;
}
