//! Evaluates a ValidatingAdmissionPolicy and its binding on an admission request the way the
//! Kubernetes API server does (k8s.io/apiserver, `admission/plugin/policy/validating`), with the
//! `cel` crate as the CEL implementation. The sandbox enforces policies with it on every write,
//! and the tests evaluate `deploy/admission/` with it directly.
//!
//! Like the API server: the policy's `matchConstraints` and the binding's `matchResources`
//! (`resourceRules`, `excludeResourceRules`, namespace and object selectors), then
//! `matchConditions` (one `false` skips the policy; otherwise an error applies
//! `failurePolicy`), then `variables` and `validations` (with `message`, `messageExpression` and
//! `reason`), the binding's `validationActions`, the `request`, `object`, `oldObject`,
//! `namespaceObject` and `variables` activations, and the API server's wording of a denial and
//! of a warning.
//!
//! Not modelled, and rejected when a policy uses it (so nothing passes here that the API server
//! would treat differently): `paramKind`/`paramRef`, `auditAnnotations`. `matchPolicy:
//! Equivalent` matches only the version asked for. Also not modelled: type-checking at
//! creation, the cost budget, Kubernetes' own CEL libraries (quantity, ip, url, authorizer,
//! ...: an expression using one fails to evaluate here) and list-type-aware equality (a list
//! marked `x-kubernetes-list-type: map` or `set` compares ignoring order in Kubernetes, in
//! order here).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cel::objects::{Key, Map};
use cel::{Context, Env, ExecutionError, Program, Value};
use serde_json::{Value as Json, json};

/// A policy file that cannot be evaluated as written; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LoadError(String);

fn load_err(msg: impl Into<String>) -> LoadError {
    LoadError(msg.into())
}

/// `failurePolicy`: what an evaluation error does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    Fail,
    Ignore,
}

/// One `validationActions` entry of the binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Deny,
    Warn,
    Audit,
}

/// A ValidatingAdmissionPolicy with its binding, its expressions compiled.
pub struct Policy {
    name: String,
    binding: String,
    failure_policy: FailurePolicy,
    actions: Vec<Action>,
    constraints: MatchResources,
    /// The binding's `matchResources`, when it narrows the policy's.
    binding_match: Option<MatchResources>,
    match_conditions: Vec<Named>,
    variables: Vec<Named>,
    validations: Vec<Validation>,
    env: Arc<Env>,
}

struct Named {
    name: String,
    expression: String,
    program: Program,
}

struct Validation {
    expression: String,
    program: Program,
    message: Option<String>,
    message_expression: Option<Program>,
    reason: Option<String>,
}

/// `matchConstraints` / `matchResources`: what a request must be for the policy to apply.
#[derive(Debug, Default)]
struct MatchResources {
    rules: Vec<Rule>,
    exclude: Vec<Rule>,
    /// `None`: everything (absent or `{}`).
    namespace_selector: Option<Selector>,
    object_selector: Option<Selector>,
}

/// A metav1.LabelSelector: every `matchLabels` pair and every expression must hold.
#[derive(Debug)]
struct Selector {
    match_labels: Vec<(String, String)>,
    expressions: Vec<(String, SelectorOp, Vec<String>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SelectorOp {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug)]
struct Rule {
    /// `Cluster`, `Namespaced` or `*` (the default).
    scope: String,
    operations: Vec<String>,
    api_groups: Vec<String>,
    api_versions: Vec<String>,
    resources: Vec<String>,
    resource_names: Vec<String>,
}

/// The user a request is made as (`request.userInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// For service account tokens: `authentication.kubernetes.io/node-name`, `.../pod-name`, ...
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The resource a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub group: String,
    pub version: String,
    /// Plural, e.g. `nodes`.
    pub resource: String,
    /// e.g. `status`; empty for the resource itself.
    pub sub_resource: String,
    pub kind: String,
}

impl Resource {
    /// core/v1 `nodes`.
    pub fn nodes() -> Self {
        Resource {
            group: String::new(),
            version: "v1".into(),
            resource: "nodes".into(),
            sub_resource: String::new(),
            kind: "Node".into(),
        }
    }

    /// The same resource's `sub` subresource, e.g. `nodes/status`.
    pub fn subresource(mut self, sub: &str) -> Self {
        self.sub_resource = sub.into();
        self
    }
}

