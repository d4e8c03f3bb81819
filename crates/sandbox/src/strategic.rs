//! Strategic merge patch, server side (a port of
//! k8s.io/apimachinery/pkg/util/strategicpatch StrategicMergeMapPatch).
//!
//! The Go code takes merge keys from struct tags; here a small table keyed by
//! (object kind, field path, field name) stands in for the k8s.io/api types
//! this server stores. Lists not in the table are replaced wholesale, maps are
//! always merged, `null` deletes. Values copied verbatim from the patch are
//! stripped of directives and null members, which is what the real server's
//! decode into typed structs achieves.

use serde_json::{Map, Value};

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder";
const DELETE_FROM: &str = "$deleteFromPrimitiveList";

/// Applies strategic merge `patch` to `target` in place. On error `target`
/// is left untouched.
pub fn apply(target: &mut Value, patch: &Value) -> Result<(), String> {
    let Value::Object(p) = patch else {
        return Err("invalid JSON document".into());
    };
    let Value::Object(t) = target else {
        return Err("strategic merge patch target must be a JSON object".into());
    };
    let kind = t
        .get("kind")
        .or_else(|| p.get("kind"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let merged = merge_map(t.clone(), p.clone(), kind, &[])?;
    *t = merged;
    Ok(())
}

/// The patch merge key of list `field` reached via `path` (field names from the
/// object root, list indices omitted) in an object of `kind`: `Some("")` for a
/// merged list of primitives, `Some(key)` for a list of maps merged on `key`,
/// `None` for lists that are replaced. Mirrors the `patchStrategy:"merge"` tags
/// of k8s.io/api core/v1, apps/v1, policy/v1, coordination/v1 and meta/v1.
pub fn list_merge_key(kind: &str, path: &[String], field: &str) -> Option<&'static str> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    let pod_spec =
        |q: &[&str]| (q == ["spec"] && kind == "Pod") || q.ends_with(&["template", "spec"]);
    let parent = p.last().copied().unwrap_or("");
    let in_container = matches!(
        parent,
        "containers" | "initContainers" | "ephemeralContainers"
    ) && pod_spec(&p[..p.len() - 1]);
    let status = p == ["status"];
    Some(match field {
        "finalizers" if parent == "metadata" => "",
        "ownerReferences" if parent == "metadata" => "uid",
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "schedulingGates"
        | "resourceClaims"
            if pod_spec(&p) =>
        {
            "name"
        }
        "hostAliases" if pod_spec(&p) => "ip",
        "topologySpreadConstraints" if pod_spec(&p) => "topologyKey",
        "env" if in_container => "name",
        "ports" if in_container => "containerPort",
        "volumeMounts" if in_container => "mountPath",
        "volumeDevices" if in_container => "devicePath",
        // Every built-in status.conditions is merged on type (pods, nodes,
        // workloads, namespaces, PDBs, services, jobs).
        "conditions" if status => "type",
        "podIPs" | "hostIPs" if status && kind == "Pod" => "ip",
        "resourceClaimStatuses" if status && kind == "Pod" => "name",
        "addresses" if status && kind == "Node" => "type",
        "podCIDRs" if p == ["spec"] && kind == "Node" => "",
        "ports" if p == ["spec"] && kind == "Service" => "port",
        _ => return None,
    })
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    kind: &str,
    path: &[String],
) -> Result<Map<String, Value>, String> {
    if let Some(d) = patch.get(PATCH) {
        return match d.as_str() {
            Some("replace") => {
                patch.remove(PATCH);
                Ok(clean_map(&patch))
            }
            Some("delete") => Ok(Map::new()),
            // Like the Go code, `$patch: merge` on a map is rejected too.
            _ => Err(format!(
                "unknown patch type: {} in map: {}",
                show(d),
                Value::Object(patch)
            )),
        };
    }
    apply_retain_keys(&mut original, &mut patch)?;
    merge_ordered_lists(&mut original, &mut patch, kind, path)?;

    for (k, pv) in patch {
        let (key, delete_list) = match k.strip_prefix('$') {
            None => (k, false),
            Some(_) if k.starts_with(DELETE_FROM) => (extract_key(&k, DELETE_FROM)?, true),
            Some(_) => return Err(format!("unknown strategic merge patch directive {k:?}")),
        };
        if pv.is_null() {
            original.remove(&key);
            continue;
        }
        let Some(slot) = original.get_mut(&key) else {
            // The Go code would store a delete list as the list itself; deleting
            // from an absent list is a no-op here.
            if !delete_list {
                original.insert(key, clean(&pv));
            }
            continue;
        };
        let child = || [path, std::slice::from_ref(&key)].concat();
        *slot = match (std::mem::take(slot), pv) {
            (Value::Object(o), Value::Object(p)) => Value::Object(merge_map(o, p, kind, &child())?),
            (Value::Array(o), Value::Array(p)) => {
                let mk = list_merge_key(kind, path, &key);
                Value::Array(merge_list(o, p, mk, delete_list, kind, &child())?)
            }
            (_, pv) => clean(&pv),
        };
    }
    Ok(original)
}

/// `$retainKeys`: drop original keys not listed; every set patch key must be listed.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), String> {
    let Some(list) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let bad = || "invalid patch format of retainKeys".to_string();
    let list = list.as_array().ok_or_else(bad)?;
    let listed = |k: &str| list.iter().any(|v| v.as_str() == Some(k));
    for (k, v) in patch.iter() {
        if !v.is_null() && !k.starts_with(DELETE_FROM) && !k.starts_with(SET_ORDER) && !listed(k) {
            return Err(bad());
        }
    }
    original.retain(|k, _| listed(k));
    Ok(())
}

