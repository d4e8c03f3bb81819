//! `application/vnd.kubernetes.protobuf` bodies, which kubectl's typed clients send by default.
//!
//! The wire format is the `k8s\0` magic, then a `runtime.Unknown` envelope holding the kind,
//! the apiVersion and the object's own message. The messages are decoded and encoded by
//! rust-protobuf's dynamic messages, from the descriptors of Kubernetes' own .proto files
//! (proto/, compiled by build.rs), so no wire handling is written here. What is written here
//! is the mapping between those messages and the JSON the rest of the sandbox stores, with
//! Kubernetes' JSON rules where they differ from protobuf's: Time and MicroTime are RFC 3339
//! strings, IntOrString is a number or a string, Quantity a string, RawExtension and FieldsV1
//! embedded JSON, int64 a JSON number, bytes base64, Go structs embedded with
//! `json:",inline"` spread into their parent, and Go's omitempty for strings (gogo-protobuf
//! writes every non-pointer string, even empty, and kube-apiserver's JSON would drop it).

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use protobuf::descriptor::FileDescriptorSet;
use protobuf::reflect::{
    FileDescriptor, MessageDescriptor, ReflectValueBox, ReflectValueRef, RuntimeFieldType,
    RuntimeType,
};
use protobuf::{Message, MessageDyn};
use serde_json::{Map, Value, json};

use crate::error::ApiError;

pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

/// The proto files of the built-in groups the sandbox serves, with meta/v1 for the kinds every
/// group shares (Status, DeleteOptions, WatchEvent) and runtime for the envelope.
static FILES: LazyLock<Vec<FileDescriptor>> = LazyLock::new(|| {
    let fds = FileDescriptorSet::parse_from_bytes(include_bytes!(concat!(
        env!("OUT_DIR"),
        "/kubernetes.fds"
    )))
    .expect("build.rs wrote a descriptor set");
    FileDescriptor::new_dynamic_fds(fds.file, &[]).expect("Kubernetes descriptors link")
});

fn in_package(pkg: &str, name: &str) -> Option<MessageDescriptor> {
    FILES
        .iter()
        .find(|f| f.package() == pkg)
        .and_then(|f| f.message_by_package_relative_name(name))
}

fn runtime(name: &str) -> MessageDescriptor {
    in_package("apimachinery.pkg.runtime", name).expect("runtime messages are compiled in")
}

const META: &str = "apimachinery.pkg.apis.meta.v1";

/// The proto package of a built-in group-version; None for custom resources, which
/// kube-apiserver serves as JSON and YAML only.
fn package(api_version: &str) -> Option<&'static str> {
    Some(match api_version {
        "v1" => "api.core.v1",
        "apps/v1" => "api.apps.v1",
        "policy/v1" => "api.policy.v1",
        "coordination.k8s.io/v1" => "api.coordination.v1",
        "events.k8s.io/v1" => "api.events.v1",
        "rbac.authorization.k8s.io/v1" => "api.rbac.v1",
        "admissionregistration.k8s.io/v1" => "api.admissionregistration.v1",
        "storage.k8s.io/v1" => "api.storage.v1",
        "autoscaling/v1" => "api.autoscaling.v1",
        // SelfSubjectAccessReview (`kubectl auth can-i`), SelfSubjectReview (`auth whoami`).
        "authorization.k8s.io/v1" => "api.authorization.v1",
        "authentication.k8s.io/v1" => "api.authentication.v1",
        "meta.k8s.io/v1" => META,
        _ => return None,
    })
}

/// Whether objects of this apiVersion have protobuf messages.
pub fn built_in(api_version: &str) -> bool {
    package(api_version).is_some()
}

/// The message of a built-in kind.
pub fn message(api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    let pkg = package(api_version)?;
    in_package(pkg, kind).or_else(|| in_package(META, kind))
}

/// What kube-apiserver answers a protobuf body for a type that has no protobuf form.
fn unsupported() -> ApiError {
    ApiError::new(
        415,
        "UnsupportedMediaType",
        format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml; got {MEDIA_TYPE:?}"
        ),
    )
}

