//! Server-side printing: meta.k8s.io/v1 Tables as kube-apiserver builds them
//! for `kubectl get` (pkg/printers/internalversion/printers.go). The server
//! always prints "wide", so priority-1 cells are always present; kubectl hides
//! them unless `-o wide`.

use serde_json::{Map, Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const CONTAINERS_DESC: &str = "Names of each container in the template.";
const IMAGES_DESC: &str = "Images referenced by each container in the template.";

/// (name, type, priority, description); the "Name" column gets format "name".
type Col = (&'static str, &'static str, u8, &'static str);

const NAME: Col = ("Name", "string", 0, NAME_DESC);
const AGE: Col = ("Age", "string", 0, AGE_DESC);

/// Builds the Table for `items` (all of `kind`) using the current time.
pub fn to_table(
    kind: &str,
    items: &[Value],
    resource_version: &str,
    continue_token: Option<&str>,
) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    to_table_at(kind, items, resource_version, continue_token, now)
}

/// [`to_table`] with an explicit "now" (Unix seconds), for deterministic ages.
pub fn to_table_at(
    kind: &str,
    items: &[Value],
    resource_version: &str,
    continue_token: Option<&str>,
    now: i64,
) -> Value {
    let cols = columns(kind);
    let column_definitions: Vec<Value> = cols
        .iter()
        .map(|(name, ty, prio, desc)| {
            // The attacher is a driver's name, and kube-apiserver marks it so.
            let format = if *name == "Name" || (kind, *name) == ("VolumeAttachment", "Attacher") {
                "name"
            } else {
                ""
            };
            json!({"name": name, "type": ty, "format": format, "description": desc, "priority": prio})
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            let p = Printer { obj, now };
            let mut row = json!({"cells": p.cells(kind), "object": obj});
            if kind == "Pod"
                && let Some(c) = pod_row_condition(obj)
            {
                row["conditions"] = json!([c]);
            }
            row
        })
        .collect();
    let mut meta = Map::new();
    if !resource_version.is_empty() {
        meta.insert("resourceVersion".into(), resource_version.into());
    }
    if let Some(c) = continue_token.filter(|c| !c.is_empty()) {
        meta.insert("continue".into(), c.into());
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
           "columnDefinitions": column_definitions, "rows": rows})
}

