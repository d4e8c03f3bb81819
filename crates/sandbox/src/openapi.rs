//! OpenAPI v3 schemas of the built-in kinds the sandbox serves, for `kubectl explain`: the
//! JSON schemas k8s-openapi generates for its types (with the upstream field descriptions),
//! each kind's schema marked with `x-kubernetes-group-version-kind` as kube-apiserver marks
//! it. Custom resources (monitoring.coreos.com) get none, as a CRD without a schema would not.

use k8s_openapi::api::{
    admissionregistration, apps, autoscaling, coordination, core, events, policy, rbac, storage,
};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::LazyLock;

use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

/// Adds `T`'s schema (and those it refers to) to the generator; returns its name.
fn add<T: JsonSchema>(g: &mut SchemaGenerator) -> String {
    g.subschema_for::<T>();
    T::schema_name().into_owned()
}

/// The served kinds of one group-version and their schema names.
fn kinds(group: &str, version: &str, g: &mut SchemaGenerator) -> Vec<(&'static str, String)> {
    match (group, version) {
        ("", "v1") => vec![
            ("Node", add::<core::v1::Node>(g)),
            ("Pod", add::<core::v1::Pod>(g)),
            ("Namespace", add::<core::v1::Namespace>(g)),
            ("Event", add::<core::v1::Event>(g)),
            ("Service", add::<core::v1::Service>(g)),
            ("ConfigMap", add::<core::v1::ConfigMap>(g)),
            ("Secret", add::<core::v1::Secret>(g)),
            ("ServiceAccount", add::<core::v1::ServiceAccount>(g)),
            ("Endpoints", add::<core::v1::Endpoints>(g)),
        ],
        ("policy", "v1") => vec![
            (
                "PodDisruptionBudget",
                add::<policy::v1::PodDisruptionBudget>(g),
            ),
            ("Eviction", add::<policy::v1::Eviction>(g)),
        ],
        ("coordination.k8s.io", "v1") => vec![("Lease", add::<coordination::v1::Lease>(g))],
        ("events.k8s.io", "v1") => vec![("Event", add::<events::v1::Event>(g))],
        ("apps", "v1") => vec![
            ("DaemonSet", add::<apps::v1::DaemonSet>(g)),
            ("Deployment", add::<apps::v1::Deployment>(g)),
            ("ReplicaSet", add::<apps::v1::ReplicaSet>(g)),
            ("StatefulSet", add::<apps::v1::StatefulSet>(g)),
        ],
        ("rbac.authorization.k8s.io", "v1") => vec![
            ("ClusterRole", add::<rbac::v1::ClusterRole>(g)),
            ("ClusterRoleBinding", add::<rbac::v1::ClusterRoleBinding>(g)),
            ("Role", add::<rbac::v1::Role>(g)),
            ("RoleBinding", add::<rbac::v1::RoleBinding>(g)),
        ],
        ("admissionregistration.k8s.io", "v1") => vec![
            (
                "ValidatingAdmissionPolicy",
                add::<admissionregistration::v1::ValidatingAdmissionPolicy>(g),
            ),
            (
                "ValidatingAdmissionPolicyBinding",
                add::<admissionregistration::v1::ValidatingAdmissionPolicyBinding>(g),
            ),
        ],
        ("storage.k8s.io", "v1") => {
            vec![("VolumeAttachment", add::<storage::v1::VolumeAttachment>(g))]
        }
        _ => Vec::new(),
    }
}

/// Each served group-version's schemas, made once: they depend only on the build.
static SCHEMAS: LazyLock<HashMap<(String, String), (Value, String)>> = LazyLock::new(|| {
    let mut out = HashMap::new();
    for (g, v) in crate::resources::groups().into_iter().chain([("", "v1")]) {
        let s = generate(g, v);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        s.to_string().hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        out.insert(
            (g.to_string(), v.to_string()),
            (s, format!("{:016X}", h.finish())),
        );
    }
    out
});

/// `components.schemas` of the group-version's OpenAPI v3 document.
pub fn schemas(group: &str, version: &str) -> Value {
    SCHEMAS
        .get(&(group.to_string(), version.to_string()))
        .map(|(s, _)| s.clone())
        .unwrap_or_else(|| json!({}))
}

/// The `hash` of the document's URL in `/openapi/v3`: kubectl caches a document by it, so it
/// changes with the schemas (a cache from an older sandbox is not used for a newer one).
pub fn hash(group: &str, version: &str) -> String {
    SCHEMAS
        .get(&(group.to_string(), version.to_string()))
        .map(|(_, h)| h.clone())
        .unwrap_or_default()
}

fn generate(group: &str, version: &str) -> Value {
    let mut g = SchemaSettings::openapi3().into_generator();
    let mut marked = kinds(group, version, &mut g)
        .into_iter()
        .map(|(kind, name)| {
            (
                name,
                json!({"group": group, "version": version, "kind": kind}),
            )
        })
        .collect::<Vec<_>>();
    // The scale subresource of apps/v1 workloads answers with autoscaling/v1 Scale.
    if (group, version) == ("apps", "v1") {
        marked.push((
            add::<autoscaling::v1::Scale>(&mut g),
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}),
        ));
    }
    let mut defs: Map<String, Value> = g.take_definitions(true);
    for (name, gvk) in marked {
        if let Some(s) = defs.get_mut(&name).and_then(Value::as_object_mut) {
            s.insert("x-kubernetes-group-version-kind".into(), json!([gvk]));
        }
    }
    Value::Object(defs)
}