/// A protobuf request body as the JSON object the JSON path would have received.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let raw = body.strip_prefix(MAGIC).ok_or_else(|| {
        ApiError::bad_request(format!(
            "provided data does not appear to be a protobuf message, expected prefix {:?}",
            MAGIC
        ))
    })?;
    let envelope = runtime("Unknown")
        .parse_from_bytes(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid protobuf envelope: {e}")))?;
    let unknown = to_json(&*envelope).map_err(ApiError::bad_request)?;
    let text = |p: &str| unknown.pointer(p).and_then(Value::as_str).unwrap_or("");
    if !text("/contentEncoding").is_empty() {
        return Err(ApiError::bad_request(format!(
            "unsupported protobuf contentEncoding {:?}",
            text("/contentEncoding")
        )));
    }
    let (api_version, kind) = (text("/typeMeta/apiVersion"), text("/typeMeta/kind"));
    if !built_in(api_version) {
        return Err(unsupported());
    }
    let desc = message(api_version, kind).ok_or_else(|| {
        ApiError::bad_request(format!(
            "no kind {kind:?} is registered for version {api_version:?} in scheme"
        ))
    })?;
    let raw = match str_field(&*envelope, "raw") {
        Some(ReflectValueRef::Bytes(b)) => b,
        _ => &[],
    };
    let msg = desc.parse_from_bytes(raw).map_err(|e| {
        ApiError::bad_request(format!(
            "the {kind} in the request body is not valid protobuf: {e}"
        ))
    })?;
    let mut v = to_json(&*msg).map_err(ApiError::bad_request)?;
    match v.as_object_mut() {
        Some(o) => {
            o.insert("apiVersion".into(), json!(api_version));
            o.insert("kind".into(), json!(kind));
        }
        None => return Err(ApiError::bad_request("the request body must be an object")),
    }
    Ok(v)
}

/// An object (or list, or Status) as a protobuf body; None when its kind has no message.
pub fn encode(v: &Value) -> Option<Result<Vec<u8>, String>> {
    let api_version = v.get("apiVersion")?.as_str()?;
    let kind = v.get("kind")?.as_str()?;
    let desc = message(api_version, kind)?;
    Some(encode_as(&desc, api_version, kind, v))
}

fn encode_as(
    desc: &MessageDescriptor,
    api_version: &str,
    kind: &str,
    v: &Value,
) -> Result<Vec<u8>, String> {
    let msg = from_json(desc, v)?;
    envelope(
        api_version,
        kind,
        msg.write_to_bytes_dyn().map_err(|e| e.to_string())?,
    )
}

/// The magic and the `runtime.Unknown` around one encoded object.
fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Result<Vec<u8>, String> {
    let mut unknown = from_json(
        &runtime("Unknown"),
        &json!({"typeMeta": {"apiVersion": api_version, "kind": kind}}),
    )?;
    set(
        &runtime("Unknown"),
        &mut *unknown,
        "raw",
        ReflectValueBox::Bytes(raw),
    )?;
    let mut out = MAGIC.to_vec();
    out.extend(unknown.write_to_bytes_dyn().map_err(|e| e.to_string())?);
    Ok(out)
}

/// One watch event as a protobuf frame: a 4-byte big-endian length, then a `meta.v1.WatchEvent`
/// whose object holds the object's own enveloped encoding.
pub fn watch_frame(event_type: &str, object: &Value) -> Result<Vec<u8>, String> {
    let inner = match encode(object) {
        Some(r) => r?,
        None => return Err("the object has no protobuf form".into()),
    };
    let ev = message("meta.k8s.io/v1", "WatchEvent").ok_or("no WatchEvent message")?;
    let mut msg = ev.new_instance();
    let field = |n: &str| ev.field_by_name(n).ok_or(format!("WatchEvent has no {n}"));
    field("type")?.set_singular_field(&mut *msg, ReflectValueBox::String(event_type.into()));
    let obj_field = field("object")?;
    let RuntimeType::Message(raw_ext) = obj_field.singular_runtime_type() else {
        return Err("WatchEvent.object is not a message".into());
    };
    let mut ext = raw_ext.new_instance();
    let raw = raw_ext
        .field_by_name("raw")
        .ok_or("RawExtension has no raw")?;
    raw.set_singular_field(&mut *ext, ReflectValueBox::Bytes(inner));
    obj_field.set_singular_field(&mut *msg, ReflectValueBox::Message(ext));
    let body = envelope(
        "v1",
        "WatchEvent",
        msg.write_to_bytes_dyn().map_err(|e| e.to_string())?,
    )?;
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend(body);
    Ok(out)
}