fn columns(kind: &str) -> Vec<Col> {
    let template = [
        ("Containers", "string", 1, CONTAINERS_DESC),
        ("Images", "string", 1, IMAGES_DESC),
        (
            "Selector",
            "string",
            1,
            "A label query over pods that should match the replica count.",
        ),
    ];
    let mut cols = match kind {
        "Node" => vec![
            NAME,
            ("Status", "string", 0, "The status of the node"),
            ("Roles", "string", 0, "The roles of the node"),
            AGE,
            (
                "Version",
                "string",
                0,
                "Kubelet Version reported by the node.",
            ),
            (
                "Internal-IP",
                "string",
                1,
                "List of addresses reachable to the node.",
            ),
            (
                "External-IP",
                "string",
                1,
                "List of addresses reachable to the node.",
            ),
            (
                "OS-Image",
                "string",
                1,
                "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
            ),
            (
                "Kernel-Version",
                "string",
                1,
                "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
            ),
            (
                "Container-Runtime",
                "string",
                1,
                "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
            ),
        ],
        "Pod" => vec![
            NAME,
            (
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            (
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            (
                "Restarts",
                "string",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            AGE,
            (
                "IP",
                "string",
                1,
                "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
            ),
            (
                "Node",
                "string",
                1,
                "NodeName indicates in which node this pod is scheduled.",
            ),
            (
                "Nominated Node",
                "string",
                1,
                "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.",
            ),
            (
                "Readiness Gates",
                "string",
                1,
                "If specified, all readiness gates will be evaluated for pod readiness.",
            ),
        ],
        "Event" => vec![
            (
                "Last Seen",
                "string",
                0,
                "The time at which the most recent occurrence of this event was recorded.",
            ),
            (
                "Type",
                "string",
                0,
                "Type of this event (Normal, Warning), new types could be added in the future",
            ),
            (
                "Reason",
                "string",
                0,
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            (
                "Object",
                "string",
                0,
                "The object that this event is about.",
            ),
            (
                "Subobject",
                "string",
                1,
                "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement.",
            ),
            (
                "Source",
                "string",
                1,
                "The component reporting this event. Should be a short machine understandable string.",
            ),
            (
                "Message",
                "string",
                0,
                "A human-readable description of the status of this operation.",
            ),
            (
                "First Seen",
                "string",
                1,
                "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
            ),
            (
                "Count",
                "string",
                1,
                "The number of times this event has occurred.",
            ),
            ("Name", "string", 1, NAME_DESC),
        ],
        "Lease" => vec![
            NAME,
            (
                "Holder",
                "string",
                0,
                "holderIdentity contains the identity of the holder of a current lease.",
            ),
            AGE,
        ],
        "PodDisruptionBudget" => vec![
            NAME,
            (
                "Min Available",
                "string",
                0,
                "The minimum number of pods that must be available.",
            ),
            (
                "Max Unavailable",
                "string",
                0,
                "The maximum number of pods that may be unavailable.",
            ),
            (
                "Allowed Disruptions",
                "integer",
                0,
                "Calculated number of pods that may be disrupted at this time.",
            ),
            AGE,
        ],
        "DaemonSet" => vec![
            NAME,
            (
                "Desired",
                "integer",
                0,
                "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod).",
            ),
            (
                "Current",
                "integer",
                0,
                "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
            ),
            (
                "Ready",
                "integer",
                0,
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
            ),
            (
                "Up-to-date",
                "integer",
                0,
                "The total number of nodes that are running updated daemon pod",
            ),
            (
                "Available",
                "integer",
                0,
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
            ),
            (
                "Node Selector",
                "string",
                0,
                "NodeSelector is a selector which must be true for the pod to fit on a node.",
            ),
            AGE,
        ],
        "Deployment" => vec![
            NAME,
            ("Ready", "string", 0, "Number of the pod with ready state"),
            (
                "Up-to-date",
                "string",
                0,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            (
                "Available",
                "string",
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            AGE,
        ],
        "ReplicaSet" => vec![
            NAME,
            (
                "Desired",
                "integer",
                0,
                "Replicas is the number of desired replicas.",
            ),
            (
                "Current",
                "integer",
                0,
                "Replicas is the most recently observed number of replicas.",
            ),
            (
                "Ready",
                "integer",
                0,
                "The number of ready replicas for this replica set.",
            ),
            AGE,
        ],
        "StatefulSet" => vec![
            NAME,
            ("Ready", "string", 0, "Number of the pod with ready state"),
            AGE,
        ],
        "Namespace" => vec![
            NAME,
            ("Status", "string", 0, "The status of the namespace"),
            AGE,
        ],
        "ConfigMap" => vec![
            NAME,
            ("Data", "string", 0, "Data contains the configuration data."),
            AGE,
        ],
        "Service" => vec![
            NAME,
            (
                "Type",
                "string",
                0,
                "type determines how the Service is exposed.",
            ),
            (
                "Cluster-IP",
                "string",
                0,
                "clusterIP is the IP address of the service and is usually assigned randomly.",
            ),
            (
                "External-IP",
                "string",
                0,
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
            ),
            (
                "Port(s)",
                "string",
                0,
                "The list of ports that are exposed by this service.",
            ),
            AGE,
            (
                "Selector",
                "string",
                1,
                "Route service traffic to pods with label keys and values matching this selector.",
            ),
        ],
        "ValidatingAdmissionPolicy" => vec![
            NAME,
            (
                "Validations",
                "integer",
                0,
                "Validations indicates the number of validation rules defined in this configuration",
            ),
            (
                "ParamKind",
                "string",
                0,
                "ParamKind specifies the kind of resources used to parameterize this policy",
            ),
            AGE,
        ],
        "ValidatingAdmissionPolicyBinding" => vec![
            NAME,
            (
                "PolicyName",
                "string",
                0,
                "PolicyName indicates the policy definition which the policy binding binded to",
            ),
            (
                "ParamRef",
                "string",
                0,
                "ParamRef indicates the param resource which sets the configration param",
            ),
            AGE,
        ],
        "VolumeAttachment" => vec![
            NAME,
            (
                "Attacher",
                "string",
                0,
                "attacher indicates the name of the volume driver that MUST handle this request. This is the name returned by GetPluginName().",
            ),
            (
                "PV",
                "string",
                0,
                "persistentVolumeName represents the name of the persistent volume to attach.",
            ),
            (
                "Node",
                "string",
                0,
                "nodeName represents the node that the volume should be attached to.",
            ),
            (
                "Attached",
                "boolean",
                0,
                "attached indicates the volume is successfully attached. This field must only be set by the entity completing the attach operation, i.e. the external-attacher.",
            ),
            AGE,
        ],
        _ => vec![NAME, AGE],
    };
    match kind {
        "DaemonSet" | "Deployment" | "ReplicaSet" => cols.extend(template),
        "StatefulSet" => cols.extend(&template[..2]),
        _ => {}
    }
    cols
}

struct Printer<'a> {
    obj: &'a Value,
    now: i64,
}

impl Printer<'_> {
    fn s(&self, ptr: &str) -> &str {
        self.obj.pointer(ptr).and_then(Value::as_str).unwrap_or("")
    }

    fn i(&self, ptr: &str) -> i64 {
        self.obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
    }

    fn arr(&self, ptr: &str) -> &[Value] {
        self.obj
            .pointer(ptr)
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// translateTimestampSince: "<unknown>" for a missing time.
    fn since(&self, ts: &str) -> String {
        parse_rfc3339(ts).map_or_else(|| "<unknown>".into(), |t| human_duration(self.now - t))
    }

    fn age(&self) -> Value {
        self.since(self.s("/metadata/creationTimestamp")).into()
    }

    fn name(&self) -> Value {
        self.s("/metadata/name").into()
    }

    fn cells(&self, kind: &str) -> Vec<Value> {
        match kind {
            "Node" => self.node(),
            "Pod" => self.pod(),
            "Event" => self.event(),
            "Lease" => vec![
                self.name(),
                self.s("/spec/holderIdentity").into(),
                self.age(),
            ],
            "PodDisruptionBudget" => {
                let int_or_str = |p| match self.obj.pointer(p) {
                    None | Some(Value::Null) => "N/A".to_string(),
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                };
                vec![
                    self.name(),
                    int_or_str("/spec/minAvailable").into(),
                    int_or_str("/spec/maxUnavailable").into(),
                    self.i("/status/disruptionsAllowed").into(),
                    self.age(),
                ]
            }
            "DaemonSet" => {
                let st = |f: &str| Value::from(self.i(&format!("/status/{f}")));
                let mut c = vec![
                    self.name(),
                    st("desiredNumberScheduled"),
                    st("currentNumberScheduled"),
                    st("numberReady"),
                    st("updatedNumberScheduled"),
                    st("numberAvailable"),
                    format_labels(self.obj.pointer("/spec/template/spec/nodeSelector")).into(),
                    self.age(),
                ];
                c.extend(
                    self.template_cells(format_label_selector(self.obj.pointer("/spec/selector"))),
                );
                c
            }
            "Deployment" => {
                let sel = label_selector_string(self.obj.pointer("/spec/selector"))
                    .unwrap_or_else(|| "<invalid>".into());
                let mut c = vec![
                    self.name(),
                    format!("{}/{}", self.i("/status/readyReplicas"), self.replicas()).into(),
                    self.i("/status/updatedReplicas").into(),
                    self.i("/status/availableReplicas").into(),
                    self.age(),
                ];
                c.extend(self.template_cells(sel));
                c
            }
            "ReplicaSet" => {
                let mut c = vec![
                    self.name(),
                    self.replicas().into(),
                    self.i("/status/replicas").into(),
                    self.i("/status/readyReplicas").into(),
                    self.age(),
                ];
                c.extend(
                    self.template_cells(format_label_selector(self.obj.pointer("/spec/selector"))),
                );
                c
            }
            "StatefulSet" => {
                let ready = format!("{}/{}", self.i("/status/readyReplicas"), self.replicas());
                let mut c = vec![self.name(), ready.into(), self.age()];
                c.extend(self.template_cells(String::new()).into_iter().take(2));
                c
            }
            "Namespace" => vec![self.name(), self.s("/status/phase").into(), self.age()],
            "ConfigMap" => {
                let n = |p| {
                    self.obj
                        .pointer(p)
                        .and_then(Value::as_object)
                        .map_or(0, Map::len)
                };
                vec![
                    self.name(),
                    ((n("/data") + n("/binaryData")) as i64).into(),
                    self.age(),
                ]
            }
            "Service" => self.service(),
            "ValidatingAdmissionPolicy" => {
                let param_kind = match self.obj.pointer("/spec/paramKind") {
                    Some(pk) if !pk.is_null() => format!(
                        "{}/{}",
                        pk["apiVersion"].as_str().unwrap_or(""),
                        pk["kind"].as_str().unwrap_or("")
                    ),
                    _ => "<unset>".into(),
                };
                vec![
                    self.name(),
                    (self.arr("/spec/validations").len() as i64).into(),
                    param_kind.into(),
                    self.age(),
                ]
            }
            "ValidatingAdmissionPolicyBinding" => {
                // The API server's printer; it cannot tell a cluster-scoped param, so `*/`.
                let param_ref = match self.obj.pointer("/spec/paramRef") {
                    Some(pr) if pr["name"].as_str().is_some_and(|n| !n.is_empty()) => {
                        match pr["namespace"].as_str().filter(|ns| !ns.is_empty()) {
                            Some(ns) => format!("{ns}/{}", pr["name"].as_str().unwrap_or("")),
                            None => format!("*/{}", pr["name"].as_str().unwrap_or("")),
                        }
                    }
                    _ => "<unset>".into(),
                };
                vec![
                    self.name(),
                    self.s("/spec/policyName").into(),
                    param_ref.into(),
                    self.age(),
                ]
            }
            "VolumeAttachment" => vec![
                self.name(),
                self.s("/spec/attacher").into(),
                self.s("/spec/source/persistentVolumeName").into(),
                self.s("/spec/nodeName").into(),
                // A Go bool: absent reads false.
                (self.obj.pointer("/status/attached") == Some(&Value::Bool(true))).into(),
                self.age(),
            ],
            _ => vec![self.name(), self.age()],
        }
    }

    /// spec.replicas, which the server defaults to 1.
    fn replicas(&self) -> i64 {
        self.obj
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
    }

    /// CONTAINERS, IMAGES, SELECTOR (layoutContainerCells).
    fn template_cells(&self, selector: String) -> Vec<Value> {
        let cs = self.arr("/spec/template/spec/containers");
        let join = |f: &str| {
            cs.iter()
                .map(|c| c[f].as_str().unwrap_or(""))
                .collect::<Vec<_>>()
                .join(",")
        };
        vec![join("name").into(), join("image").into(), selector.into()]
    }

    fn node(&self) -> Vec<Value> {
        let ready = self
            .arr("/status/conditions")
            .iter()
            .rev()
            .find(|c| c["type"] == "Ready");
        let mut status = vec![match ready {
            Some(c) if c["status"] == "True" => "Ready",
            Some(_) => "NotReady",
            None => "Unknown",
        }];
        if self.obj.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
            status.push("SchedulingDisabled");
        }
        let mut roles: Vec<&str> = Vec::new();
        for (k, v) in self
            .obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if let Some(r) = k
                .strip_prefix("node-role.kubernetes.io/")
                .filter(|r| !r.is_empty())
            {
                roles.push(r);
            } else if k == "kubernetes.io/role" && v.as_str().is_some_and(|v| !v.is_empty()) {
                roles.push(v.as_str().unwrap_or_default());
            }
        }
        roles.sort();
        roles.dedup();
        let roles = if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        };
        let addr = |t: &str| {
            let a = self
                .arr("/status/addresses")
                .iter()
                .find(|a| a["type"] == t);
            a.and_then(|a| a["address"].as_str())
                .unwrap_or("<none>")
                .to_string()
        };
        let info = |f: &str| match self.s(&format!("/status/nodeInfo/{f}")) {
            "" => "<unknown>".to_string(),
            s => s.to_string(),
        };
        vec![
            self.name(),
            status.join(",").into(),
            roles.into(),
            self.age(),
            self.s("/status/nodeInfo/kubeletVersion").into(),
            addr("InternalIP").into(),
            addr("ExternalIP").into(),
            info("osImage").into(),
            info("kernelVersion").into(),
            info("containerRuntimeVersion").into(),
        ]
    }

    fn pod(&self) -> Vec<Value> {
        let init_specs = self.arr("/spec/initContainers");
        let is_sidecar = |name: &str| {
            init_specs
                .iter()
                .any(|c| c["name"] == name && c["restartPolicy"] == "Always")
        };
        let total = self.arr("/spec/containers").len()
            + init_specs
                .iter()
                .filter(|c| c["restartPolicy"] == "Always")
                .count();
        let mut ready = 0;
        let phase = self.s("/status/phase");
        let mut reason = match self.s("/status/reason") {
            "" => phase.to_string(),
            r => r.to_string(),
        };
        let conditions = self.arr("/status/conditions");
        let cond_true = |t: &str| {
            conditions
                .iter()
                .any(|c| c["type"] == t && c["status"] == "True")
        };
        if conditions
            .iter()
            .any(|c| c["type"] == "PodScheduled" && c["reason"] == "SchedulingGated")
        {
            reason = "SchedulingGated".into();
        }
        // Restart totals and the latest lastState.terminated.finishedAt (Unix secs).
        let (mut restarts, mut last) = (0i64, None::<i64>);
        let (mut sidecar_restarts, mut sidecar_last) = (0i64, None::<i64>);
        let bump = |last: &mut Option<i64>, st: &Value| {
            if let Some(t) = st
                .pointer("/lastState/terminated/finishedAt")
                .and_then(Value::as_str)
                .and_then(parse_rfc3339)
            {
                *last = Some(last.map_or(t, |l| l.max(t)));
            }
        };
        let term_reason = |t: &Value, prefix: &str| match t["reason"].as_str().unwrap_or("") {
            "" => match t["signal"].as_i64().unwrap_or(0) {
                0 => format!("{prefix}ExitCode:{}", t["exitCode"].as_i64().unwrap_or(0)),
                s => format!("{prefix}Signal:{s}"),
            },
            r => format!("{prefix}{r}"),
        };

        let mut initializing = false;
        let init_statuses = self.arr("/status/initContainerStatuses");
        for (i, st) in init_statuses.iter().enumerate() {
            restarts += st["restartCount"].as_i64().unwrap_or(0);
            bump(&mut last, st);
            let sidecar = is_sidecar(st["name"].as_str().unwrap_or(""));
            if sidecar {
                sidecar_restarts += st["restartCount"].as_i64().unwrap_or(0);
                bump(&mut sidecar_last, st);
            }
            let term = &st["state"]["terminated"];
            let waiting = st["state"]["waiting"]["reason"].as_str().unwrap_or("");
            if term.is_object() && term["exitCode"].as_i64().unwrap_or(0) == 0 {
                continue;
            } else if sidecar && st["started"] == true {
                if st["ready"] == true {
                    ready += 1;
                }
                continue;
            } else if term.is_object() {
                reason = term_reason(term, "Init:");
            } else if !waiting.is_empty() && waiting != "PodInitializing" {
                reason = format!("Init:{waiting}");
            } else {
                reason = format!("Init:{i}/{}", init_specs.len());
            }
            initializing = true;
            break;
        }

        if !initializing || cond_true("Initialized") {
            restarts = sidecar_restarts;
            last = sidecar_last;
            let mut has_running = false;
            for st in self.arr("/status/containerStatuses").iter().rev() {
                restarts += st["restartCount"].as_i64().unwrap_or(0);
                bump(&mut last, st);
                let state = &st["state"];
                let waiting = state["waiting"]["reason"].as_str().unwrap_or("");
                if !waiting.is_empty() {
                    reason = waiting.to_string();
                } else if state["terminated"].is_object() {
                    reason = term_reason(&state["terminated"], "");
                } else if st["ready"] == true && state["running"].is_object() {
                    has_running = true;
                    ready += 1;
                }
            }
            if reason == "Completed" && has_running {
                reason = if cond_true("Ready") {
                    "Running"
                } else {
                    "NotReady"
                }
                .into();
            }
        }

        if self
            .obj
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null())
        {
            if self.s("/status/reason") == "NodeLost" {
                reason = "Unknown".into();
            } else if phase != "Succeeded" && phase != "Failed" {
                reason = "Terminating".into();
            }
        }

        let restarts_str = match last {
            Some(t) if restarts != 0 => {
                format!("{restarts} ({} ago)", human_duration(self.now - t))
            }
            _ => restarts.to_string(),
        };
        let or_none = |s: &str| {
            if s.is_empty() {
                "<none>".to_string()
            } else {
                s.to_string()
            }
        };
        let gates = self.arr("/spec/readinessGates");
        let gates = if gates.is_empty() {
            "<none>".to_string()
        } else {
            let ok = gates
                .iter()
                .filter(|g| {
                    conditions
                        .iter()
                        .find(|c| c["type"] == g["conditionType"])
                        .is_some_and(|c| c["status"] == "True")
                })
                .count();
            format!("{ok}/{}", gates.len())
        };
        vec![
            self.name(),
            format!("{ready}/{total}").into(),
            reason.into(),
            restarts_str.into(),
            self.age(),
            or_none(self.s("/status/podIPs/0/ip")).into(),
            or_none(self.s("/spec/nodeName")).into(),
            or_none(self.s("/status/nominatedNodeName")).into(),
            gates.into(),
        ]
    }

    /// Core v1 events; events.k8s.io/v1 field names are mapped onto them.
    fn event(&self) -> Vec<Value> {
        let v1 = self.s("/apiVersion").starts_with("events.k8s.io/");
        let f = |core: &str, new: &str| self.s(if v1 { new } else { core });
        let first = match f("/firstTimestamp", "/deprecatedFirstTimestamp") {
            "" => self.since(self.s("/eventTime")),
            t => self.since(t),
        };
        let mut last = match f("/lastTimestamp", "/deprecatedLastTimestamp") {
            "" => first.clone(),
            t => self.since(t),
        };
        let mut count = self.i(if v1 { "/deprecatedCount" } else { "/count" });
        if self.obj.get("series").is_some_and(Value::is_object) {
            last = self.since(self.s("/series/lastObservedTime"));
            count = self.i("/series/count");
        } else if count == 0 {
            count = 1;
        }
        let io = if v1 { "/regarding" } else { "/involvedObject" };
        let kind = self.s(&format!("{io}/kind")).to_lowercase();
        let target = match self.s(&format!("{io}/name")) {
            "" => kind,
            n => format!("{kind}/{n}"),
        };
        let src = if v1 { "/deprecatedSource" } else { "/source" };
        let first_non_empty = |a: &str, b: &str| {
            if a.is_empty() {
                b.to_string()
            } else {
                a.to_string()
            }
        };
        let component = first_non_empty(
            self.s(&format!("{src}/component")),
            f("/reportingComponent", "/reportingController"),
        );
        let host = first_non_empty(self.s(&format!("{src}/host")), self.s("/reportingInstance"));
        let source = if host.is_empty() {
            component
        } else {
            format!("{component}, {host}")
        };
        vec![
            last.into(),
            self.s("/type").into(),
            self.s("/reason").into(),
            target.into(),
            self.s(&format!("{io}/fieldPath")).into(),
            source.into(),
            f("/message", "/note").trim().into(),
            first.into(),
            count.into(),
            self.name(),
        ]
    }

    fn service(&self) -> Vec<Value> {
        let ty = match self.s("/spec/type") {
            "" => "ClusterIP",
            t => t,
        };
        let cluster_ip = match (self.s("/spec/clusterIPs/0"), self.s("/spec/clusterIP")) {
            ("", "") => "<none>",
            ("", ip) | (ip, _) => ip,
        };
        let strs = |p| {
            self.arr(p)
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let external = strs("/spec/externalIPs");
        let external_ip = match ty {
            "ClusterIP" | "NodePort" if external.is_empty() => "<none>".to_string(),
            "ClusterIP" | "NodePort" => external.join(","),
            "LoadBalancer" => {
                let mut lb: Vec<String> = self
                    .arr("/status/loadBalancer/ingress")
                    .iter()
                    .filter_map(|i| {
                        i["ip"]
                            .as_str()
                            .filter(|s| !s.is_empty())
                            .or(i["hostname"].as_str())
                    })
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                lb.sort();
                lb.dedup();
                lb.extend(external);
                if lb.is_empty() {
                    "<pending>".to_string()
                } else {
                    lb.join(",")
                }
            }
            "ExternalName" => self.s("/spec/externalName").to_string(),
            _ => "<unknown>".to_string(),
        };
        let ports: Vec<String> = self
            .arr("/spec/ports")
            .iter()
            .map(|p| {
                let proto = p["protocol"].as_str().unwrap_or("TCP");
                match p["nodePort"].as_i64().unwrap_or(0) {
                    0 => format!("{}/{proto}", p["port"].as_i64().unwrap_or(0)),
                    np => format!("{}:{np}/{proto}", p["port"].as_i64().unwrap_or(0)),
                }
            })
            .collect();
        let ports = if ports.is_empty() {
            "<none>".to_string()
        } else {
            ports.join(",")
        };
        vec![
            self.name(),
            ty.into(),
            cluster_ip.into(),
            external_ip.into(),
            ports.into(),
            self.age(),
            format_labels(self.obj.pointer("/spec/selector")).into(),
        ]
    }
}

/// Succeeded/Failed pods carry a Completed row condition.
fn pod_row_condition(pod: &Value) -> Option<Value> {
    let (reason, message) = match pod.pointer("/status/phase").and_then(Value::as_str)? {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!({"type": "Completed", "status": "True", "reason": reason, "message": message}))
}

/// labels.FormatLabels: sorted `k=v` pairs, or "<none>".
fn format_labels(m: Option<&Value>) -> String {
    let mut pairs: Vec<String> = m
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        "<none>".into()
    } else {
        pairs.join(",")
    }
}

/// metav1.FormatLabelSelector: "<none>" when empty/nil, "<error>" when invalid.
fn format_label_selector(sel: Option<&Value>) -> String {
    match label_selector_string(sel) {
        None => "<error>".into(),
        Some(s) if s.is_empty() => "<none>".into(),
        Some(s) => s,
    }
}

/// LabelSelectorAsSelector(sel).String(); None if an operator is invalid.
pub(crate) fn label_selector_string(sel: Option<&Value>) -> Option<String> {
    let Some(Value::Object(sel)) = sel else {
        return Some(String::new());
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    for (k, v) in sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or("").to_string();
        let mut vals: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        vals.sort();
        vals.dedup();
        let s = match e["operator"].as_str()? {
            "In" => format!("{key} in ({})", vals.join(",")),
            "NotIn" => format!("{key} notin ({})", vals.join(",")),
            "Exists" => key.clone(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        };
        reqs.push((key, s));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Some(reqs.into_iter().map(|r| r.1).collect::<Vec<_>>().join(","))
}

/// k8s.io/apimachinery/pkg/util/duration.HumanDuration for whole seconds.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        return match secs % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return match (hours / 24) % 365 {
            0 => format!("{}y", hours / 24 / 365),
            d => format!("{}y{d}d", hours / 24 / 365),
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Parses an RFC 3339 timestamp ("2024-05-01T10:00:00Z", fractional seconds
/// and numeric offsets allowed) to Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: &str = "2024-01-01T00:00:00Z";
    const NOW: i64 = 1_704_067_200 + 3 * 86400 + 5 * 3600; // T0 + 3d5h

    fn table(kind: &str, items: Vec<Value>) -> Value {
        to_table_at(kind, &items, "42", None, NOW)
    }

    fn cells(kind: &str, obj: Value) -> Vec<Value> {
        table(kind, vec![obj])["rows"][0]["cells"]
            .as_array()
            .unwrap()
            .clone()
    }

    fn col_names(t: &Value) -> Vec<String> {
        t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn human_duration_matches_apimachinery() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (182, "3m2s"),
            (599, "9m59s"),
            (600, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (4 * 3600 + 30 * 60, "4h30m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (3 * 86400 + 5 * 3600, "3d5h"),
            (7 * 86400, "7d"),
            (8 * 86400, "8d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (800 * 86400, "2y70d"),
            (8 * 365 * 86400, "8y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339(T0), Some(1_704_067_200));
        assert_eq!(
            parse_rfc3339("2024-02-29T12:30:45.123456Z"),
            Some(1_709_209_845)
        );
        assert_eq!(
            parse_rfc3339("2024-01-01T02:00:00+02:00"),
            Some(1_704_067_200)
        );
        assert_eq!(
            parse_rfc3339("2023-12-31T23:00:00-01:00"),
            Some(1_704_067_200)
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1));
        for bad in [
            "",
            "2024-01-01",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "x024-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn table_envelope() {
        let t = to_table_at(
            "ConfigMap",
            &[json!({"metadata": {"name": "c", "creationTimestamp": T0}, "data": {"a": "1"}})],
            "42",
            Some("tok"),
            NOW,
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(
            t["metadata"],
            json!({"resourceVersion": "42", "continue": "tok"})
        );
        let c0 = &t["columnDefinitions"][0];
        assert_eq!(
            (
                c0["name"].as_str(),
                c0["format"].as_str(),
                c0["priority"].as_i64()
            ),
            (Some("Name"), Some("name"), Some(0))
        );
        assert!(
            c0["description"]
                .as_str()
                .unwrap()
                .starts_with("Name must be unique")
        );
        assert_eq!(t["rows"][0]["cells"], json!(["c", 1, "3d5h"]));
        assert_eq!(t["rows"][0]["object"]["data"]["a"], "1");
        let empty = to_table_at("Pod", &[], "", None, NOW);
        assert_eq!(empty["metadata"], json!({}));
        assert_eq!(empty["rows"], json!([]));
    }

    #[test]
    fn node_rows() {
        let t = table("Node", vec![]);
        assert_eq!(
            col_names(&t),
            [
                "Name",
                "Status",
                "Roles",
                "Age",
                "Version",
                "Internal-IP",
                "External-IP",
                "OS-Image",
                "Kernel-Version",
                "Container-Runtime"
            ]
        );
        let n = json!({"metadata": {"name": "n1", "creationTimestamp": T0,
                "labels": {"node-role.kubernetes.io/worker": "", "node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "edge"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.1"}],
                "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Ubuntu", "kernelVersion": "6.1", "containerRuntimeVersion": "containerd://1.7"}}});
        assert_eq!(
            cells("Node", n),
            json!([
                "n1",
                "Ready,SchedulingDisabled",
                "control-plane,edge,worker",
                "3d5h",
                "v1.32.0",
                "10.0.0.1",
                "<none>",
                "Ubuntu",
                "6.1",
                "containerd://1.7"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
        let bare = json!({"metadata": {"name": "n2"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!(
            cells("Node", bare)[..5],
            [
                json!("n2"),
                json!("NotReady"),
                json!("<none>"),
                json!("<unknown>"),
                json!("")
            ]
        );
        let c = cells("Node", json!({"metadata": {"name": "n3"}}));
        assert_eq!(c[1], "Unknown");
        assert_eq!(c[7], "<unknown>");
    }

    fn running_pod() -> Value {
        json!({"metadata": {"name": "web", "creationTimestamp": T0},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.1.0.5"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}},
                     "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-01-04T04:59:00Z"}}},
                    {"name": "b", "ready": true, "restartCount": 0, "state": {"running": {}}}]}})
    }

    #[test]
    fn pod_rows() {
        let t = table("Pod", vec![]);
        assert_eq!(
            col_names(&t),
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        assert_eq!(
            cells("Pod", running_pod()),
            json!([
                "web",
                "2/2",
                "Running",
                "2 (60s ago)",
                "3d5h",
                "10.1.0.5",
                "n1",
                "<none>",
                "<none>"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
        let pending = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}], "readinessGates": [{"conditionType": "x"}]},
            "status": {"phase": "Pending", "containerStatuses": [{"name": "a", "state": {"waiting": {"reason": "ImagePullBackOff"}}, "restartCount": 0}]}});
        assert_eq!(
            cells("Pod", pending),
            json!([
                "p",
                "0/1",
                "ImagePullBackOff",
                "0",
                "<unknown>",
                "<none>",
                "<none>",
                "<none>",
                "0/1"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
        assert_eq!(
            cells("Pod", json!({"metadata": {"name": "q"}}))[1..3],
            [json!("0/0"), json!("")]
        );
    }

    #[test]
    fn pod_terminating_and_completed() {
        let mut p = running_pod();
        p["metadata"]["deletionTimestamp"] = json!("2024-01-04T05:00:00Z");
        assert_eq!(cells("Pod", p.clone())[2], "Terminating");
        p["status"]["reason"] = json!("NodeLost");
        assert_eq!(cells("Pod", p)[2], "Unknown");
        let done = json!({"metadata": {"name": "j"}, "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}});
        let t = table("Pod", vec![done]);
        assert_eq!(t["rows"][0]["cells"][2], "Completed");
        assert_eq!(t["rows"][0]["conditions"][0]["reason"], "Succeeded");
        let killed = json!({"metadata": {"name": "k"}, "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Failed", "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}});
        assert_eq!(cells("Pod", killed)[2], "Signal:9");
    }

    #[test]
    fn pod_init_containers() {
        let p = json!({"metadata": {"name": "i"},
            "spec": {"initContainers": [{"name": "i1"}, {"name": "i2"}, {"name": "sc", "restartPolicy": "Always"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "state": {"terminated": {"exitCode": 0}}, "restartCount": 0},
                {"name": "i2", "state": {"waiting": {"reason": "PodInitializing"}}, "restartCount": 1}],
                "containerStatuses": [{"name": "a", "state": {"waiting": {"reason": "PodInitializing"}}}]}});
        let c = cells("Pod", p.clone());
        assert_eq!(
            (c[1].as_str(), c[2].as_str(), c[3].as_str()),
            (Some("0/2"), Some("Init:1/3"), Some("1"))
        );
        let mut crash = p;
        crash["status"]["initContainerStatuses"][1]["state"] =
            json!({"waiting": {"reason": "CrashLoopBackOff"}});
        assert_eq!(cells("Pod", crash.clone())[2], "Init:CrashLoopBackOff");
        crash["status"]["initContainerStatuses"][1]["state"] =
            json!({"terminated": {"exitCode": 2}});
        assert_eq!(cells("Pod", crash)[2], "Init:ExitCode:2");
    }

    #[test]
    fn event_rows() {
        let t = table("Event", vec![]);
        assert_eq!(
            col_names(&t),
            [
                "Last Seen",
                "Type",
                "Reason",
                "Object",
                "Subobject",
                "Source",
                "Message",
                "First Seen",
                "Count",
                "Name"
            ]
        );
        let e = json!({"metadata": {"name": "web.17a"}, "type": "Warning", "reason": "BackOff", "message": " Back-off restarting \n",
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{a}"},
            "source": {"component": "kubelet", "host": "n1"}, "count": 4,
            "firstTimestamp": "2024-01-04T04:00:00Z", "lastTimestamp": "2024-01-04T04:59:30Z"});
        assert_eq!(
            cells("Event", e),
            json!([
                "30s",
                "Warning",
                "BackOff",
                "pod/web",
                "spec.containers{a}",
                "kubelet, n1",
                "Back-off restarting",
                "60m",
                4,
                "web.17a"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
        let e = json!({"metadata": {"name": "x"}, "type": "Normal", "reason": "Sync", "involvedObject": {"kind": "Node"},
            "eventTime": "2024-01-04T04:59:55.000001Z", "reportingComponent": "ctrl"});
        assert_eq!(
            cells("Event", e)[..4],
            [json!("5s"), json!("Normal"), json!("Sync"), json!("node")]
        );
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "metadata": {"name": "y"}, "type": "Normal", "reason": "Evicted",
            "regarding": {"kind": "Pod", "name": "p"}, "note": "gone", "eventTime": "2024-01-04T04:58:00.000000Z",
            "reportingController": "taint-controller", "series": {"count": 3, "lastObservedTime": "2024-01-04T04:59:00.000000Z"}});
        assert_eq!(
            cells("Event", v1),
            json!([
                "60s",
                "Normal",
                "Evicted",
                "pod/p",
                "",
                "taint-controller",
                "gone",
                "2m",
                3,
                "y"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
    }

    #[test]
    fn lease_pdb_namespace() {
        let l = json!({"metadata": {"name": "n1", "creationTimestamp": T0}, "spec": {"holderIdentity": "n1"}});
        assert_eq!(cells("Lease", l), [json!("n1"), json!("n1"), json!("3d5h")]);
        assert_eq!(
            cells("Lease", json!({"metadata": {"name": "x"}, "spec": {}}))[1],
            ""
        );
        let pdb = json!({"metadata": {"name": "pdb"}, "spec": {"minAvailable": 2}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            cells("PodDisruptionBudget", pdb),
            [
                json!("pdb"),
                json!("2"),
                json!("N/A"),
                json!(1),
                json!("<unknown>")
            ]
        );
        let pdb = json!({"metadata": {"name": "pdb"}, "spec": {"maxUnavailable": "25%"}});
        assert_eq!(
            cells("PodDisruptionBudget", pdb)[1..4],
            [json!("N/A"), json!("25%"), json!(0)]
        );
        assert_eq!(
            cells(
                "Namespace",
                json!({"metadata": {"name": "default"}, "status": {"phase": "Active"}})
            )[1],
            "Active"
        );
    }

    #[test]
    fn workloads() {
        let tmpl = json!({"spec": {"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "busybox"}], "nodeSelector": {"zone": "z1", "os": "linux"}}});
        let d = json!({"metadata": {"name": "d"}, "spec": {"replicas": 3, "template": tmpl.clone(),
            "selector": {"matchLabels": {"app": "d"}, "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x", "a"]}]}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        assert_eq!(
            col_names(&table("Deployment", vec![])),
            [
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        assert_eq!(
            cells("Deployment", d),
            json!([
                "d",
                "2/3",
                3,
                2,
                "<unknown>",
                "a,b",
                "nginx,busybox",
                "app=d,tier notin (a,x)"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
        let rs = json!({"metadata": {"name": "rs"}, "spec": {"template": tmpl.clone(), "selector": {"matchLabels": {"app": "d"}}}, "status": {"replicas": 1}});
        assert_eq!(
            cells("ReplicaSet", rs),
            json!(["rs", 1, 1, 0, "<unknown>", "a,b", "nginx,busybox", "app=d"])
                .as_array()
                .unwrap()
                .clone()
        );
        let ds = json!({"metadata": {"name": "ds"}, "spec": {"template": tmpl, "selector": {"matchExpressions": [{"key": "k", "operator": "Bad"}]}},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2, "updatedNumberScheduled": 3, "numberAvailable": 2}});
        assert_eq!(col_names(&table("DaemonSet", vec![])).len(), 11);
        assert_eq!(
            cells("DaemonSet", ds),
            json!([
                "ds",
                3,
                3,
                2,
                3,
                2,
                "os=linux,zone=z1",
                "<unknown>",
                "a,b",
                "nginx,busybox",
                "<error>"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
        let ds = json!({"metadata": {"name": "ds"}, "spec": {"selector": {}}});
        assert_eq!(
            cells("DaemonSet", ds)[6..],
            [
                json!("<none>"),
                json!("<unknown>"),
                json!(""),
                json!(""),
                json!("<none>")
            ]
        );
        let sts = json!({"metadata": {"name": "s"}, "spec": {"replicas": 2}, "status": {"readyReplicas": 1}});
        assert_eq!(
            cells("StatefulSet", sts),
            [
                json!("s"),
                json!("1/2"),
                json!("<unknown>"),
                json!(""),
                json!("")
            ]
        );
    }

    #[test]
    fn services_and_fallback() {
        let s = json!({"metadata": {"name": "svc"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}], "selector": {"app": "x"}}});
        assert_eq!(
            cells("Service", s),
            json!([
                "svc",
                "NodePort",
                "10.96.0.10",
                "<none>",
                "80:30080/TCP,53/UDP",
                "<unknown>",
                "app=x"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
        let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIPs": ["10.0.0.9"]}});
        assert_eq!(
            cells("Service", lb)[2..5],
            [json!("10.0.0.9"), json!("<pending>"), json!("<none>")]
        );
        let t = table(
            "Secretish",
            vec![json!({"metadata": {"name": "x", "creationTimestamp": T0}})],
        );
        assert_eq!(col_names(&t), ["Name", "Age"]);
        assert_eq!(t["rows"][0]["cells"], json!(["x", "3d5h"]));
    }

    #[test]
    fn volume_attachments() {
        let va = json!({"metadata": {"name": "csi-ab", "creationTimestamp": T0},
            "spec": {"attacher": "sandbox.csi.k8s.io", "nodeName": "node-1", "source": {"persistentVolumeName": "pv-shop-data"}},
            "status": {"attached": true}});
        let t = table("VolumeAttachment", vec![va]);
        assert_eq!(
            col_names(&t),
            ["Name", "Attacher", "PV", "Node", "Attached", "Age"]
        );
        assert_eq!(t["columnDefinitions"][1]["format"], "name");
        assert_eq!(t["columnDefinitions"][4]["type"], "boolean");
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "csi-ab",
                "sandbox.csi.k8s.io",
                "pv-shop-data",
                "node-1",
                true,
                "3d5h"
            ])
        );
        assert_eq!(
            cells(
                "VolumeAttachment",
                json!({"metadata": {"name": "x"}, "spec": {}})
            )[2..5],
            [json!(""), json!(""), json!(false)]
        );
    }

    #[test]
    fn to_table_uses_wall_clock() {
        let t = to_table(
            "Pod",
            &[json!({"metadata": {"name": "p", "creationTimestamp": "2000-01-01T00:00:00Z"}})],
            "1",
            None,
        );
        assert!(t["rows"][0]["cells"][4].as_str().unwrap().ends_with('y'));
    }
}
