//! `pods/log`: what `kubectl logs` reads. A simulated container runs no program, so its log is
//! what its simulated kubelet did for it (image, start, readiness), derived from the pod's
//! status, with kube-apiserver's errors for a missing container or a pod not yet running.

use std::collections::HashMap;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::api::{ApiState, Req};
use crate::error::{ApiError, ApiResult};

pub fn handle(st: &ApiState, verb: &str, req: &Req, q: &HashMap<String, String>) -> Response {
    if verb != "get" {
        return ApiError::method_not_allowed().into_response();
    }
    match log_text(st, req, q) {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response(),
        Err(e) => e.into_response(),
    }
}

fn parse_num(q: &HashMap<String, String>, key: &str) -> ApiResult<Option<i64>> {
    match q.get(key) {
        None => Ok(None),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Some(n)),
            _ => Err(ApiError::bad_request(format!(
                "{key}: Invalid value: {s:?}: must be a non-negative integer"
            ))),
        },
    }
}

fn log_text(st: &ApiState, req: &Req, q: &HashMap<String, String>) -> ApiResult<String> {
    let ns = req.ns.as_deref().unwrap_or("");
    let name = req.name.as_deref().unwrap_or("");
    let tail = parse_num(q, "tailLines")?;
    let limit_bytes = parse_num(q, "limitBytes")?;
    let timestamps = q.get("timestamps").is_some_and(|t| t == "true");
    let since = match (parse_num(q, "sinceSeconds")?, q.get("sinceTime")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "at most one of sinceTime or sinceSeconds may be specified",
            ));
        }
        (Some(s), None) => Some(chrono::Utc::now() - chrono::Duration::seconds(s)),
        (None, Some(t)) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| ApiError::bad_request(format!("sinceTime: invalid time {t:?}: {e}")))?
                .with_timezone(&chrono::Utc),
        ),
        (None, None) => None,
    };
    let pod = st
        .store
        .lock()
        .get(req.res, ns, name)
        .ok_or_else(|| ApiError::not_found("", "pods", name))?;
    let containers: Vec<&Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|c| c.iter().collect())
        .unwrap_or_default();
    let names: Vec<&str> = containers
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let container = match q.get("container").filter(|c| !c.is_empty()) {
        Some(c) => c.as_str(),
        None if names.len() == 1 => names[0],
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            )));
        }
    };
    if !names.contains(&container) {
        return Err(ApiError::bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    if q.get("previous").is_some_and(|p| p == "true") {
        return Err(ApiError::bad_request(format!(
            "previous terminated container \"{container}\" in pod \"{name}\" not found"
        )));
    }
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {name} does not have a host assigned"))
        })?;
    let status = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["name"] == container));
    let started = status.and_then(|s| {
        s.pointer("/state/running/startedAt")
            .and_then(Value::as_str)
    });
    let Some(started) = started else {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
        )));
    };
    let image = containers
        .iter()
        .find(|c| c["name"] == container)
        .and_then(|c| c["image"].as_str())
        .unwrap_or("");
    let ready = status.is_some_and(|s| s["ready"] == true);
    let mut lines = vec![
        format!("sandbox kubelet: pulled image \"{image}\" on node {node}"),
        format!("sandbox kubelet: started container {container}"),
    ];
    if ready {
        lines.push(format!("sandbox kubelet: container {container} is ready"));
    }
    if let Some(t) = tail {
        let skip = lines.len().saturating_sub(t as usize);
        lines.drain(..skip);
    }
    let started_at = chrono::DateTime::parse_from_rfc3339(started)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| ApiError::internal(format!("pod {name} has a bad startedAt: {e}")))?;
    // Every line was written when the container started.
    if since.is_some_and(|s| started_at < s) {
        lines.clear();
    }
    let stamp = started_at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let mut text: String = lines
        .iter()
        .map(|l| {
            if timestamps {
                format!("{stamp} {l}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    if let Some(n) = limit_bytes {
        let mut n = (n as usize).min(text.len());
        while !text.is_char_boundary(n) {
            n -= 1;
        }
        text.truncate(n);
    }
    Ok(text)
}
