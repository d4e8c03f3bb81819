//! The `pods/eviction` subresource and PodDisruptionBudget arithmetic, as the disruption
//! controller and the eviction REST handler compute them.

use std::collections::HashMap;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::resources;
use crate::selector::LabelSelector;
use crate::store::{Inner, Store, meta, now_rfc3339};

pub fn pods() -> &'static resources::Resource {
    resources::find("", "v1", "pods").expect("pods")
}

pub fn pdbs() -> &'static resources::Resource {
    resources::find("policy", "v1", "poddisruptionbudgets").expect("pdbs")
}

pub fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

pub fn is_terminating(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_some()
}

pub fn selector_of(pdb: &Value) -> Option<LabelSelector> {
    // A PDB without a selector selects nothing; `{}` selects every pod in the namespace.
    let sel = pdb.pointer("/spec/selector").filter(|s| !s.is_null())?;
    LabelSelector::from_label_selector_object(sel).ok()
}

fn scaled(v: &Value, total: i64) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => match s.strip_suffix('%') {
            Some(p) => p.parse::<i64>().ok().map(|p| (p * total + 99) / 100),
            None => s.parse().ok(),
        },
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PdbStatus {
    pub expected: i64,
    pub current_healthy: i64,
    pub desired_healthy: i64,
    pub disruptions_allowed: i64,
}

/// Computes a PDB's status from the pods in the store right now.
pub fn compute(store: &Inner, pdb: &Value) -> PdbStatus {
    let ns = meta(pdb, "namespace").unwrap_or("");
    let matching: Vec<&Value> = match selector_of(pdb) {
        Some(sel) => store
            .iter(pods(), Some(ns))
            .map(|(_, p)| p.as_ref())
            .filter(|p| sel.matches(p.pointer("/metadata/labels").and_then(Value::as_object)))
            .filter(|p| {
                !matches!(
                    p.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded" | "Failed")
                )
            })
            .collect(),
        None => Vec::new(),
    };
    let current_healthy = matching
        .iter()
        .filter(|p| is_ready(p) && !is_terminating(p))
        .count() as i64;
    // Expected pods come from the owning controllers' scale, as in the disruption controller.
    let mut owners: HashMap<String, i64> = HashMap::new();
    let mut unowned = 0;
    for p in &matching {
        let owner = p
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|os| os.iter().find(|o| o["controller"] == true));
        match owner {
            Some(o) => {
                let kind = o["kind"].as_str().unwrap_or("");
                let name = o["name"].as_str().unwrap_or("");
                let replicas = resources::find("apps", "v1", &format!("{}s", kind.to_lowercase()))
                    .and_then(|r| store.get(r, ns, name))
                    .and_then(|c| c.pointer("/spec/replicas").and_then(Value::as_i64));
                owners.insert(format!("{kind}/{name}"), replicas.unwrap_or(1));
            }
            None => unowned += 1,
        }
    }
    let expected = owners.values().sum::<i64>() + unowned;
    let spec = pdb.get("spec").cloned().unwrap_or(Value::Null);
    let desired_healthy = if let Some(min) = spec.get("minAvailable").filter(|v| !v.is_null()) {
        scaled(min, expected).unwrap_or(expected)
    } else if let Some(max) = spec.get("maxUnavailable").filter(|v| !v.is_null()) {
        (expected - scaled(max, expected).unwrap_or(0)).max(0)
    } else {
        expected
    };
    PdbStatus {
        expected,
        current_healthy,
        desired_healthy,
        disruptions_allowed: (current_healthy - desired_healthy).max(0),
    }
}