/// The JSON name of a field. go-to-protobuf names fields after their JSON tags, but for a few
/// Go fields without one the proto keeps the Go name while the JSON is lower camel case; the
/// kubelet's `DaemonEndpoint.Port` really is `Port` in JSON too.
fn json_name(desc: &MessageDescriptor, proto_name: &str) -> String {
    let mut chars = proto_name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_uppercase() && desc.full_name() != "api.core.v1.DaemonEndpoint" => {
            c.to_ascii_lowercase().to_string() + chars.as_str()
        }
        _ => proto_name.to_string(),
    }
}

/// Go structs embedded with `json:",inline"`: a field of their own in protobuf, their fields
/// spread into the parent's in JSON. The test `json_names_match_the_kubernetes_schemas` finds
/// every one reachable from the served kinds.
const INLINE: &[(&str, &str)] = &[
    ("api.core.v1.Probe", "handler"),
    ("api.core.v1.Volume", "volumeSource"),
    // A VolumeAttachment's spec.source.inlineVolumeSpec.
    ("api.core.v1.PersistentVolumeSpec", "persistentVolumeSource"),
    ("api.core.v1.EphemeralContainer", "ephemeralContainerCommon"),
    ("api.core.v1.SecretKeySelector", "localObjectReference"),
    ("api.core.v1.ConfigMapKeySelector", "localObjectReference"),
    ("api.core.v1.SecretEnvSource", "localObjectReference"),
    ("api.core.v1.ConfigMapEnvSource", "localObjectReference"),
    ("api.core.v1.SecretProjection", "localObjectReference"),
    ("api.core.v1.ConfigMapProjection", "localObjectReference"),
    ("api.core.v1.ConfigMapVolumeSource", "localObjectReference"),
    (
        "api.admissionregistration.v1.NamedRuleWithOperations",
        "ruleWithOperations",
    ),
    ("api.admissionregistration.v1.RuleWithOperations", "rule"),
];

fn inline(desc: &MessageDescriptor, field: &str) -> bool {
    INLINE
        .iter()
        .any(|(m, f)| *f == field && *m == desc.full_name())
}

fn time_json(msg: &dyn MessageDyn, micro: bool) -> Result<Option<Value>, String> {
    let d = msg.descriptor_dyn();
    let int = |n: &str| {
        d.field_by_name(n)
            .and_then(|f| f.get_singular(msg))
            .map(|v| match v {
                ReflectValueRef::I64(i) => i,
                ReflectValueRef::I32(i) => i64::from(i),
                _ => 0,
            })
    };
    let (secs, nanos) = (int("seconds"), int("nanos").unwrap_or(0));
    // metav1.Time marshals its zero value as an empty message; in JSON that is null.
    let Some(secs) = secs else { return Ok(None) };
    let t = chrono::DateTime::from_timestamp(secs, nanos.clamp(0, 999_999_999) as u32)
        .ok_or_else(|| format!("time {secs}s out of range"))?;
    let format = if micro {
        chrono::SecondsFormat::Micros
    } else {
        chrono::SecondsFormat::Secs
    };
    Ok(Some(json!(t.to_rfc3339_opts(format, true))))
}

fn str_field<'a>(msg: &'a dyn MessageDyn, name: &str) -> Option<ReflectValueRef<'a>> {
    msg.descriptor_dyn()
        .field_by_name(name)
        .and_then(|f| f.get_singular(msg))
}

fn raw_json(msg: &dyn MessageDyn, field: &str) -> Result<Option<Value>, String> {
    match str_field(msg, field) {
        Some(ReflectValueRef::Bytes(b)) if !b.is_empty() => serde_json::from_slice(b)
            .map(Some)
            .map_err(|e| format!("embedded object is not JSON: {e}")),
        _ => Ok(None),
    }
}