/// An admission request: what the API server hands a policy.
#[derive(Debug, Clone)]
pub struct Request {
    /// `CREATE`, `UPDATE` (a PATCH is one), `DELETE` or `CONNECT`.
    pub operation: String,
    pub resource: Resource,
    pub name: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub user: UserInfo,
    /// The object after the request (`None` for DELETE).
    pub object: Option<Json>,
    /// The object before it (`None` for CREATE).
    pub old_object: Option<Json>,
    /// `?dryRun=All`: admission runs, nothing is stored.
    pub dry_run: bool,
    /// The request's Namespace object (`namespaceObject`); `None` for cluster-scoped ones.
    pub namespace_object: Option<Json>,
}

impl Request {
    /// An UPDATE of `old` to `new` (named by `new`'s `metadata.name`), as `user`.
    pub fn update(resource: Resource, user: UserInfo, old: Json, new: Json) -> Self {
        let name = new["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let namespace = new["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Request {
            operation: "UPDATE".into(),
            resource,
            name,
            namespace,
            user,
            object: Some(new),
            old_object: Some(old),
            dry_run: false,
            namespace_object: None,
        }
    }

    /// `request` as the API server gives it to CEL: the AdmissionRequest converted to
    /// unstructured, so empty optional fields are absent (`has()` is false for them).
    fn to_json(&self) -> Json {
        let r = &self.resource;
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let gvr = json!({"group": r.group, "version": r.version, "resource": r.resource});
        let mut user = serde_json::Map::new();
        if !self.user.username.is_empty() {
            user.insert("username".into(), json!(self.user.username));
        }
        if !self.user.uid.is_empty() {
            user.insert("uid".into(), json!(self.user.uid));
        }
        if !self.user.groups.is_empty() {
            user.insert("groups".into(), json!(self.user.groups));
        }
        if !self.user.extra.is_empty() {
            user.insert("extra".into(), json!(self.user.extra));
        }
        let mut req = json!({
            "uid": "00000000-0000-0000-0000-000000000000",
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "operation": self.operation,
            "userInfo": user,
            "dryRun": self.dry_run,
        });
        // A PATCH reaches admission as an UPDATE with UpdateOptions.
        let options = match self.operation.as_str() {
            "CREATE" => Some("CreateOptions"),
            "UPDATE" => Some("UpdateOptions"),
            "DELETE" => Some("DeleteOptions"),
            _ => None,
        };
        if let Some(kind) = options {
            req["options"] = json!({"apiVersion": "meta.k8s.io/v1", "kind": kind});
        }
        if !r.sub_resource.is_empty() {
            req["subResource"] = json!(r.sub_resource);
            req["requestSubResource"] = json!(r.sub_resource);
        }
        if !self.name.is_empty() {
            req["name"] = json!(self.name);
        }
        if !self.namespace.is_empty() {
            req["namespace"] = json!(self.namespace);
        }
        req
    }
}

/// What the policy made of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Outside `matchConstraints`, or a match condition is false: the policy does not apply.
    NotMatched,
    /// Every validation held (or failed only with `Warn`/`Audit` actions).
    Admitted { warnings: Vec<String> },
    /// Refused, as the API server answers it.
    Denied(Denial),
}

/// The API server's answer to a denied request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// HTTP status: 403 for `Forbidden`, 422 for `Invalid` (the default), ...
    pub code: u16,
    pub reason: String,
    /// The Status message, e.g. `nodes "a" is forbidden: ValidatingAdmissionPolicy ...`.
    pub message: String,
    /// The Status `details.name`: the request's name, else the object's (or its
    /// `generateName`), else `Unknown`.
    pub name: String,
    /// The Status' one `details.causes[].message`: `ValidatingAdmissionPolicy 'P' with binding
    /// 'B' denied request: MESSAGE`.
    pub cause: String,
}

/// The longest messageExpression result the API server uses (celconfig).
const MAX_MESSAGE_BYTES: usize = 5 * 1024;

