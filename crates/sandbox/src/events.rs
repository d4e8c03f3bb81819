//! core/v1 Events and events.k8s.io/v1 Events are one resource in two versions, stored once, as
//! in kube-apiserver: `kubectl get events` shows what kube-runtime's Recorder wrote.

use std::borrow::Cow;

use serde_json::{Map, Value, json};

use crate::resources::Resource;

/// (core/v1 field, events.k8s.io/v1 field)
const RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

/// The object as the requested API version shows it.
/// Borrowed unless it must be converted: a deep copy of every object written to every watcher
/// was a tenth of the sandbox's CPU at 5,000 nodes.
pub fn view<'a>(r: &Resource, obj: &'a Value) -> Cow<'a, Value> {
    if r.storage != "events"
        || obj.get("apiVersion").and_then(Value::as_str) == Some(r.api_version().as_str())
    {
        return Cow::Borrowed(obj);
    }
    let Some(src) = obj.as_object() else {
        return Cow::Borrowed(obj);
    };
    let to_new = r.group == "events.k8s.io";
    let mut out = Map::new();
    for (k, v) in src {
        let renamed = RENAMES.iter().find_map(|&(core, new)| match to_new {
            true if k.as_str() == core => Some(new),
            false if k.as_str() == new => Some(core),
            _ => None,
        });
        match (k.as_str(), to_new) {
            ("source", true) => {
                if let Some(c) = v.get("component") {
                    out.entry("deprecatedSource")
                        .or_insert(json!({}))
                        .as_object_mut()
                        .map(|m| m.insert("component".into(), c.clone()));
                }
                if let Some(h) = v.get("host") {
                    out.entry("deprecatedSource")
                        .or_insert(json!({}))
                        .as_object_mut()
                        .map(|m| m.insert("host".into(), h.clone()));
                }
            }
            ("deprecatedSource", false) => {
                out.insert("source".into(), v.clone());
            }
            _ => {
                out.insert(renamed.unwrap_or(k).to_string(), v.clone());
            }
        }
    }
    if !to_new {
        // Core clients look for source.component; the new API names the controller instead.
        if !out.contains_key("source")
            && let Some(c) = src.get("reportingController")
        {
            out.insert("source".into(), json!({"component": c, "host": src.get("reportingInstance").cloned().unwrap_or(Value::Null)}));
        }
        if let Some(c) = src.get("reportingController") {
            out.insert("reportingComponent".into(), c.clone());
        }
        if !out.contains_key("lastTimestamp")
            && let Some(t) = src.get("eventTime").and_then(Value::as_str)
        {
            // MicroTime to Time: whole seconds.
            let secs = t.split('.').next().unwrap_or(t).trim_end_matches('Z');
            out.insert("lastTimestamp".into(), json!(format!("{secs}Z")));
        }
        if let Some(n) = obj.pointer("/series/count") {
            out.insert("count".into(), n.clone());
        }
    } else if let Some(c) = src
        .get("reportingComponent")
        .filter(|c| c.as_str().is_some_and(|s| !s.is_empty()))
    {
        out.entry("reportingController").or_insert(c.clone());
    }
    out.insert("apiVersion".into(), json!(r.api_version()));
    out.insert("kind".into(), json!("Event"));
    Cow::Owned(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn new_events_show_in_core_form_and_back() {
        let e = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "n1.abc", "namespace": "default"},
            "eventTime": "2026-01-01T00:00:00.123456Z", "reason": "Granted", "note": "reboot granted", "type": "Normal",
            "regarding": {"kind": "Node", "name": "n1"}, "reportingController": "update-operator", "reportingInstance": "op-1", "action": "Grant",
        });
        let core = view(find("", "v1", "events").unwrap(), &e);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "n1");
        assert_eq!(core["message"], "reboot granted");
        assert_eq!(core["source"]["component"], "update-operator");
        assert_eq!(core["lastTimestamp"], "2026-01-01T00:00:00Z");
        let back = view(find("events.k8s.io", "v1", "events").unwrap(), &core);
        assert_eq!(back["regarding"]["name"], "n1");
        assert_eq!(back["note"], "reboot granted");
        assert_eq!(back["reportingController"], "update-operator");
        // Same version: untouched, and not copied.
        assert!(matches!(
            view(find("events.k8s.io", "v1", "events").unwrap(), &e),
            Cow::Borrowed(v) if *v == e
        ));
    }
}