/// Handles every `$setElementOrder/<field>` together with `<field>`, removing
/// both from the patch (mergePatchIntoOriginal).
fn merge_ordered_lists(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    kind: &str,
    path: &[String],
) -> Result<(), String> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ORDER))
        .cloned()
        .collect();
    for k in keys {
        let order = match patch.remove(&k) {
            Some(Value::Array(a)) => a,
            other => return Err(bad_arg("a list", other.as_ref())),
        };
        let field = extract_key(&k, SET_ORDER)?;
        let as_list = |v: Option<&Value>| match v {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a.clone())),
            other => Err(bad_arg("a list", other)),
        };
        let orig = as_list(original.get(&field))?;
        let plist = as_list(patch.get(&field))?;
        let mk = list_merge_key(kind, path, &field);
        let key = mk.unwrap_or("");
        validate_order(plist.as_deref().unwrap_or(&[]), &order, key)?;
        let child = [path, std::slice::from_ref(&field)].concat();
        let merged = match (&orig, plist) {
            (None, None) => continue,
            (Some(o), None) => o.clone(),
            (None, Some(p)) => p.iter().map(clean).collect(),
            (Some(o), Some(p)) => merge_list(o.clone(), p, mk, false, kind, &child)?,
        };
        let orig = orig.unwrap_or_default();
        // The Go code errors on an all-empty list here; an empty result is kept instead.
        let ordered = if merged.is_empty() {
            merged
        } else {
            let is_map = elem_type(&[&merged])? == Some(T_OBJ);
            enforce_order(merged, &order, &orig, key, is_map)?
        };
        original.insert(field.clone(), Value::Array(ordered));
        patch.remove(&field);
    }
    Ok(())
}

/// validatePatchWithSetOrderList: patch items must appear in the order list, in order.
fn validate_order(plist: &[Value], order: &[Value], key: &str) -> Result<(), String> {
    if plist.is_empty() || order.is_empty() {
        return Ok(());
    }
    let mut items = Vec::new();
    for v in plist {
        if !key.is_empty() {
            let m = v.as_object().ok_or_else(|| bad_arg("a map", Some(v)))?;
            if m.get(PATCH).and_then(Value::as_str) == Some("delete") {
                continue;
            }
        }
        items.push(v);
    }
    let (mut pi, mut oi) = (0, 0);
    while pi < items.len() && oi < order.len() {
        if items[pi].get(PATCH).is_some() {
            pi += 1;
            continue;
        }
        if key_value(items[pi], key)? == key_value(&order[oi], key)? {
            pi += 1;
        }
        oi += 1;
    }
    if pi < items.len() {
        return Err(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ORDER} list:\n{}\n",
            Value::Array(plist.to_vec()),
            Value::Array(order.to_vec())
        ));
    }
    Ok(())
}