/// A decoded message as Kubernetes JSON; None for what Go's JSON would leave out.
fn message_json(msg: &dyn MessageDyn) -> Result<Option<Value>, String> {
    let desc = msg.descriptor_dyn();
    match desc.full_name() {
        "apimachinery.pkg.apis.meta.v1.Time" => return time_json(msg, false),
        "apimachinery.pkg.apis.meta.v1.MicroTime" => return time_json(msg, true),
        "apimachinery.pkg.util.intstr.IntOrString" => {
            let is_string = matches!(str_field(msg, "type"), Some(ReflectValueRef::I64(1)));
            return Ok(Some(if is_string {
                match str_field(msg, "strVal") {
                    Some(ReflectValueRef::String(s)) => json!(s),
                    _ => json!(""),
                }
            } else {
                match str_field(msg, "intVal") {
                    Some(ReflectValueRef::I32(i)) => json!(i),
                    _ => json!(0),
                }
            }));
        }
        "apimachinery.pkg.api.resource.Quantity" => {
            return Ok(match str_field(msg, "string") {
                Some(ReflectValueRef::String(s)) => Some(json!(s)),
                _ => None,
            });
        }
        "apimachinery.pkg.runtime.RawExtension" => return raw_json(msg, "raw"),
        "apimachinery.pkg.apis.meta.v1.FieldsV1" => return raw_json(msg, "Raw"),
        name @ "apimachinery.pkg.apis.meta.v1.Duration" => {
            return Err(format!(
                "{name} fields are not supported in protobuf bodies"
            ));
        }
        _ => {}
    }
    let mut out = Map::new();
    for f in desc.fields() {
        let name = json_name(&desc, f.name());
        match f.runtime_field_type() {
            RuntimeFieldType::Singular(_) if inline(&desc, f.name()) => {
                if let Some(ReflectValueRef::Message(m)) = f.get_singular(msg)
                    && let Some(Value::Object(fields)) = message_json(&*m)?
                {
                    out.extend(fields);
                }
            }
            RuntimeFieldType::Singular(_) => {
                let Some(v) = f.get_singular(msg) else {
                    continue;
                };
                if matches!(v, ReflectValueRef::String("")) {
                    continue;
                }
                if let Some(j) = value_json(v)? {
                    out.insert(name, j);
                }
            }
            RuntimeFieldType::Repeated(_) => {
                let items = f.get_repeated(msg);
                if items.is_empty() {
                    continue;
                }
                let mut arr = Vec::with_capacity(items.len());
                for v in &items {
                    arr.push(value_json(v)?.unwrap_or(Value::Null));
                }
                out.insert(name, Value::Array(arr));
            }
            RuntimeFieldType::Map(_, _) => {
                let map = f.get_map(msg);
                if map.is_empty() {
                    continue;
                }
                let mut obj = Map::new();
                for (k, v) in &map {
                    let k = match k {
                        ReflectValueRef::String(s) => s.to_string(),
                        other => other.to_string(),
                    };
                    obj.insert(k, value_json(v)?.unwrap_or(Value::Null));
                }
                out.insert(name, Value::Object(obj));
            }
        }
    }
    Ok(Some(Value::Object(out)))
}

fn to_json(msg: &dyn MessageDyn) -> Result<Value, String> {
    Ok(message_json(msg)?.unwrap_or_else(|| json!({})))
}

fn value_json(v: ReflectValueRef) -> Result<Option<Value>, String> {
    Ok(Some(match v {
        ReflectValueRef::U32(i) => json!(i),
        ReflectValueRef::U64(i) => json!(i),
        ReflectValueRef::I32(i) => json!(i),
        ReflectValueRef::I64(i) => json!(i),
        ReflectValueRef::F32(f) => json!(f),
        ReflectValueRef::F64(f) => json!(f),
        ReflectValueRef::Bool(b) => json!(b),
        ReflectValueRef::String(s) => json!(s),
        ReflectValueRef::Bytes(b) => json!(B64.encode(b)),
        ReflectValueRef::Enum(_, i) => json!(i),
        ReflectValueRef::Message(m) => return message_json(&*m),
    }))
}

fn time_message(desc: &MessageDescriptor, v: &Value) -> Result<Box<dyn MessageDyn>, String> {
    let mut msg = desc.new_instance();
    if let Some(s) = v.as_str() {
        let t = chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|e| format!("invalid time {s:?}: {e}"))?;
        set(
            desc,
            &mut *msg,
            "seconds",
            ReflectValueBox::I64(t.timestamp()),
        )?;
        set(
            desc,
            &mut *msg,
            "nanos",
            ReflectValueBox::I32(t.timestamp_subsec_nanos() as i32),
        )?;
    }
    Ok(msg)
}

fn set(
    desc: &MessageDescriptor,
    msg: &mut dyn MessageDyn,
    field: &str,
    v: ReflectValueBox,
) -> Result<(), String> {
    desc.field_by_name(field)
        .ok_or_else(|| format!("{} has no field {field}", desc.full_name()))?
        .set_singular_field(msg, v);
    Ok(())
}

