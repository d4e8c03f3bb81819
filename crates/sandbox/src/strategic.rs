// TEMPORARY stand-in until the full module lands.
use serde_json::Value;
pub fn apply(target: &mut Value, patch: &Value) -> Result<(), String> {
    json_patch::merge(target, patch);
    Ok(())
}