/// mergeSliceHandler + mergeSlice. `mk` is the field's merge key (see
/// [`list_merge_key`]); `None` means the patch list replaces the original.
fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    mk: Option<&str>,
    delete_list: bool,
    kind: &str,
    path: &[String],
) -> Result<Vec<Value>, String> {
    let Some(key) = mk.or(delete_list.then_some("")) else {
        return Ok(patch.iter().map(clean).collect());
    };
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    if elem_type(&[&original, &patch])? != Some(T_OBJ) {
        if delete_list {
            return Ok(original
                .into_iter()
                .filter(|v| !patch.iter().any(|d| jeq(v, d)))
                .collect());
        }
        let mut merged: Vec<Value> = Vec::new();
        for v in original.iter().chain(&patch) {
            if !merged.iter().any(|m| jeq(m, v)) {
                merged.push(v.clone());
            }
        }
        return enforce_order(merged, &patch, &original, "", false);
    }
    if key.is_empty() {
        return Err(format!(
            "cannot merge lists of maps without a merge key (field {:?})",
            path.last()
        ));
    }

    // Items carrying `$patch` first: delete by key, or replace the whole list.
    let mut original = original;
    let mut rest = Vec::new();
    let mut replace = false;
    for v in patch {
        match v.get(PATCH) {
            None => rest.push(v),
            Some(d) => match d.as_str() {
                Some("delete") => {
                    let kv = v.get(key).ok_or_else(|| no_merge_key(&v, key))?;
                    original.retain(|o| !o.get(key).is_some_and(|x| jeq(x, kv)));
                }
                Some("replace") => replace = true,
                Some("merge") => {
                    return Err("merging lists cannot yet be specified in the patch".into());
                }
                _ => return Err(format!("unknown patch type: {} in map: {v}", show(d))),
            },
        }
    }
    if replace {
        original = rest.iter().map(clean).collect();
        rest.clear();
    }

    let server_order = original.clone();
    let mut merged = original;
    for v in &rest {
        let kv = v.get(key).ok_or_else(|| no_merge_key(v, key))?;
        match merged
            .iter()
            .position(|o| o.get(key).is_some_and(|x| jeq(x, kv)))
        {
            Some(i) => {
                let (Value::Object(o), Value::Object(p)) =
                    (std::mem::take(&mut merged[i]), v.clone())
                else {
                    unreachable!("element types were checked above");
                };
                merged[i] = Value::Object(merge_map(o, p, kind, path)?);
            }
            None => merged.push(clean(v)),
        }
    }
    enforce_order(merged, &rest, &server_order, key, true)
}

/// normalizeElementOrder: items named in `patch_order` follow that order,
/// server-only items keep their server order, and the two are interleaved
/// using the server order where both sides are known to it.
fn enforce_order(
    merged: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: &str,
    is_map: bool,
) -> Result<Vec<Value>, String> {
    let key = if is_map { key } else { "" };
    if is_map {
        for v in merged.iter().chain(patch_order) {
            key_value(v, key)?;
        }
    }
    let index = |list: &[Value], v: &Value| -> Option<usize> {
        let want = key_value(v, key).ok()?;
        list.iter()
            .position(|x| key_value(x, key).is_ok_and(|k| jeq(k, want)))
    };
    let (mut left, mut right): (Vec<Value>, Vec<Value>) = (Vec::new(), Vec::new());
    for v in merged {
        if index(patch_order, &v).is_some() {
            right.push(v)
        } else {
            left.push(v)
        }
    }
    right.sort_by_key(|v| index(patch_order, v));
    left.sort_by_key(|v| index(server_order, v).unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(left.len() + right.len());
    let (mut li, mut ri) = (left.into_iter().peekable(), right.into_iter().peekable());
    while let (Some(l), Some(r)) = (li.peek(), ri.peek()) {
        let take_left =
            matches!((index(server_order, l), index(server_order, r)), (Some(a), Some(b)) if a < b);
        out.push(if take_left { li.next() } else { ri.next() }.expect("peeked"));
    }
    out.extend(li);
    out.extend(ri);
    Ok(out)
}

/// The merge-key value of a list item (the item itself for primitive lists).
fn key_value<'a>(v: &'a Value, key: &str) -> Result<&'a Value, String> {
    if key.is_empty() {
        return Ok(v);
    }
    v.as_object()
        .ok_or_else(|| bad_arg("a map", Some(v)))?
        .get(key)
        .ok_or_else(|| no_merge_key(v, key))
}

const T_OBJ: u8 = 5;

fn vtype(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => T_OBJ,
    }
}