/// Kubernetes JSON as a message of the given type. Fields the message does not have
/// (apiVersion and kind, which travel in the envelope) are left out.
fn from_json(desc: &MessageDescriptor, v: &Value) -> Result<Box<dyn MessageDyn>, String> {
    match desc.full_name() {
        "apimachinery.pkg.apis.meta.v1.Time" | "apimachinery.pkg.apis.meta.v1.MicroTime" => {
            return time_message(desc, v);
        }
        "apimachinery.pkg.util.intstr.IntOrString" => {
            let mut msg = desc.new_instance();
            match v {
                Value::String(s) => {
                    set(desc, &mut *msg, "type", ReflectValueBox::I64(1))?;
                    set(
                        desc,
                        &mut *msg,
                        "strVal",
                        ReflectValueBox::String(s.clone()),
                    )?;
                }
                _ => {
                    let i = v
                        .as_i64()
                        .ok_or_else(|| format!("not an int or string: {v}"))?;
                    set(desc, &mut *msg, "type", ReflectValueBox::I64(0))?;
                    set(desc, &mut *msg, "intVal", ReflectValueBox::I32(i as i32))?;
                }
            }
            return Ok(msg);
        }
        "apimachinery.pkg.api.resource.Quantity" => {
            let mut msg = desc.new_instance();
            let s = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            set(desc, &mut *msg, "string", ReflectValueBox::String(s))?;
            return Ok(msg);
        }
        name @ ("apimachinery.pkg.runtime.RawExtension"
        | "apimachinery.pkg.apis.meta.v1.FieldsV1") => {
            let mut msg = desc.new_instance();
            let field = if name.ends_with("FieldsV1") {
                "Raw"
            } else {
                "raw"
            };
            let raw = serde_json::to_vec(v).map_err(|e| e.to_string())?;
            set(desc, &mut *msg, field, ReflectValueBox::Bytes(raw))?;
            return Ok(msg);
        }
        _ => {}
    }
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{} must be an object, not {v}", desc.name()))?;
    let mut msg = desc.new_instance();
    for f in desc.fields() {
        if inline(desc, f.name())
            && let RuntimeType::Message(m) = f.singular_runtime_type()
        {
            // The parent's JSON holds the embedded struct's fields; it takes those it has.
            let sub = from_json(&m, v)?;
            if m.fields().any(|sf| sf.has_field(&*sub)) {
                f.set_singular_field(&mut *msg, ReflectValueBox::Message(sub));
            }
            continue;
        }
        let Some(val) = obj.get(&json_name(desc, f.name())) else {
            continue;
        };
        if val.is_null() {
            continue;
        }
        match f.runtime_field_type() {
            RuntimeFieldType::Singular(t) => {
                f.set_singular_field(&mut *msg, value_box(&t, val)?);
            }
            RuntimeFieldType::Repeated(t) => {
                let arr = val
                    .as_array()
                    .ok_or_else(|| format!("{} must be an array", f.name()))?;
                let mut rep = f.mut_repeated(&mut *msg);
                for item in arr {
                    rep.push(value_box(&t, item)?);
                }
            }
            RuntimeFieldType::Map(kt, vt) => {
                let m = val
                    .as_object()
                    .ok_or_else(|| format!("{} must be an object", f.name()))?;
                let mut map = f.mut_map(&mut *msg);
                for (k, item) in m {
                    map.insert(value_box(&kt, &json!(k))?, value_box(&vt, item)?);
                }
            }
        }
    }
    Ok(msg)
}