impl Policy {
    /// Reads the ValidatingAdmissionPolicy and its ValidatingAdmissionPolicyBinding from a
    /// (multi-document) YAML file's text, and compiles every expression.
    pub fn from_yaml(text: &str) -> Result<Policy, LoadError> {
        let mut policy = None;
        let mut binding = None;
        for doc in serde_yaml::Deserializer::from_str(text) {
            let v: Json = serde::Deserialize::deserialize(doc)
                .map_err(|e| load_err(format!("not valid YAML: {e}")))?;
            match v["kind"].as_str() {
                Some("ValidatingAdmissionPolicy") => policy = Some(v),
                Some("ValidatingAdmissionPolicyBinding") => binding = Some(v),
                _ => {}
            }
        }
        let policy = policy.ok_or_else(|| load_err("no ValidatingAdmissionPolicy in the file"))?;
        let binding =
            binding.ok_or_else(|| load_err("no ValidatingAdmissionPolicyBinding in the file"))?;
        Policy::new(&policy, &binding)
    }

    /// A policy and its binding, as JSON objects.
    pub fn new(policy: &Json, binding: &Json) -> Result<Policy, LoadError> {
        let name = str_at(policy, "/metadata/name")?;
        let b = parse_binding(binding)?;
        if b.policy_name != name {
            return Err(load_err(format!(
                "binding {}: spec.policyName is {:?}, the policy is {name:?}",
                b.name, b.policy_name
            )));
        }
        let spec = &policy["spec"];
        for field in ["paramKind", "auditAnnotations"] {
            if !spec[field].is_null() {
                return Err(unsupported(&format!("spec.{field}")));
            }
        }
        let constraints = match_resources(&spec["matchConstraints"], "spec.matchConstraints")?;
        if constraints.rules.is_empty() {
            return Err(load_err(
                "spec.matchConstraints.resourceRules: Required value: the API server requires at least one rule",
            ));
        }
        let failure_policy = match spec["failurePolicy"].as_str() {
            None | Some("Fail") => FailurePolicy::Fail,
            Some("Ignore") => FailurePolicy::Ignore,
            Some(other) => {
                return Err(load_err(format!(
                    "spec.failurePolicy: {other:?} is neither \"Fail\" nor \"Ignore\""
                )));
            }
        };
        // Kubernetes' CEL environment has cel-go's strings extension besides the standard
        // library.
        let mut env = Env::stdlib();
        env.add_extension(cel::extensions::strings)
            .map_err(|e| load_err(format!("CEL environment: {e:?}")))?;
        let compile = |field: &str, source: &str| {
            env.compile(source)
                .map_err(|e| load_err(format!("{field}: not valid CEL: {e}")))
        };
        let named = |list: &str| {
            items(spec, list)
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let field = format!("spec.{list}[{i}]");
                    let name = str_at(item, "/name")
                        .map_err(|_| load_err(format!("{field}.name: missing")))?;
                    let expression = str_at(item, "/expression")
                        .map_err(|_| load_err(format!("{field}.expression: missing")))?;
                    Ok(Named {
                        program: compile(&format!("{field}.expression"), &expression)?,
                        name,
                        expression,
                    })
                })
                .collect::<Result<Vec<_>, LoadError>>()
        };
        let match_conditions = named("matchConditions")?;
        let variables = named("variables")?;
        let validations = items(spec, "validations")
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let field = format!("spec.validations[{i}]");
                let expression = str_at(item, "/expression")
                    .map_err(|_| load_err(format!("{field}.expression: missing")))?;
                let message_expression = match item["messageExpression"].as_str() {
                    Some(src) => Some(compile(&format!("{field}.messageExpression"), src)?),
                    None => None,
                };
                let reason = item["reason"].as_str().map(str::to_string);
                if let Some(r) = &reason
                    && reason_code(r).is_none()
                {
                    return Err(load_err(format!(
                        "{field}.reason: {r:?} is not one of Unauthorized, Forbidden, Invalid, RequestEntityTooLarge"
                    )));
                }
                Ok(Validation {
                    program: compile(&format!("{field}.expression"), &expression)?,
                    expression,
                    message: item["message"].as_str().map(str::to_string),
                    message_expression,
                    reason,
                })
            })
            .collect::<Result<Vec<_>, LoadError>>()?;
        if validations.is_empty() {
            return Err(load_err("spec.validations: empty; nothing to evaluate"));
        }
        Ok(Policy {
            name,
            binding: b.name,
            failure_policy,
            actions: b.actions,
            constraints,
            binding_match: b.match_resources,
            match_conditions,
            variables,
            validations,
            env: Arc::new(env),
        })
    }

    /// The policy's `metadata.name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The binding's `metadata.name`.
    pub fn binding(&self) -> &str {
        &self.binding
    }

    /// `spec.failurePolicy`.
    pub fn failure_policy(&self) -> FailurePolicy {
        self.failure_policy
    }

    /// Whether [`Policy::matches`] reads `object`, `oldObject` or `namespaceObject` (a
    /// namespace or object selector); otherwise a request without them is matched the same.
    pub fn matches_on_objects(&self) -> bool {
        self.constraints.uses_objects()
            || self
                .binding_match
                .as_ref()
                .is_some_and(|m| m.uses_objects())
    }

    /// Whether `req` is one this policy and binding apply to, before any CEL runs.
    pub fn matches(&self, req: &Request) -> bool {
        self.constraints.matches(req) && self.binding_match.as_ref().is_none_or(|m| m.matches(req))
    }

    /// What the API server does with `req` under this policy and binding.
    pub fn evaluate(&self, req: &Request) -> Decision {
        if !self.matches(req) {
            return Decision::NotMatched;
        }
        let mut ctx = Context::with_env(Arc::clone(&self.env));
        let or_null = |o: &Option<Json>| o.as_ref().map_or(Value::Null, to_cel);
        ctx.add_variable_from_value("object", or_null(&req.object));
        ctx.add_variable_from_value("oldObject", or_null(&req.old_object));
        ctx.add_variable_from_value("request", to_cel(&req.to_json()));
        ctx.add_variable_from_value("params", Value::Null);
        ctx.add_variable_from_value("namespaceObject", or_null(&req.namespace_object));

        // All conditions are evaluated: a false one wins over an error in another.
        let mut condition_errors = Vec::new();
        for c in &self.match_conditions {
            match c.program.execute(&ctx) {
                Ok(Value::Bool(true)) => {}
                Ok(_) => return Decision::NotMatched,
                Err(e) => condition_errors.push(format!(
                    "matchCondition '{}': {}",
                    c.name,
                    eval_error(&c.expression, &e)
                )),
            }
        }
        let mut denied: Vec<(String, String)> = Vec::new();
        if !condition_errors.is_empty() {
            if self.failure_policy == FailurePolicy::Ignore {
                return Decision::Admitted { warnings: vec![] };
            }
            denied.push(("Invalid".into(), condition_errors.join(", ")));
        } else {
            denied = self.validate(&mut ctx);
        }

        let mut warnings = Vec::new();
        let mut deny = None;
        for (reason, message) in denied {
            for action in &self.actions {
                match action {
                    Action::Deny => {
                        deny.get_or_insert_with(|| (reason.clone(), message.clone()));
                    }
                    Action::Warn => warnings.push(self.warning(&message)),
                    Action::Audit => {}
                }
            }
        }
        match deny {
            None => Decision::Admitted { warnings },
            Some((reason, message)) => Decision::Denied(self.denial(req, reason, &message)),
        }
    }

    /// Variables, then validations; the (reason, message) of each failed validation in order.
    fn validate(&self, ctx: &mut Context) -> Vec<(String, String)> {
        // Kubernetes evaluates a variable lazily, on first use, and a variable may use only
        // the ones before it. Evaluating them in order and leaving a failed one out of
        // `variables` is equivalent: an expression that uses it fails, one that does not,
        // does not. The failure is kept to explain that error.
        let mut values: HashMap<Key, Value> = HashMap::new();
        let mut failed: HashMap<String, String> = HashMap::new();
        for v in &self.variables {
            ctx.add_variable_from_value("variables", Value::Map(Map::from(values.clone())));
            match v.program.execute(ctx) {
                Ok(value) => {
                    values.insert(Key::from(v.name.as_str()), value);
                }
                Err(e) => {
                    failed.insert(v.name.clone(), eval_error(&v.expression, &e));
                }
            }
        }
        ctx.add_variable_from_value("variables", Value::Map(Map::from(values)));

        let mut out = Vec::new();
        for v in &self.validations {
            match v.program.execute(ctx) {
                Ok(Value::Bool(true)) => {}
                Ok(_) => out.push((
                    v.reason.clone().unwrap_or_else(|| "Invalid".into()),
                    self.message(v, ctx),
                )),
                Err(e) if self.failure_policy == FailurePolicy::Fail => {
                    let mut msg = eval_error(&v.expression, &e);
                    if let ExecutionError::NoSuchKey(k) = &e
                        && let Some(why) = failed.get(k.as_str())
                    {
                        msg = format!("{msg} (variable '{k}': {why})");
                    }
                    out.push(("Invalid".into(), msg));
                }
                Err(_) => {}
            }
        }
        out
    }

    /// A failed validation's message: messageExpression if it gives a usable string, else
    /// message, else the expression (the API server's order of fallbacks).
    fn message(&self, v: &Validation, ctx: &Context) -> String {
        if let Some(Ok(Value::String(s))) = v.message_expression.as_ref().map(|p| p.execute(ctx)) {
            let s = s.trim();
            if !s.is_empty() && s.len() <= MAX_MESSAGE_BYTES && !s.contains('\n') {
                return s.to_string();
            }
        }
        match v.message.as_deref().map(str::trim) {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => format!("failed expression: {}", v.expression.trim()),
        }
    }

    /// A `Warn` action's warning, as the API server words it.
    pub fn warning(&self, message: &str) -> String {
        format!(
            "Validation failed for ValidatingAdmissionPolicy '{}' with binding '{}': {message}",
            self.name, self.binding
        )
    }

    /// The API server's denial of `req` by this policy with `reason` (empty: `Invalid`) and
    /// `message`.
    pub fn denial(&self, req: &Request, reason: String, message: &str) -> Denial {
        denial(&self.name, &self.binding, req, &reason, message)
    }
}

