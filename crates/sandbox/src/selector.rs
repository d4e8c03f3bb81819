// TEMPORARY stand-in until the full module lands.
use serde_json::{Map, Value};
pub struct LabelSelector(Vec<(String, String)>);
impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        Ok(LabelSelector(s.split(',').filter(|x| !x.is_empty()).map(|kv| { let (k, v) = kv.split_once('=').unwrap_or((kv, "")); (k.to_string(), v.to_string()) }).collect()))
    }
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        self.0.iter().all(|(k, v)| labels.and_then(|l| l.get(k)).and_then(Value::as_str) == Some(v))
    }
    pub fn from_label_selector_object(sel: &Value) -> Result<LabelSelector, String> {
        Ok(LabelSelector(sel.get("matchLabels").and_then(Value::as_object).map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect()).unwrap_or_default()))
    }
}
pub struct FieldSelector(Vec<(String, String)>);
impl FieldSelector {
    pub fn parse(s: &str) -> Result<FieldSelector, String> {
        Ok(FieldSelector(s.split(',').filter(|x| !x.is_empty()).map(|kv| { let (k, v) = kv.split_once('=').unwrap_or((kv, "")); (k.to_string(), v.to_string()) }).collect()))
    }
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(k, v)| obj.pointer(&format!("/{}", k.replace('.', "/"))).and_then(Value::as_str).unwrap_or("") == v)
    }
}