fn value_box(t: &RuntimeType, v: &Value) -> Result<ReflectValueBox, String> {
    let bad = || format!("{v} is not a {t}");
    Ok(match t {
        RuntimeType::I32 => ReflectValueBox::I32(v.as_i64().ok_or_else(bad)? as i32),
        RuntimeType::I64 => ReflectValueBox::I64(v.as_i64().ok_or_else(bad)?),
        RuntimeType::U32 => ReflectValueBox::U32(v.as_u64().ok_or_else(bad)? as u32),
        RuntimeType::U64 => ReflectValueBox::U64(v.as_u64().ok_or_else(bad)?),
        RuntimeType::F32 => ReflectValueBox::F32(v.as_f64().ok_or_else(bad)? as f32),
        RuntimeType::F64 => ReflectValueBox::F64(v.as_f64().ok_or_else(bad)?),
        RuntimeType::Bool => ReflectValueBox::Bool(v.as_bool().ok_or_else(bad)?),
        RuntimeType::String => ReflectValueBox::String(match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
        RuntimeType::VecU8 => ReflectValueBox::Bytes(
            B64.decode(v.as_str().ok_or_else(bad)?)
                .map_err(|e| format!("invalid base64: {e}"))?,
        ),
        RuntimeType::Enum(e) => {
            ReflectValueBox::Enum(e.clone(), v.as_i64().ok_or_else(bad)? as i32)
        }
        RuntimeType::Message(m) => ReflectValueBox::Message(from_json(m, v)?),
    })
}

/// Which body the client gets, as kube-apiserver negotiates from `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    Json,
    Protobuf,
    /// Nothing the server can produce.
    Neither,
}

/// JSON whenever the client takes it (kubectl and client-go list protobuf first and JSON
/// second, and JSON is what every path here produces), protobuf when it is all it takes.
pub fn wanted(accept: Option<&str>) -> Wanted {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Wanted::Json;
    };
    let mimes: Vec<&str> = accept
        .split(',')
        .map(|p| p.split(';').next().unwrap_or("").trim())
        .collect();
    if mimes.iter().any(|m| {
        matches!(
            *m,
            "application/json" | "application/yaml" | "*/*" | "application/*"
        )
    }) {
        Wanted::Json
    } else if mimes.contains(&MEDIA_TYPE) {
        Wanted::Protobuf
    } else {
        Wanted::Neither
    }
}