/// The API server's denial of `req` by `policy` with `binding`, with `reason` (empty:
/// `Invalid`) and `message`; also how a policy that cannot be compiled denies under
/// `failurePolicy: Fail`.
pub fn denial(policy: &str, binding: &str, req: &Request, reason: &str, message: &str) -> Denial {
    let reason = if reason.is_empty() { "Invalid" } else { reason }.to_string();
    let code = reason_code(&reason).unwrap_or(422);
    // admission.NewForbidden: the group/resource without subresource, and the request's
    // name, else the object's.
    let r = &req.resource;
    let resource = if r.group.is_empty() {
        r.resource.clone()
    } else {
        format!("{}.{}", r.resource, r.group)
    };
    let object_name = |field: &str| {
        req.object
            .as_ref()
            .and_then(|o| o["metadata"][field].as_str())
            .filter(|n| !n.is_empty())
    };
    let name = Some(req.name.as_str())
        .filter(|n| !n.is_empty())
        .or_else(|| object_name("name"))
        .or_else(|| object_name("generateName"))
        .unwrap_or("Unknown")
        .to_string();
    let cause = format!(
        "ValidatingAdmissionPolicy '{policy}' with binding '{binding}' denied request: {message}"
    );
    Denial {
        code,
        reason,
        message: format!("{resource} {name:?} is forbidden: {cause}"),
        name,
        cause,
    }
}

