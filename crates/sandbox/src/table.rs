// TEMPORARY stand-in until the full module lands.
use serde_json::{Value, json};
pub fn to_table(_kind: &str, items: &[Value], resource_version: &str, continue_token: Option<&str>) -> Value {
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version, "continue": continue_token.unwrap_or("")},
        "columnDefinitions": [{"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0}],
        "rows": items.iter().map(|i| json!({"cells": [i["metadata"]["name"]], "object": i})).collect::<Vec<_>>()})
}