/// kube-apiserver's answer to an `Accept` it cannot satisfy.
pub fn not_acceptable() -> ApiError {
    ApiError::new(
        406,
        "NotAcceptable",
        "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: Value) {
        let bytes = encode(&v).expect("a built-in kind").expect("encodes");
        assert_eq!(&bytes[..4], MAGIC);
        let back = decode(&bytes).expect("decodes");
        assert_eq!(back, v);
    }

    #[test]
    fn objects_survive_protobuf_with_kubernetes_json_rules() {
        round_trip(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web-1", "namespace": "shop", "uid": "u-1", "resourceVersion": "42",
                "labels": {"app": "web", "empty": ""},
                "creationTimestamp": "2026-01-02T03:04:05Z",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "u-0", "controller": true}],
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "time": "2026-01-02T03:04:05Z",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}}}],
            },
            "spec": {
                "nodeName": "node-1", "terminationGracePeriodSeconds": 30,
                "containers": [{
                    "name": "web", "image": "nginx:1", "args": ["-g", ""],
                    "ports": [{"containerPort": 8080, "protocol": "TCP", "name": "http"}],
                    "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                    "livenessProbe": {"tcpSocket": {"port": 8080}},
                }],
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
            },
            "status": {
                "phase": "Running", "startTime": "2026-01-02T03:04:06Z",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-02T03:04:07Z"}],
                "containerStatuses": [{"name": "web", "image": "nginx:1", "imageID": "sha", "ready": false, "restartCount": 0,
                    "state": {"running": {"startedAt": "2026-01-02T03:04:06Z"}}}],
            },
        }));
        round_trip(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "shop"},
            "type": "Opaque", "data": {"password": "aHVudGVyMg==", "none": ""},
        }));
        round_trip(json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "eventTime": "2026-01-02T03:04:05.123456Z", "reason": "Rebooted", "action": "Reboot",
            "reportingController": "kubelet", "reportingInstance": "node-1", "type": "Normal",
            "regarding": {"kind": "Node", "name": "node-1"},
        }));
        // Fields whose proto names are the Go names (Expression) map to their JSON names.
        round_trip(json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": "p"},
            "spec": {
                "failurePolicy": "Fail",
                "variables": [{"name": "node", "expression": "object.metadata.name"}],
                "validations": [{"expression": "true", "message": "no"}],
            },
        }));
        // A false bool that Go's JSON always writes (no omitempty) stays.
        round_trip(json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
            "metadata": {"name": "csi-0123"},
            "spec": {"attacher": "sandbox.csi.k8s.io", "nodeName": "node-1", "source": {"persistentVolumeName": "pv-shop-data"}},
            "status": {"attached": false},
        }));
        round_trip(json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "metadata": {},
            "spec": {"resourceAttributes": {"verb": "patch", "resource": "nodes", "name": "node-1"}},
            "status": {"allowed": false, "reason": "no RBAC rule allows it"},
        }));
        round_trip(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "shop", "generation": 2},
            "spec": {
                "replicas": 0,
                "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "x"}]}},
            },
        }));
    }

    /// Every field of every message reachable from the served kinds has, under the JSON name
    /// we give it, a property in k8s-openapi's schema of the same type.
    #[test]
    fn json_names_match_the_kubernetes_schemas() {
        let mut defs = Map::new();
        for (g, v) in crate::resources::groups().into_iter().chain([("", "v1")]) {
            if let Value::Object(m) = crate::openapi::schemas(g, v) {
                defs.extend(m);
            }
        }
        // And the review kinds kubectl's `auth` commands send.
        let mut g = schemars::generate::SchemaSettings::openapi3().into_generator();
        use k8s_openapi::api::{authentication, authorization};
        g.subschema_for::<authorization::v1::SelfSubjectAccessReview>();
        g.subschema_for::<authorization::v1::SelfSubjectRulesReview>();
        g.subschema_for::<authentication::v1::SelfSubjectReview>();
        defs.extend(g.take_definitions(true));
        let mut seen = std::collections::HashSet::new();
        let mut todo: Vec<MessageDescriptor> = crate::resources::RESOURCES
            .iter()
            .filter_map(|r| message(&r.api_version(), r.kind))
            .chain(
                [
                    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
                    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"),
                    ("authentication.k8s.io/v1", "SelfSubjectReview"),
                ]
                .into_iter()
                .map(|(av, k)| message(av, k).expect("compiled in")),
            )
            .collect();
        let mut checked = 0;
        while let Some(d) = todo.pop() {
            if !seen.insert(d.full_name().to_string()) {
                continue;
            }
            let props = defs
                .get(&format!("io.k8s.{}", d.full_name()))
                .and_then(|s| s.get("properties"))
                .and_then(Value::as_object);
            // The message's fields as JSON sees them: embedded structs' fields spread in.
            let mut fields: Vec<(MessageDescriptor, protobuf::reflect::FieldDescriptor)> =
                d.fields().map(|f| (d.clone(), f)).collect();
            let mut i = 0;
            while i < fields.len() {
                let (owner, f) = fields[i].clone();
                if inline(&owner, f.name())
                    && let RuntimeType::Message(m) = f.singular_runtime_type()
                {
                    fields.extend(m.fields().map(|sf| (m.clone(), sf)));
                }
                i += 1;
            }
            for (owner, f) in fields {
                if inline(&owner, f.name()) {
                    continue;
                }
                let name = json_name(&owner, f.name());
                if let Some(props) = props {
                    assert!(
                        props.contains_key(&name),
                        "{}.{} is {name:?} in JSON, which the schema of {} does not have",
                        owner.full_name(),
                        f.name(),
                        d.full_name()
                    );
                    checked += 1;
                }
                let t = match f.runtime_field_type() {
                    RuntimeFieldType::Singular(t) | RuntimeFieldType::Repeated(t) => t,
                    RuntimeFieldType::Map(_, t) => t,
                };
                if let RuntimeType::Message(m) = t {
                    todo.push(m);
                }
            }
        }
        assert!(checked > 900, "only {checked} fields checked");
    }

    #[test]
    fn bad_bodies_are_refused_with_what_is_wrong() {
        let e = decode(b"{\"kind\":\"Pod\"}").unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("expected prefix"), "{}", e.message);
        let e = decode(b"k8s\0\xff\xff\xff").unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            e.message.contains("invalid protobuf envelope"),
            "{}",
            e.message
        );
        let unknown_kind = envelope("v1", "Gizmo", Vec::new()).unwrap();
        let e = decode(&unknown_kind).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            e.message
                .contains("no kind \"Gizmo\" is registered for version \"v1\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn accept_negotiation() {
        assert_eq!(wanted(None), Wanted::Json);
        assert_eq!(
            wanted(Some("application/vnd.kubernetes.protobuf,application/json")),
            Wanted::Json
        );
        assert_eq!(
            wanted(Some("application/vnd.kubernetes.protobuf")),
            Wanted::Protobuf
        );
        assert_eq!(wanted(Some("text/html")), Wanted::Neither);
    }
}