/// sliceElementType: the common element type of the lists, if any.
fn elem_type(lists: &[&[Value]]) -> Result<Option<u8>, String> {
    let mut t = None;
    for v in lists.iter().flat_map(|l| l.iter()) {
        let vt = vtype(v);
        if vt == 4 {
            return Err("lists of lists are not supported".into());
        }
        if t.is_some_and(|t| t != vt) {
            return Err(format!(
                "list element types are not identical: {}",
                Value::Array(lists.concat())
            ));
        }
        t = Some(vt);
    }
    Ok(t)
}

/// JSON equality where numbers compare by value (Go decodes them all as float64).
fn jeq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn extract_key(k: &str, prefix: &str) -> Result<String, String> {
    match k.split_once('/') {
        Some((p, rest)) if p == prefix => Ok(rest.to_string()),
        _ if prefix == SET_ORDER => Err("invalid patch format of setElementOrder list".into()),
        _ => Err("invalid patch format of primitive list".into()),
    }
}

fn is_directive(k: &str) -> bool {
    k == PATCH || k == RETAIN_KEYS || k.starts_with(SET_ORDER) || k.starts_with(DELETE_FROM)
}

fn clean_map(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, v)| !v.is_null() && !is_directive(k))
        .map(|(k, v)| (k.clone(), clean(v)))
        .collect()
}

/// A patch value as the typed decode would store it: no directives, no nulls.
fn clean(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(clean_map(m)),
        Value::Array(a) => Value::Array(a.iter().map(clean).collect()),
        _ => v.clone(),
    }
}