/// The HTTP code of a validation's `reason` (reasonToCode); `None` for one the API refuses.
fn reason_code(reason: &str) -> Option<u16> {
    match reason {
        "Forbidden" => Some(403),
        "Unauthorized" => Some(401),
        "RequestEntityTooLarge" => Some(413),
        "Invalid" => Some(422),
        _ => None,
    }
}

/// A ValidatingAdmissionPolicyBinding's fields.
struct Binding {
    name: String,
    policy_name: String,
    actions: Vec<Action>,
    match_resources: Option<MatchResources>,
}

fn parse_binding(binding: &Json) -> Result<Binding, LoadError> {
    let name = str_at(binding, "/metadata/name")?;
    let policy_name = str_at(binding, "/spec/policyName")?;
    if !binding["spec"]["paramRef"].is_null() {
        return Err(unsupported("binding spec.paramRef"));
    }
    let actions = items(&binding["spec"], "validationActions")
        .iter()
        .map(|a| match a.as_str() {
            Some("Deny") => Ok(Action::Deny),
            Some("Warn") => Ok(Action::Warn),
            Some("Audit") => Ok(Action::Audit),
            _ => Err(load_err(format!(
                "binding spec.validationActions: {a} is not one of Deny, Warn, Audit"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if actions.is_empty() {
        return Err(load_err(
            "binding spec.validationActions: empty; the API server requires at least one",
        ));
    }
    if actions.contains(&Action::Deny) && actions.contains(&Action::Warn) {
        return Err(load_err(
            "binding spec.validationActions: Deny and Warn together are refused by the API server (a denied request needs no warning)",
        ));
    }
    let match_resources = match &binding["spec"]["matchResources"] {
        Json::Null => None,
        m => Some(match_resources(m, "binding spec.matchResources")?),
    };
    Ok(Binding {
        name,
        policy_name,
        actions,
        match_resources,
    })
}

/// Checks a ValidatingAdmissionPolicy object as the sandbox's API refuses it on create and
/// update: every expression compiles and nothing unsupported is used.
pub fn validate_policy(policy: &Json) -> Result<(), LoadError> {
    let name = str_at(policy, "/metadata/name")?;
    let binding = json!({"metadata": {"name": "-"},
        "spec": {"policyName": name, "validationActions": ["Deny"]}});
    Policy::new(policy, &binding).map(|_| ())
}

/// Checks a ValidatingAdmissionPolicyBinding object the same way.
pub fn validate_binding(binding: &Json) -> Result<(), LoadError> {
    parse_binding(binding).map(|_| ())
}

fn match_resources(m: &Json, field: &str) -> Result<MatchResources, LoadError> {
    let rules = |list: &str| {
        items(m, list)
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let scope = r["scope"].as_str().unwrap_or("*").to_string();
                if !["*", "Cluster", "Namespaced"].contains(&scope.as_str()) {
                    return Err(load_err(format!(
                        "{field}.{list}[{i}].scope: {scope:?} is not one of \"*\", \"Cluster\", \"Namespaced\""
                    )));
                }
                Ok(Rule {
                    scope,
                    operations: strings(r, "operations"),
                    api_groups: strings(r, "apiGroups"),
                    api_versions: strings(r, "apiVersions"),
                    resources: strings(r, "resources"),
                    resource_names: strings(r, "resourceNames"),
                })
            })
            .collect::<Result<Vec<_>, LoadError>>()
    };
    Ok(MatchResources {
        rules: rules("resourceRules")?,
        exclude: rules("excludeResourceRules")?,
        namespace_selector: selector(
            &m["namespaceSelector"],
            &format!("{field}.namespaceSelector"),
        )?,
        object_selector: selector(&m["objectSelector"], &format!("{field}.objectSelector"))?,
    })
}

fn selector(v: &Json, field: &str) -> Result<Option<Selector>, LoadError> {
    if v.is_null() {
        return Ok(None);
    }
    let Some(fields) = v.as_object() else {
        return Err(load_err(format!(
            "{field}: must be a label selector object"
        )));
    };
    if let Some(k) = fields
        .keys()
        .find(|k| !["matchLabels", "matchExpressions"].contains(&k.as_str()))
    {
        return Err(load_err(format!(
            "{field}: unknown field {k:?}; a label selector has matchLabels and matchExpressions"
        )));
    }
    let mut match_labels = Vec::new();
    if let Some(labels) = v.get("matchLabels").filter(|l| !l.is_null()) {
        let labels = labels
            .as_object()
            .ok_or_else(|| load_err(format!("{field}.matchLabels: must be a map of strings")))?;
        for (k, val) in labels {
            let val = val
                .as_str()
                .ok_or_else(|| load_err(format!("{field}.matchLabels.{k}: must be a string")))?;
            match_labels.push((k.clone(), val.to_string()));
        }
    }
    let mut expressions = Vec::new();
    for (i, e) in items(v, "matchExpressions").iter().enumerate() {
        let at = format!("{field}.matchExpressions[{i}]");
        let key = str_at(e, "/key").map_err(|_| load_err(format!("{at}.key: missing")))?;
        let op = match e["operator"].as_str() {
            Some("In") => SelectorOp::In,
            Some("NotIn") => SelectorOp::NotIn,
            Some("Exists") => SelectorOp::Exists,
            Some("DoesNotExist") => SelectorOp::DoesNotExist,
            other => {
                return Err(load_err(format!(
                    "{at}.operator: {:?} is not one of In, NotIn, Exists, DoesNotExist",
                    other.unwrap_or("")
                )));
            }
        };
        let values = strings(e, "values");
        let needs_values = matches!(op, SelectorOp::In | SelectorOp::NotIn);
        if needs_values == values.is_empty() {
            return Err(load_err(format!(
                "{at}.values: {}",
                if needs_values {
                    "must be non-empty for In and NotIn"
                } else {
                    "must be empty for Exists and DoesNotExist"
                }
            )));
        }
        expressions.push((key, op, values));
    }
    if match_labels.is_empty() && expressions.is_empty() {
        return Ok(None);
    }
    Ok(Some(Selector {
        match_labels,
        expressions,
    }))
}

impl Selector {
    fn matches(&self, labels: Option<&serde_json::Map<String, Json>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Json::as_str);
        self.match_labels.iter().all(|(k, v)| get(k) == Some(v))
            && self.expressions.iter().all(|(k, op, values)| {
                let have = get(k);
                match op {
                    SelectorOp::In => have.is_some_and(|h| values.iter().any(|v| v == h)),
                    SelectorOp::NotIn => have.is_none_or(|h| !values.iter().any(|v| v == h)),
                    SelectorOp::Exists => have.is_some(),
                    SelectorOp::DoesNotExist => have.is_none(),
                }
            })
    }
}

fn labels_of(o: Option<&Json>) -> Option<&serde_json::Map<String, Json>> {
    o.and_then(|o| o.pointer("/metadata/labels"))
        .and_then(Json::as_object)
}

impl MatchResources {
    /// Not excluded, and matched by a rule (no rules: every request, as in a binding), and by
    /// both selectors.
    fn matches(&self, req: &Request) -> bool {
        !self.exclude.iter().any(|r| r.matches(req))
            && (self.rules.is_empty() || self.rules.iter().any(|r| r.matches(req)))
            && self
                .namespace_selector
                .as_ref()
                .is_none_or(|s| namespace_matches(s, req))
            && self.object_selector.as_ref().is_none_or(|s| {
                // The object after the request or the one before it.
                s.matches(labels_of(req.object.as_ref()))
                    || (req.old_object.is_some() && s.matches(labels_of(req.old_object.as_ref())))
            })
    }

    fn uses_objects(&self) -> bool {
        self.namespace_selector.is_some() || self.object_selector.is_some()
    }
}

/// The API server's namespace matcher: a cluster-scoped request (other than for a Namespace)
/// always matches; a Namespace is matched by its own labels (the new ones on create and
/// update); anything else by its namespace's.
fn namespace_matches(s: &Selector, req: &Request) -> bool {
    let r = &req.resource;
    if r.group.is_empty() && r.resource == "namespaces" {
        let own = match req.operation.as_str() {
            "CREATE" | "UPDATE" if r.sub_resource.is_empty() => req.object.as_ref(),
            _ => req.old_object.as_ref(),
        };
        return s.matches(labels_of(own));
    }
    if req.namespace.is_empty() {
        return true;
    }
    s.matches(labels_of(req.namespace_object.as_ref()))
}

impl Rule {
    fn matches(&self, req: &Request) -> bool {
        let any = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
        let r = &req.resource;
        let scoped = match self.scope.as_str() {
            "Cluster" => req.namespace.is_empty(),
            "Namespaced" => !req.namespace.is_empty(),
            _ => true,
        };
        scoped
            && any(&self.operations, &req.operation)
            && any(&self.api_groups, &r.group)
            && any(&self.api_versions, &r.version)
            && self.resources.iter().any(|spec| {
                let (res, sub) = spec.split_once('/').unwrap_or((spec, ""));
                (res == "*" || res == r.resource) && (sub == "*" || sub == r.sub_resource)
            })
            && (self.resource_names.is_empty() || self.resource_names.contains(&req.name))
    }
}

/// The API server's wording of an expression's evaluation error.
fn eval_error(expression: &str, e: &ExecutionError) -> String {
    format!("expression '{expression}' resulted in error: {e}")
}

fn unsupported(field: &str) -> LoadError {
    load_err(format!(
        "{field}: not supported by this evaluator (see the admission crate's docs); leave it out"
    ))
}

fn str_at(v: &Json, pointer: &str) -> Result<String, LoadError> {
    v.pointer(pointer)
        .and_then(Json::as_str)
        .map(str::to_string)
        .ok_or_else(|| load_err(format!("{}: missing", pointer[1..].replace('/', "."))))
}

fn items<'a>(v: &'a Json, field: &str) -> &'a [Json] {
    v[field].as_array().map_or(&[], Vec::as_slice)
}

fn strings(v: &Json, field: &str) -> Vec<String> {
    items(v, field)
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// JSON as the API server's CEL sees an unstructured object: integers are `int`.
pub fn to_cel(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(Arc::new(s.clone())),
        Json::Array(a) => Value::List(Arc::new(a.iter().map(to_cel).collect())),
        Json::Object(o) => Value::Map(Map::from(
            o.iter()
                .map(|(k, v)| (Key::from(k.as_str()), to_cel(v)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}