/// Writes a PDB's status if it changed.
pub fn refresh(store: &mut Inner, ns: &str, name: &str) {
    let Some(pdb) = store.get(pdbs(), ns, name) else {
        return;
    };
    let s = compute(store, &pdb);
    let allowed = s.disruptions_allowed > 0;
    let old_cond = pdb.pointer("/status/conditions/0").cloned();
    let transition = match &old_cond {
        Some(c) if (c["status"] == "True") == allowed => c["lastTransitionTime"].clone(),
        _ => json!(now_rfc3339()),
    };
    let generation = pdb
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));
    let status = json!({
        "observedGeneration": generation,
        "disruptionsAllowed": s.disruptions_allowed,
        "currentHealthy": s.current_healthy,
        "desiredHealthy": s.desired_healthy,
        "expectedPods": s.expected,
        "conditions": [{
            "type": "DisruptionAllowed",
            "status": if allowed { "True" } else { "False" },
            "reason": if allowed { "SufficientPods" } else { "InsufficientPods" },
            "message": "",
            "observedGeneration": generation,
            "lastTransitionTime": transition,
        }],
    });
    if pdb.get("status") != Some(&status) {
        let _ = store.modify(pdbs(), ns, name, |v| {
            v["status"] = status;
            Ok(())
        });
    }
}

/// POST pods/{name}/eviction. Checking the budget and deleting the pod happen under one lock,
/// so two concurrent evictions can never both spend the last allowed disruption.
pub fn evict(store: &Store, ns: &str, name: &str, body: &Value) -> ApiResult<(StatusCode, Value)> {
    let kind = body
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("Eviction");
    if kind != "Eviction" {
        return Err(ApiError::bad_request(format!(
            "expected an Eviction, got kind {kind:?}"
        )));
    }
    if let Some(n) = meta(body, "name")
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "name in URL does not match name in Eviction object ({n} != {name})"
        )));
    }
    let grace = body
        .pointer("/deleteOptions/gracePeriodSeconds")
        .and_then(Value::as_i64);
    let mut st = store.lock();
    let pod = st
        .get(pods(), ns, name)
        .ok_or_else(|| ApiError::not_found("", "pods", name))?;
    // DeleteOptions preconditions hold for evictions as for deletes (409 on mismatch).
    if let Some(pre) = body.pointer("/deleteOptions/preconditions") {
        let uid_bad = pre
            .get("uid")
            .and_then(Value::as_str)
            .is_some_and(|u| Some(u) != meta(&pod, "uid"));
        let rv_bad = pre
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|r| Some(r) != meta(&pod, "resourceVersion"));
        if uid_bad || rv_bad {
            return Err(ApiError::conflict("", "pods", name));
        }
    }
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    let done = || json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    // Pods that are finished, not started or already terminating need no budget.
    if matches!(phase, "Succeeded" | "Failed" | "Pending") || is_terminating(&pod) {
        crate::api::delete_object(&mut st, pods(), ns, name, grace)?;
        return Ok((StatusCode::CREATED, done()));
    }
    let labels = pod.pointer("/metadata/labels").and_then(Value::as_object);
    let matching: Vec<std::sync::Arc<Value>> = st
        .iter(pdbs(), Some(ns))
        .filter(|(_, pdb)| selector_of(pdb).is_some_and(|s| s.matches(labels)))
        .map(|(_, p)| p.clone())
        .collect();
    if matching.len() > 1 {
        return Err(ApiError::internal(
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    if let Some(pdb) = matching.first() {
        let s = compute(&st, pdb);
        // IfHealthyBudget: an unready pod may go only while the application is not disrupted.
        let allowed = if is_ready(&pod) {
            s.disruptions_allowed > 0
        } else {
            s.current_healthy >= s.desired_healthy
        };
        if !allowed {
            let pdb_name = meta(pdb, "name").unwrap_or("");
            return Err(ApiError::new(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.").with_details(json!({
                "causes": [{"reason": "DisruptionBudget", "message": format!("The disruption budget {pdb_name} needs {} healthy pods and has {} currently", s.desired_healthy, s.current_healthy)}]
            })));
        }
    }
    crate::api::delete_object(&mut st, pods(), ns, name, grace)?;
    // Only the budget that selects the pod can have changed.
    if let Some(pdb) = matching.first() {
        refresh(&mut st, ns, meta(pdb, "name").unwrap_or(""));
    }
    Ok((StatusCode::CREATED, done()))
}
