//! The `scale` subresource (autoscaling/v1 Scale) of Deployments, ReplicaSets and
//! StatefulSets: what `kubectl scale` and HorizontalPodAutoscalers read and write. Writes
//! change only the parent's `spec.replicas`; the simulated controllers follow it.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use crate::api::{ApiState, Req};
use crate::error::{ApiError, ApiResult};
use crate::resources::Resource;
use crate::store::meta;

pub fn has_scale(r: &Resource) -> bool {
    r.group == "apps" && matches!(r.kind, "Deployment" | "ReplicaSet" | "StatefulSet")
}

pub fn handle(
    st: &ApiState,
    verb: &str,
    req: &Req,
    headers: &HeaderMap,
    body: &Bytes,
    q: &HashMap<String, String>,
) -> ApiResult<(StatusCode, Value)> {
    let ns = req.ns.as_deref().unwrap_or("");
    let name = req.name.as_deref().unwrap_or("");
    let mut store = st.store.lock();
    let obj = store
        .get(req.res, ns, name)
        .ok_or_else(|| ApiError::not_found(req.res.group, req.res.plural, name))?;
    let current = scale_of(&obj)?;
    let wanted = match verb {
        "get" => return Ok((StatusCode::OK, current)),
        "update" => {
            let v = crate::api::body_json(headers, body)?;
            check_kind(&v)?;
            v
        }
        "patch" => patched(&current, headers, body)?,
        _ => return Err(ApiError::method_not_allowed()),
    };
    if let Some(n) = meta(&wanted, "name")
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    if let Some(rv) = meta(&wanted, "resourceVersion")
        && !rv.is_empty()
        && Some(rv) != meta(&obj, "resourceVersion")
    {
        return Err(ApiError::conflict(req.res.group, req.res.plural, name));
    }
    let replicas = replicas_of(&wanted, name)?;
    let mut scaled = current.clone();
    scaled["spec"]["replicas"] = json!(replicas);
    // As kube-apiserver: policies see the Scale objects, on resource/scale.
    crate::api::admit(st, &store, "UPDATE", req, Some(&scaled), Some(&current), q)?;
    if q.contains_key("dryRun") {
        return Ok((StatusCode::OK, scaled));
    }
    let new = store.modify(req.res, ns, name, |v| {
        v["spec"]["replicas"] = json!(replicas);
        Ok(())
    })?;
    Ok((StatusCode::OK, scale_of(&new)?))
}

fn check_kind(v: &Value) -> ApiResult<()> {
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("Scale");
    let av = v
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("autoscaling/v1");
    if kind != "Scale" || av != "autoscaling/v1" {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version (autoscaling/v1) or the kind ({kind}) is not Scale"
        )));
    }
    Ok(())
}

fn replicas_of(scale: &Value, name: &str) -> ApiResult<i64> {
    let invalid = |detail: String| {
        ApiError::new(
            422,
            "Invalid",
            format!("Scale.autoscaling \"{name}\" is invalid: {detail}"),
        )
        .with_details(json!({"name": name, "group": "autoscaling", "kind": "Scale", "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": "spec.replicas"}]}))
    };
    match scale.pointer("/spec/replicas") {
        None | Some(Value::Null) => Ok(0),
        Some(v) => match v.as_i64() {
            Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => Ok(n),
            Some(n) => Err(invalid(format!(
                "spec.replicas: Invalid value: {n}: must be greater than or equal to 0"
            ))),
            None => Err(ApiError::bad_request(format!(
                "spec.replicas must be an integer, not {v}"
            ))),
        },
    }
}

/// The Scale view of a workload: its desired and current replicas and its selector as the
/// label-selector string an autoscaler lists pods with.
pub fn scale_of(obj: &Value) -> ApiResult<Value> {
    let mut md = json!({});
    for f in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = obj["metadata"].get(f) {
            md[f] = v.clone();
        }
    }
    // As kube-apiserver: LabelSelectorAsSelector's string, and an error for a selector it
    // cannot convert.
    let selector = crate::table::label_selector_string(obj.pointer("/spec/selector"))
        .ok_or_else(|| ApiError::internal("spec.selector: an unknown operator"))?;
    Ok(json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": md,
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    }))
}

fn patched(current: &Value, headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    let p: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON in patch body: {e}")))?;
    let mut v = current.clone();
    match mime {
        "application/merge-patch+json" => json_patch::merge(&mut v, &p),
        "application/strategic-merge-patch+json" => {
            crate::strategic::apply(&mut v, &p).map_err(ApiError::bad_request)?
        }
        "application/json-patch+json" => {
            let ops: json_patch::Patch = serde_json::from_value(p)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut v, &ops).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the JSON patch could not be applied: {e}"),
                )
            })?;
        }
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json; got {other:?}"
                ),
            ));
        }
    }
    check_kind(&v)?;
    Ok(v)
}