fn show(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn no_merge_key(v: &Value, key: &str) -> String {
    format!("map: {v} does not contain declared merge key: {key}")
}

fn bad_arg(expected: &str, got: Option<&Value>) -> String {
    format!(
        "expected {expected}, but received {}",
        got.map_or("nothing".into(), Value::to_string)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(mut target: Value, patch: Value) -> Value {
        apply(&mut target, &patch).unwrap();
        target
    }

    fn names(v: &Value, ptr: &str, key: &str) -> Vec<String> {
        v.pointer(ptr)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i[key].as_str().unwrap().to_string())
            .collect()
    }

    fn node() -> Value {
        json!({"kind": "Node", "apiVersion": "v1",
               "metadata": {"name": "n1", "labels": {"a": "1"}, "annotations": {"x": "y"}},
               "spec": {"podCIDR": "10.0.0.0/24", "taints": [{"key": "k1", "effect": "NoSchedule"}]},
               "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "False"}],
                          "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n1"}]}})
    }

    fn pod() -> Value {
        json!({"kind": "Pod", "apiVersion": "v1",
               "metadata": {"name": "p", "finalizers": ["a", "b"]},
               "spec": {"containers": [
                    {"name": "app", "image": "nginx:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                     "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                    {"name": "side", "image": "busybox"}],
                    "tolerations": [{"key": "t1", "operator": "Exists"}],
                    "volumes": [{"name": "v1", "emptyDir": {}}]},
               "status": {"phase": "Running"}})
    }

    #[test]
    fn kubectl_cordon_and_uncordon() {
        let n = patched(node(), json!({"spec": {"unschedulable": true}}));
        assert_eq!(n["spec"]["unschedulable"], json!(true));
        assert_eq!(n["spec"]["podCIDR"], "10.0.0.0/24");
        // kubectl uncordon: Unschedulable=false is omitempty, so the diff is a null.
        let n = patched(n, json!({"spec": {"unschedulable": null}}));
        assert!(n["spec"].get("unschedulable").is_none());
        assert_eq!(n["spec"]["taints"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn kubectl_label_and_annotate() {
        let n = patched(node(), json!({"metadata": {"labels": {"b": "2"}}}));
        assert_eq!(n["metadata"]["labels"], json!({"a": "1", "b": "2"}));
        let n = patched(n, json!({"metadata": {"labels": {"a": null}}}));
        assert_eq!(n["metadata"]["labels"], json!({"b": "2"}));
        let n = patched(
            n,
            json!({"metadata": {"annotations": {"x": "z", "node.alpha.kubernetes.io/ttl": "0"}}}),
        );
        assert_eq!(
            n["metadata"]["annotations"],
            json!({"x": "z", "node.alpha.kubernetes.io/ttl": "0"})
        );
        let n = patched(
            n,
            json!({"metadata": {"annotations": {"x": null}, "resourceVersion": "7"}}),
        );
        assert_eq!(
            n["metadata"]["annotations"],
            json!({"node.alpha.kubernetes.io/ttl": "0"})
        );
        assert_eq!(n["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn kubectl_taint_replaces_node_taints() {
        let n = patched(
            node(),
            json!({"spec": {"taints": [{"effect": "NoExecute", "key": "k2", "value": "v"}]}}),
        );
        assert_eq!(
            n["spec"]["taints"],
            json!([{"effect": "NoExecute", "key": "k2", "value": "v"}])
        );
    }

    #[test]
    fn tolerations_replace() {
        let p = patched(
            pod(),
            json!({"spec": {"tolerations": [{"key": "t2", "operator": "Exists"}]}}),
        );
        assert_eq!(
            p["spec"]["tolerations"],
            json!([{"key": "t2", "operator": "Exists"}])
        );
    }

    #[test]
    fn kubectl_rollout_restart() {
        let d = json!({"kind": "Deployment", "spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let d = patched(
            d,
            json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"}}}}}),
        );
        assert_eq!(
            d.pointer("/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt")
                .unwrap(),
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(
            d.pointer("/spec/template/metadata/labels/app").unwrap(),
            "x"
        );
    }

    #[test]
    fn kubectl_apply_image_change_with_set_element_order() {
        let d = json!({"kind": "Deployment", "metadata": {"name": "web", "annotations": {"deployment.kubernetes.io/revision": "1"}},
            "spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "nginx:1.25", "imagePullPolicy": "IfNotPresent"}]}}}});
        let patch = json!({"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"apps/v1\"}\n"}},
            "spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "app"}],
                "containers": [{"image": "nginx:1.26", "name": "app"}]}}}});
        let d = patched(d, patch);
        assert_eq!(
            d.pointer("/spec/template/spec/containers").unwrap(),
            &json!([{"name": "app", "image": "nginx:1.26", "imagePullPolicy": "IfNotPresent"}])
        );
        assert_eq!(d["metadata"]["annotations"].as_object().unwrap().len(), 2);
        assert!(!d.to_string().contains('$'));
    }

    #[test]
    fn kubectl_apply_delete_env_and_add_container() {
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "side"}, {"name": "new"}],
            "containers": [
                {"$setElementOrder/env": [{"name": "A"}], "env": [{"$patch": "delete", "name": "B"}], "name": "app"},
                {"image": "redis", "name": "new", "env": [{"name": "Z", "value": "1", "$patch": "delete"}]}]}});
        let p = patched(pod(), patch);
        assert_eq!(
            names(&p, "/spec/containers", "name"),
            ["app", "side", "new"]
        );
        assert_eq!(
            p.pointer("/spec/containers/0/env").unwrap(),
            &json!([{"name": "A", "value": "1"}])
        );
        // A new item is stored as the typed decode would: directive members dropped.
        assert_eq!(
            p.pointer("/spec/containers/2").unwrap(),
            &json!({"name": "new", "image": "redis", "env": [{"name": "Z", "value": "1"}]})
        );
        assert!(!p.to_string().contains('$'));
    }

    #[test]
    fn set_element_order_reorders() {
        let p = patched(
            pod(),
            json!({"spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "app"}]}}),
        );
        assert_eq!(names(&p, "/spec/containers", "name"), ["side", "app"]);
        let p = patched(
            pod(),
            json!({"spec": {"$setElementOrder/containers": [{"name": "app"}, {"name": "x"}],
            "containers": [{"name": "x", "image": "i"}]}}),
        );
        // The Go code (not the design doc) decides: a server-only item goes after
        // patch items the live list can't rank against it.
        assert_eq!(names(&p, "/spec/containers", "name"), ["app", "x", "side"]);
    }

    #[test]
    fn set_element_order_primitives() {
        // The finalizers example from the preserve-order design doc; the doc
        // claims [e,d,a,b,f] but patch.go yields this.
        let obj =
            json!({"kind": "ConfigMap", "metadata": {"finalizers": ["b", "e", "a", "c", "d"]}});
        let o = patched(
            obj,
            json!({"metadata": {"$setElementOrder/finalizers": ["a", "b", "f"],
            "$deleteFromPrimitiveList/finalizers": ["c"], "finalizers": ["f"]}}),
        );
        assert_eq!(
            o["metadata"]["finalizers"],
            json!(["e", "a", "b", "f", "d"])
        );
    }

    #[test]
    fn set_element_order_mismatch_is_rejected() {
        let mut p = pod();
        let err = apply(
            &mut p,
            &json!({"spec": {"$setElementOrder/containers": [{"name": "app"}],
            "containers": [{"name": "other", "image": "i"}]}}),
        )
        .unwrap_err();
        assert!(err.starts_with("The order in patch list"), "{err}");
        assert_eq!(p, pod(), "target untouched on error");
    }

    #[test]
    fn merge_by_key_without_order_directive() {
        // Without $setElementOrder, patch order wins where the server can't say.
        let p = patched(
            pod(),
            json!({"spec": {"containers": [{"name": "side", "image": "busybox:2"}, {"name": "z", "image": "z"}]}}),
        );
        assert_eq!(names(&p, "/spec/containers", "name"), ["app", "side", "z"]);
        assert_eq!(p.pointer("/spec/containers/1/image").unwrap(), "busybox:2");
        // Design-doc example: patch [A',B',D] on live [B,C,A] gives [C,A',B',D].
        let o = json!({"kind": "Pod", "spec": {"containers": [{"name": "B"}, {"name": "C"}, {"name": "A"}]}});
        let o = patched(
            o,
            json!({"spec": {"containers": [{"name": "A", "x": 1}, {"name": "B", "x": 1}, {"name": "D"}]}}),
        );
        assert_eq!(names(&o, "/spec/containers", "name"), ["C", "A", "B", "D"]);
        assert_eq!(o.pointer("/spec/containers/1/x").unwrap(), 1);
    }

    #[test]
    fn nested_merge_keys_in_containers() {
        let p = patched(
            pod(),
            json!({"spec": {"containers": [{"name": "app",
            "env": [{"name": "B", "value": "22"}, {"name": "C", "value": "3"}],
            "ports": [{"containerPort": 8080}],
            "volumeMounts": [{"mountPath": "/data", "name": "v1"}]}]}}),
        );
        let c = &p["spec"]["containers"][0];
        assert_eq!(names(c, "/env", "name"), ["A", "B", "C"]);
        assert_eq!(c["env"][1]["value"], "22");
        assert_eq!(c["ports"].as_array().unwrap().len(), 2);
        assert_eq!(c["volumeMounts"][0]["mountPath"], "/data");
        let p = patched(
            p,
            json!({"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 80, "$patch": "delete"}]}]}}),
        );
        assert_eq!(
            p.pointer("/spec/containers/0/ports").unwrap(),
            &json!([{"containerPort": 8080}])
        );
    }

    #[test]
    fn deployment_template_uses_pod_spec_keys() {
        let d = json!({"kind": "Deployment", "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}],
            "volumes": [{"name": "v", "configMap": {"name": "cm"}}]}}}});
        let d = patched(
            d,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "3"}],
            "volumes": [{"name": "w", "emptyDir": {}}]}}}}),
        );
        assert_eq!(
            d.pointer("/spec/template/spec/containers/1/image").unwrap(),
            "3"
        );
        // New items the live list can't rank come first (mergeSortedSlice).
        assert_eq!(names(&d, "/spec/template/spec/volumes", "name"), ["w", "v"]);
    }

    #[test]
    fn status_lists_merge_by_type() {
        let n = patched(
            node(),
            json!({"status": {
            "$setElementOrder/conditions": [{"type": "Ready"}, {"type": "MemoryPressure"}],
            "conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady"}],
            "addresses": [{"type": "ExternalIP", "address": "1.2.3.4"}]}}),
        );
        assert_eq!(
            n.pointer("/status/conditions").unwrap(),
            &json!([
            {"type": "Ready", "status": "False", "reason": "KubeletNotReady"},
            {"type": "MemoryPressure", "status": "False"}])
        );
        assert_eq!(
            names(&n, "/status/addresses", "type"),
            ["ExternalIP", "InternalIP", "Hostname"]
        );
        let pdb = json!({"kind": "PodDisruptionBudget", "status": {"conditions": [{"type": "DisruptionAllowed", "status": "True"}], "disruptionsAllowed": 1}});
        let pdb = patched(
            pdb,
            json!({"status": {"conditions": [{"type": "DisruptionAllowed", "status": "False"}], "disruptionsAllowed": 0}}),
        );
        assert_eq!(
            pdb["status"]["conditions"],
            json!([{"type": "DisruptionAllowed", "status": "False"}])
        );
    }

    #[test]
    fn finalizers_merge_and_delete_from_primitive_list() {
        let p = patched(pod(), json!({"metadata": {"finalizers": ["b", "c"]}}));
        assert_eq!(p["metadata"]["finalizers"], json!(["a", "b", "c"]));
        let p = patched(
            p,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "c"]}}),
        );
        assert_eq!(p["metadata"]["finalizers"], json!(["b"]));
        let p = patched(p, json!({"metadata": {"finalizers": null}}));
        assert!(p["metadata"].get("finalizers").is_none());
        let p = patched(
            p,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}),
        );
        assert!(
            p["metadata"].get("finalizers").is_none(),
            "deleting from an absent list adds nothing"
        );
        // Namespace spec.finalizers has no patch strategy: replaced.
        let ns = json!({"kind": "Namespace", "spec": {"finalizers": ["kubernetes"]}});
        assert_eq!(
            patched(ns, json!({"spec": {"finalizers": ["x"]}}))["spec"]["finalizers"],
            json!(["x"])
        );
    }

    #[test]
    fn owner_references_merge_by_uid() {
        let rs = json!({"kind": "ReplicaSet", "metadata": {"ownerReferences": [{"uid": "1", "name": "d1"}]}});
        let rs = patched(
            rs,
            json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "d2"}]}}),
        );
        assert_eq!(names(&rs, "/metadata/ownerReferences", "uid"), ["2", "1"]);
        let rs = patched(
            rs,
            json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": "1"}]}}),
        );
        assert_eq!(names(&rs, "/metadata/ownerReferences", "uid"), ["2"]);
    }

    #[test]
    fn service_ports_merge_by_port() {
        let s = json!({"kind": "Service", "spec": {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": "a"}}});
        let s = patched(
            s,
            json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"port": 443}], "selector": {"app": "b"}}}),
        );
        assert_eq!(
            s["spec"]["ports"],
            json!([{"port": 80, "targetPort": 9090}, {"port": 443}])
        );
        assert_eq!(s["spec"]["selector"], json!({"app": "b"}));
    }

    #[test]
    fn patch_replace_directive() {
        let p = patched(
            pod(),
            json!({"spec": {"containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}]}}),
        );
        assert_eq!(
            p["spec"]["containers"],
            json!([{"name": "only", "image": "x"}])
        );
        let cm = json!({"kind": "ConfigMap", "data": {"a": "1", "b": "2"}});
        let cm = patched(cm, json!({"data": {"$patch": "replace", "c": "3"}}));
        assert_eq!(cm["data"], json!({"c": "3"}));
    }

    #[test]
    fn patch_delete_directive_on_map() {
        let cm = json!({"kind": "ConfigMap", "data": {"a": "1"}, "metadata": {"name": "c"}});
        let cm = patched(cm, json!({"data": {"$patch": "delete"}}));
        assert_eq!(cm["data"], json!({}));
        assert_eq!(cm["metadata"]["name"], "c");
    }

    #[test]
    fn retain_keys() {
        let d = json!({"kind": "Deployment", "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let d = patched(
            d,
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": null, "type": "Recreate"}}}),
        );
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
        // Volume sources: switching emptyDir -> hostPath drops the old source.
        let p = patched(
            pod(),
            json!({"spec": {"$setElementOrder/volumes": [{"name": "v1"}],
            "volumes": [{"$retainKeys": ["hostPath", "name"], "hostPath": {"path": "/x"}, "name": "v1"}]}}),
        );
        assert_eq!(
            p["spec"]["volumes"],
            json!([{"name": "v1", "hostPath": {"path": "/x"}}])
        );
        let mut d = json!({"kind": "Deployment", "spec": {"strategy": {"type": "A"}}});
        let err = apply(
            &mut d,
            &json!({"spec": {"strategy": {"$retainKeys": ["x"], "type": "B"}}}),
        )
        .unwrap_err();
        assert_eq!(err, "invalid patch format of retainKeys");
    }

    #[test]
    fn unknown_directives_are_errors() {
        let mut p = pod();
        let e = apply(&mut p, &json!({"spec": {"$patch": "frobnicate"}})).unwrap_err();
        assert!(
            e.starts_with("unknown patch type: frobnicate in map"),
            "{e}"
        );
        let e = apply(&mut p, &json!({"spec": {"$patch": "merge"}})).unwrap_err();
        assert!(e.starts_with("unknown patch type: merge"), "{e}");
        let e = apply(
            &mut p,
            &json!({"spec": {"containers": [{"name": "app", "$patch": "merge"}]}}),
        )
        .unwrap_err();
        assert_eq!(e, "merging lists cannot yet be specified in the patch");
        let e = apply(
            &mut p,
            &json!({"spec": {"containers": [{"name": "app", "$patch": "x"}]}}),
        )
        .unwrap_err();
        assert!(e.starts_with("unknown patch type: x"), "{e}");
        let e = apply(&mut p, &json!({"spec": {"$foo": 1}})).unwrap_err();
        assert!(
            e.contains("unknown strategic merge patch directive \"$foo\""),
            "{e}"
        );
        let e = apply(
            &mut p,
            &json!({"metadata": {"$deleteFromPrimitiveList": ["a"]}}),
        )
        .unwrap_err();
        assert_eq!(e, "invalid patch format of primitive list");
        let e = apply(
            &mut p,
            &json!({"spec": {"$setElementOrderX/containers": []}}),
        )
        .unwrap_err();
        assert_eq!(e, "invalid patch format of setElementOrder list");
        let e = apply(
            &mut p,
            &json!({"spec": {"containers": [{"image": "no-name"}]}}),
        )
        .unwrap_err();
        assert!(
            e.contains("does not contain declared merge key: name"),
            "{e}"
        );
        let e = apply(&mut p, &json!({"spec": {"containers": ["x"]}})).unwrap_err();
        assert!(e.starts_with("list element types are not identical"), "{e}");
        assert!(apply(&mut p, &json!([1])).is_err());
        assert_eq!(p, pod());
    }

    #[test]
    fn new_values_are_stored_without_directives_or_nulls() {
        let obj = json!({"kind": "Pod", "metadata": {"name": "p"}});
        let o = patched(
            obj,
            json!({"metadata": {"labels": {"a": "1", "b": null}}, "spec": {
            "$setElementOrder/containers": [{"name": "c"}],
            "containers": [{"name": "c", "$setElementOrder/env": [{"name": "E"}], "env": [{"name": "E", "value": "v"}]}]}}),
        );
        assert_eq!(o["metadata"]["labels"], json!({"a": "1"}));
        assert_eq!(
            o["spec"]["containers"],
            json!([{"name": "c", "env": [{"name": "E", "value": "v"}]}])
        );
    }

    #[test]
    fn type_change_and_scalars() {
        let cm = json!({"kind": "ConfigMap", "data": {"a": "1"}, "x": [1, 2]});
        let cm = patched(cm, json!({"data": "oops", "x": {"k": "v"}, "y": 3}));
        assert_eq!(
            cm,
            json!({"kind": "ConfigMap", "data": "oops", "x": {"k": "v"}, "y": 3})
        );
        let o = patched(
            json!({"kind": "X", "a": {"b": 1}}),
            json!({"missing": null, "a": {"c": null}}),
        );
        assert_eq!(o, json!({"kind": "X", "a": {"b": 1}}));
    }

    #[test]
    fn merge_key_table() {
        let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            list_merge_key("Pod", &p(&["spec"]), "containers"),
            Some("name")
        );
        assert_eq!(list_merge_key("Pod", &p(&["spec"]), "tolerations"), None);
        assert_eq!(list_merge_key("Node", &p(&["spec"]), "taints"), None);
        assert_eq!(list_merge_key("Node", &p(&["spec"]), "podCIDRs"), Some(""));
        assert_eq!(
            list_merge_key(
                "DaemonSet",
                &p(&["spec", "template", "spec"]),
                "hostAliases"
            ),
            Some("ip")
        );
        assert_eq!(
            list_merge_key("Pod", &p(&["spec", "containers"]), "ports"),
            Some("containerPort")
        );
        assert_eq!(
            list_merge_key("Service", &p(&["spec"]), "ports"),
            Some("port")
        );
        assert_eq!(list_merge_key("Endpoints", &p(&["subsets"]), "ports"), None);
        assert_eq!(list_merge_key("Lease", &p(&["spec"]), "containers"), None);
        assert_eq!(
            list_merge_key(
                "Deployment",
                &p(&["spec", "template", "metadata"]),
                "finalizers"
            ),
            Some("")
        );
        assert_eq!(
            list_merge_key("Namespace", &p(&["spec"]), "finalizers"),
            None
        );
    }
}
