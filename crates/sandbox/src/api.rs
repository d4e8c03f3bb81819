//! The HTTP front of the sandbox: discovery, CRUD, patch, watch and eviction with the semantics
//! (status codes, Status bodies, resourceVersions) of kube-apiserver.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::authz::{self, Attributes, ResourceAttributes};
use crate::error::{ApiError, ApiResult};
use crate::events::view;
use crate::faults::{Faults, Injected};
use crate::identity::{self, UserInfo};
use crate::resources::{self, RESOURCES, Resource};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{EventType, Store, WatchEvent, meta, now_rfc3339};
use crate::{eviction, reviews, strategic, table};

pub struct ApiState {
    pub store: Store,
    pub faults: Faults,
    pub bookmark_interval: Duration,
    pub audit: crate::audit::Audit,
    pub admission: crate::admission::Policies,
    pub tokens: crate::identity::Tokens,
    pub authz: crate::authz::Mode,
}

pub type Shared = Arc<ApiState>;

pub fn router(state: Shared) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(state)
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn handle(
    State(st): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_end_matches('/').to_string();
    let query: HashMap<String, String> = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let user = match request_user(&st, &headers) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    if let Some(r) = discovery(&path) {
        let attrs = Attributes {
            verb: method.as_str().to_ascii_lowercase(),
            resource: None,
            path: uri.path().to_string(),
        };
        if !authz::allowed(st.authz, &st.store, &user, &attrs) {
            return authz::forbidden(&user, &attrs).into_response();
        }
        match r {
            Ok(v) if method == Method::GET => return json_response(StatusCode::OK, &v),
            Ok(_) => return ApiError::method_not_allowed().into_response(),
            Err(e) => return e.into_response(),
        }
    }
    if let Some((group, plural, kind)) = reviews::route(&path) {
        if method != Method::POST {
            return ApiError::method_not_allowed().into_response();
        }
        let attrs = Attributes {
            verb: "create".into(),
            resource: Some(ResourceAttributes {
                group: group.into(),
                resource: plural.into(),
                ..Default::default()
            }),
            path: String::new(),
        };
        if !authz::allowed(st.authz, &st.store, &user, &attrs) {
            return authz::forbidden(&user, &attrs).into_response();
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return match reviews::create(&st, &user, kind, content_type, &body) {
            Ok((code, v)) => json_response(code, &v),
            Err(e) => e.into_response(),
        };
    }
    let mut req = match parse_path(&path) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    req.user = user;
    let verb = verb_of(&method, &req, &query);
    st.audit.record(
        &req.user,
        verb,
        &req,
        query.get("fieldManager").map_or("", String::as_str),
    );
    let mut attrs = req.attributes(verb);
    if let (Some(r), "list" | "watch") = (attrs.resource.as_mut(), verb) {
        // As kube-apiserver's RequestInfo: a list or watch of one name (fieldSelector
        // metadata.name=X) is authorized as that name, so resourceNames can allow it.
        if let Some(name) = query
            .get("fieldSelector")
            .and_then(|f| authz::exact_name(f))
        {
            r.name = name;
        }
    }
    if !authz::allowed(st.authz, &st.store, &req.user, &attrs) {
        let e = authz::forbidden(&req.user, &attrs);
        tracing::debug!(message = %e.message, "sandbox: forbidden");
        st.faults.count_forbidden();
        return e.into_response();
    }
    let res_name = match &req.sub {
        Some(s) => format!("{}/{s}", req.res.plural),
        None => req.res.plural.to_string(),
    };
    let node = req
        .user
        .extra
        .get(identity::NODE_NAME_EXTRA)
        .and_then(|n| n.first())
        .map_or("", String::as_str);
    if let Some((until, applied)) = st.faults.partitioned(node) {
        let streams = verb == "watch" || req.sub.as_deref() == Some("log");
        if applied && !streams {
            let _ = crate::admission::collect_warnings(|| {
                handle_verb(&st, verb, &req, &headers, &body, &query)
            });
        }
        tokio::time::sleep_until(until.into()).await;
        return ApiError::new(
            504,
            "Timeout",
            "Timeout: request did not complete within the allowed duration (injected partition)",
        )
        .into_response();
    }
    let (delay, injected) = st.faults.for_request(verb, &res_name);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Injected::Error(e) = injected {
        return e.into_response();
    }
    if req.sub.as_deref() == Some("log") {
        return crate::logs::handle(&st, verb, &req, &query);
    }
    if verb == "watch" {
        return watch(st.clone(), req, query, &headers);
    }
    let (result, warnings) = crate::admission::collect_warnings(|| {
        handle_verb(&st, verb, &req, &headers, &body, &query)
    });
    let mut resp = respond(&headers, result);
    crate::admission::add_warning_headers(&mut resp, &warnings);
    resp
}

fn handle_verb(
    st: &ApiState,
    verb: &str,
    req: &Req,
    headers: &HeaderMap,
    body: &Bytes,
    query: &HashMap<String, String>,
) -> ApiResult<(StatusCode, Value)> {
    match verb {
        _ if req.sub.as_deref() == Some("scale") => {
            crate::scale::handle(st, verb, req, headers, body, query)
        }
        "get" => get(st, req, headers, query),
        "list" => list(st, req, headers, query),
        "create" => create(st, req, headers, body, query),
        "update" => update(st, req, headers, body, query),
        "patch" => patch(st, req, headers, body, query),
        "delete" => delete(st, req, body, query),
        "deletecollection" => delete_collection(st, req, query),
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// The ValidatingAdmissionPolicy check of a write (crate::admission); every handler that
/// stores or deletes calls it before the store does.
pub(crate) fn admit(
    st: &ApiState,
    store: &crate::store::Inner,
    operation: &'static str,
    req: &Req,
    object: Option<&Value>,
    old_object: Option<&Value>,
    q: &HashMap<String, String>,
) -> ApiResult<()> {
    let name = req
        .name
        .as_deref()
        .or_else(|| object.and_then(|o| meta(o, "name")))
        .unwrap_or("");
    st.admission.admit(
        store,
        &crate::admission::Write {
            operation,
            req,
            name,
            object,
            old_object,
            dry_run: q.contains_key("dryRun"),
        },
    )
}

/// The body in the media type the client asked for (see [`crate::protobuf::wanted`]).
fn respond(headers: &HeaderMap, result: ApiResult<(StatusCode, Value)>) -> Response {
    use crate::protobuf::{Wanted, wanted};
    let accept = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok());
    let (code, v) = match (wanted(accept), result) {
        (Wanted::Json, Ok((code, v))) => return json_response(code, &v),
        (Wanted::Json, Err(e)) => return e.into_response(),
        (Wanted::Neither, _) => return crate::protobuf::not_acceptable().into_response(),
        (Wanted::Protobuf, Ok(ok)) => ok,
        (Wanted::Protobuf, Err(e)) => (
            StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.status(),
        ),
    };
    match crate::protobuf::encode(&v) {
        Some(Ok(body)) => (
            code,
            [(header::CONTENT_TYPE, crate::protobuf::MEDIA_TYPE)],
            body,
        )
            .into_response(),
        Some(Err(e)) => ApiError::internal(format!("encoding as protobuf: {e}")).into_response(),
        // Custom resources have no protobuf form; kube-apiserver refuses the Accept.
        None => crate::protobuf::not_acceptable().into_response(),
    }
}

#[derive(Debug, Clone)]
pub struct Req {
    pub res: &'static Resource,
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
    /// Who sent the request, after authentication and impersonation.
    pub user: UserInfo,
}

impl Req {
    pub fn attributes(&self, verb: &str) -> Attributes {
        Attributes {
            verb: verb.to_string(),
            resource: Some(ResourceAttributes {
                group: self.res.group.to_string(),
                resource: self.res.plural.to_string(),
                subresource: self.sub.clone().unwrap_or_default(),
                namespace: self.ns.clone().unwrap_or_default(),
                name: self.name.clone().unwrap_or_default(),
            }),
            path: String::new(),
        }
    }
}

/// The requester: its token's identity, or whom it impersonates once every piece of the
/// impersonation is authorized (verb `impersonate`, as kube-apiserver checks it).
fn request_user(st: &ApiState, headers: &HeaderMap) -> ApiResult<UserInfo> {
    let user = identity::authenticate(&st.tokens, headers)?;
    let Some(imp) = identity::Impersonation::from_headers(headers)? else {
        return Ok(user);
    };
    let mut checks = Vec::new();
    let target = imp.user.clone().unwrap_or_default();
    let sa = target
        .strip_prefix("system:serviceaccount:")
        .and_then(|s| s.split_once(':'));
    checks.push(match sa {
        Some((ns, name)) => ("", "serviceaccounts", "", ns, name.to_string()),
        None => ("", "users", "", "", target.clone()),
    });
    for g in &imp.groups {
        checks.push(("", "groups", "", "", g.clone()));
    }
    if let Some(uid) = &imp.uid {
        checks.push(("authentication.k8s.io", "uids", "", "", uid.clone()));
    }
    for (k, vs) in &imp.extra {
        for v in vs {
            checks.push(("authentication.k8s.io", "userextras", k, "", v.clone()));
        }
    }
    for (group, resource, sub, ns, name) in checks {
        let attrs = Attributes {
            verb: "impersonate".into(),
            resource: Some(ResourceAttributes {
                group: group.into(),
                resource: resource.into(),
                subresource: sub.to_string(),
                namespace: ns.into(),
                name,
            }),
            path: String::new(),
        };
        if !authz::allowed(st.authz, &st.store, &user, &attrs) {
            return Err(authz::forbidden(&user, &attrs));
        }
    }
    Ok(imp.user())
}

fn verb_of(method: &Method, req: &Req, q: &HashMap<String, String>) -> &'static str {
    let watching = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    match (method, req.name.is_some()) {
        (&Method::GET, _) if watching => "watch",
        (&Method::GET, true) => "get",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => "unsupported",
    }
}

fn parse_path(path: &str) -> ApiResult<Req> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_such_resource()),
    };
    let find = |plural: &str| {
        resources::find(group, version, plural).ok_or_else(ApiError::no_such_resource)
    };
    let namespaced =
        |plural: &str| resources::find(group, version, plural).is_some_and(|r| r.namespaced);
    let req =
        |res: &'static Resource, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| Req {
            res,
            ns: ns.map(str::to_string),
            name: name.map(str::to_string),
            sub: sub.map(str::to_string),
            user: UserInfo::default(),
        };
    let r = match rest {
        [p] => req(find(p)?, None, None, None),
        ["namespaces", ns, p] if namespaced(p) => req(find(p)?, Some(ns), None, None),
        ["namespaces", ns, p, n] if namespaced(p) => req(find(p)?, Some(ns), Some(n), None),
        ["namespaces", ns, p, n, s] if namespaced(p) => req(find(p)?, Some(ns), Some(n), Some(s)),
        [p, n] => req(find(p)?, None, Some(n), None),
        [p, n, s] => req(find(p)?, None, Some(n), Some(s)),
        _ => return Err(ApiError::no_such_resource()),
    };
    if r.res.namespaced && r.name.is_some() && r.ns.is_none() {
        return Err(ApiError::no_such_resource());
    }
    if !r.res.namespaced && r.ns.is_some() {
        return Err(ApiError::no_such_resource());
    }
    if let Some(s) = &r.sub {
        let ok = (s == "status" && r.res.has_status)
            || (matches!(s.as_str(), "eviction" | "log") && r.res.kind == "Pod")
            || (s == "scale" && crate::scale::has_scale(r.res));
        if !ok {
            return Err(ApiError::no_such_resource());
        }
    }
    Ok(r)
}

fn discovery(path: &str) -> Option<ApiResult<Value>> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let v = match segs.as_slice() {
        ["version"] => json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-sandbox", "gitCommit": "sandbox",
            "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
            "compiler": "gc", "platform": "linux/amd64"
        }),
        ["healthz"] | ["readyz"] | ["livez"] => json!("ok"),
        ["api"] => json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]
        }),
        ["apis"] => json!({
            "kind": "APIGroupList", "apiVersion": "v1",
            "groups": resources::groups().iter().chain(reviews::GROUPS).map(|(g, v)| group_json(g, v)).collect::<Vec<_>>()
        }),
        ["apis", g] => match resources::groups()
            .iter()
            .chain(reviews::GROUPS)
            .find(|(gg, _)| gg == g)
        {
            Some((g, v)) => {
                let mut j = group_json(g, v);
                j["kind"] = json!("APIGroup");
                j["apiVersion"] = json!("v1");
                j
            }
            None => return Some(Err(ApiError::no_such_resource())),
        },
        ["api", "v1"] => resource_list("", "v1"),
        ["apis", g, v] if reviews::GROUPS.contains(&(*g, *v)) => reviews::resource_list(g, v)?,
        ["apis", g, v] => {
            if !resources::groups().contains(&(*g, *v)) {
                return Some(Err(ApiError::no_such_resource()));
            }
            resource_list(g, v)
        }
        ["openapi", "v3"] => {
            let mut paths = serde_json::Map::new();
            paths.insert(
                "api/v1".into(),
                json!({"serverRelativeURL": format!("/openapi/v3/api/v1?hash={}", crate::openapi::hash("", "v1"))}),
            );
            for (g, v) in resources::groups() {
                paths.insert(
                    format!("apis/{g}/{v}"),
                    json!({"serverRelativeURL": format!("/openapi/v3/apis/{g}/{v}?hash={}", crate::openapi::hash(g, v))}),
                );
            }
            json!({"paths": paths})
        }
        ["openapi", "v3", "api", "v1"] => openapi_v3("", "v1"),
        ["openapi", "v3", "apis", g, v] if resources::groups().contains(&(*g, *v)) => {
            openapi_v3(g, v)
        }
        ["openapi", ..] => return Some(Err(ApiError::no_such_resource())),
        _ => return None,
    };
    Some(Ok(v))
}

/// The OpenAPI v3 document of one group-version: the served kinds' schemas (for `kubectl
/// explain`), and write operations that declare the `fieldValidation` parameter, which is what
/// kubectl checks before `apply`.
fn openapi_v3(group: &str, version: &str) -> Value {
    let mut paths = serde_json::Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let scope = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{prefix}/{}", r.plural)
        };
        let gvk = json!({"group": group, "version": version, "kind": r.kind});
        let param = json!([{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}}]);
        let op = |verb: &str| json!({"operationId": format!("{verb}{}", r.kind), "parameters": param, "x-kubernetes-action": verb, "x-kubernetes-group-version-kind": gvk, "responses": {"200": {"description": "OK"}}});
        paths.insert(scope.clone(), json!({"post": op("post")}));
        paths.insert(
            format!("{scope}/{{name}}"),
            json!({"put": op("put"), "patch": op("patch")}),
        );
    }
    json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": paths, "components": {"schemas": crate::openapi::schemas(group, version)}})
}

fn group_json(g: &str, v: &str) -> Value {
    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut out = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        out.push(json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
            "verbs": resources::VERBS, "shortNames": r.short_names,
        }));
        if r.has_status {
            out.push(json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}));
        }
        if crate::scale::has_scale(r) {
            out.push(json!({"name": format!("{}/scale", r.plural), "singularName": "", "namespaced": r.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
        if r.kind == "Pod" {
            out.push(json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}));
            out.push(json!({"name": "pods/eviction", "singularName": "", "namespaced": true, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out})
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

fn ns_or_empty(req: &Req) -> &str {
    req.ns.as_deref().unwrap_or("")
}

fn get(
    st: &ApiState,
    req: &Req,
    headers: &HeaderMap,
    _q: &HashMap<String, String>,
) -> ApiResult<(StatusCode, Value)> {
    let name = req.name.as_deref().unwrap_or("");
    let obj = st
        .store
        .lock()
        .get(req.res, ns_or_empty(req), name)
        .ok_or_else(|| ApiError::not_found(req.res.group, req.res.plural, name))?;
    if wants_table(headers) && req.sub.is_none() {
        let rv = meta(&obj, "resourceVersion").unwrap_or("").to_string();
        return Ok((
            StatusCode::OK,
            table::to_table(req.res.kind, &[view(req.res, &obj).into_owned()], &rv, None),
        ));
    }
    Ok((StatusCode::OK, view(req.res, &obj).into_owned()))
}

pub struct Filter {
    pub labels: LabelSelector,
    pub fields: Option<FieldSelector>,
}

impl Filter {
    pub fn from_query(q: &HashMap<String, String>) -> ApiResult<Filter> {
        let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let fields = match q.get("fieldSelector").filter(|s| !s.is_empty()) {
            Some(s) => Some(FieldSelector::parse(s).map_err(ApiError::bad_request)?),
            None => None,
        };
        Ok(Filter { labels, fields })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels
            .matches(obj.pointer("/metadata/labels").and_then(Value::as_object))
            && self.fields.as_ref().is_none_or(|f| f.matches(obj))
    }
}

/// The list's resourceVersion and the last key it returned, as kube-apiserver's token
/// carries the resourceVersion it was listed at: a token from before a compaction is 410.
fn encode_continue(rv: &str, ns: &str, name: &str) -> String {
    format!("{rv}|{ns}/{name}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(tok: &str) -> ApiResult<(u64, (String, String))> {
    let bad = || ApiError::bad_request(format!("invalid continue token {tok:?}"));
    if !tok.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Result<Vec<u8>, _> = (0..tok.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&tok[i..i + 2], 16))
        .collect();
    let s = String::from_utf8(bytes.map_err(|_| bad())?).map_err(|_| bad())?;
    let (rv, key) = s.split_once('|').ok_or_else(bad)?;
    let rv = rv.parse().map_err(|_| bad())?;
    let (ns, name) = key.split_once('/').ok_or_else(bad)?;
    Ok((rv, (ns.to_string(), name.to_string())))
}

fn list(
    st: &ApiState,
    req: &Req,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> ApiResult<(StatusCode, Value)> {
    let filter = Filter::from_query(q)?;
    let limit: usize = match q.get("limit") {
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        None => 0,
    };
    let after = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(c) => Some(decode_continue(c)?),
        None => None,
    };
    let store = st.store.lock();
    let after = match after {
        Some((rv, _)) if rv < store.compacted_rv(req.res) => {
            return Err(ApiError::gone(
                "The provided continue parameter is too old to display a consistent list \
                 result. You can start a new list without the continue parameter.",
            ));
        }
        Some((_, key)) => Some(key),
        None => None,
    };
    let rv = store.current_rv().to_string();
    let mut items = Vec::new();
    let mut next = None;
    let mut remaining = 0usize;
    for (key, obj) in store.iter(req.res, req.ns.as_deref()) {
        if after.as_ref().is_some_and(|a| key <= a) || !filter.matches(obj) {
            continue;
        }
        if limit > 0 && items.len() == limit {
            if next.is_none() {
                let last: &Value = items.last().expect("limit > 0");
                next = Some(encode_continue(
                    &rv,
                    meta(last, "namespace").unwrap_or(""),
                    meta(last, "name").unwrap_or(""),
                ));
            }
            remaining += 1;
            continue;
        }
        items.push(view(req.res, obj).into_owned());
    }
    drop(store);
    if wants_table(headers) {
        return Ok((
            StatusCode::OK,
            table::to_table(req.res.kind, &items, &rv, next.as_deref()),
        ));
    }
    let mut md = json!({"resourceVersion": rv});
    if let Some(n) = next {
        md["continue"] = json!(n);
        md["remainingItemCount"] = json!(remaining);
    }
    Ok((
        StatusCode::OK,
        json!({"kind": format!("{}List", req.res.kind), "apiVersion": req.res.api_version(), "metadata": md, "items": items}),
    ))
}

pub(crate) fn body_json(headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or("application/json");
    let mime = ct.split(';').next().unwrap_or("").trim();
    let v: Value = match mime {
        "application/json" | "" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON in request body: {e}")))?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid YAML in request body: {e}")))?,
        crate::protobuf::MEDIA_TYPE => crate::protobuf::decode(body)?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(v)
}

fn check_type(req: &Req, v: &Value) -> ApiResult<()> {
    let kind = v
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or(req.res.kind);
    let api_version = v
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| req.res.api_version());
    if kind != req.res.kind || api_version != req.res.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({}) or the kind ({kind}) is not {}",
            req.res.api_version(),
            req.res.kind
        )));
    }
    Ok(())
}

fn create(
    st: &ApiState,
    req: &Req,
    headers: &HeaderMap,
    body: &Bytes,
    q: &HashMap<String, String>,
) -> ApiResult<(StatusCode, Value)> {
    if req.sub.as_deref() == Some("eviction") {
        let v = body_json(headers, body)?;
        admit(st, &st.store.lock(), "CREATE", req, Some(&v), None, q)?;
        return eviction::evict(
            &st.store,
            req.ns.as_deref().unwrap_or(""),
            req.name.as_deref().unwrap_or(""),
            &v,
        );
    }
    if req.name.is_some() {
        return Err(ApiError::method_not_allowed());
    }
    let mut v = body_json(headers, body)?;
    check_type(req, &v)?;
    prepare_metadata(req, &mut v)?;
    defaults(req.res, &mut v);
    let mut store = st.store.lock();
    admit(st, &store, "CREATE", req, Some(&v), None, q)?;
    if q.contains_key("dryRun") {
        return Ok((StatusCode::CREATED, v));
    }
    let obj = store.create(req.res, v)?;
    Ok((StatusCode::CREATED, view(req.res, &obj).into_owned()))
}

fn prepare_metadata(req: &Req, v: &mut Value) -> ApiResult<()> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    if let Some(ns) = &req.ns {
        match meta(v, "namespace") {
            Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => v["metadata"]["namespace"] = json!(ns),
        }
    }
    if let Some(name) = &req.name
        && let Some(body_name) = meta(v, "name")
        && body_name != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    Ok(())
}

/// Defaults the real API server fills in that our controllers and clients rely on.
fn defaults(r: &Resource, v: &mut Value) {
    if r.kind == "Pod" {
        if v.pointer("/spec/terminationGracePeriodSeconds").is_none()
            && v.get("spec").is_some_and(Value::is_object)
        {
            v["spec"]["terminationGracePeriodSeconds"] = json!(30);
        }
        if v.pointer("/status/phase").is_none() {
            v["status"] = json!({"phase": "Pending"});
        }
    }
}

fn update(
    st: &ApiState,
    req: &Req,
    headers: &HeaderMap,
    body: &Bytes,
    q: &HashMap<String, String>,
) -> ApiResult<(StatusCode, Value)> {
    let mut v = body_json(headers, body)?;
    check_type(req, &v)?;
    prepare_metadata(req, &mut v)?;
    let name = req.name.as_deref().unwrap_or("");
    let mut store = st.store.lock();
    let old = store
        .get(req.res, ns_or_empty(req), name)
        .ok_or_else(|| ApiError::not_found(req.res.group, req.res.plural, name))?;
    keep_other_half(req, &old, &mut v);
    admit(
        st,
        &store,
        "UPDATE",
        req,
        Some(&v),
        Some(&view(req.res, &old)),
        q,
    )?;
    let obj = store.replace(req.res, ns_or_empty(req), name, v)?;
    Ok((StatusCode::OK, view(req.res, &obj).into_owned()))
}

/// Writes to the main resource cannot change `.status`; writes to `/status` change only it.
fn keep_other_half(req: &Req, old: &Value, new: &mut Value) {
    if !req.res.has_status {
        return;
    }
    if req.sub.as_deref() == Some("status") {
        let status = new.get("status").cloned();
        let rv = meta(new, "resourceVersion").map(str::to_string);
        *new = old.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
        match rv {
            Some(rv) => new["metadata"]["resourceVersion"] = json!(rv),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
            }
        }
    } else {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
}

fn patch(
    st: &ApiState,
    req: &Req,
    headers: &HeaderMap,
    body: &Bytes,
    q: &HashMap<String, String>,
) -> ApiResult<(StatusCode, Value)> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_string();
    let name = req.name.as_deref().unwrap_or("").to_string();
    let ns = ns_or_empty(req).to_string();
    let parse_json = || -> ApiResult<Value> {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON in patch body: {e}")))
    };
    let mut store = st.store.lock();
    let old = store.get(req.res, &ns, &name);
    let mut new = match mime.as_str() {
        "application/apply-patch+yaml" => {
            let p: Value = serde_yaml::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid YAML in apply patch: {e}")))?;
            if !p.is_object() {
                return Err(ApiError::bad_request("the apply patch must be an object"));
            }
            if !q.contains_key("fieldManager") {
                return Err(ApiError::bad_request(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                ));
            }
            check_type(req, &p)?;
            match &old {
                None => {
                    let mut v = p;
                    prepare_metadata(req, &mut v)?;
                    defaults(req.res, &mut v);
                    if let Some(m) = v["metadata"].as_object_mut() {
                        m.remove("resourceVersion");
                    }
                    admit(st, &store, "CREATE", req, Some(&v), None, q)?;
                    let obj = store.create(req.res, v)?;
                    return Ok((StatusCode::CREATED, view(req.res, &obj).into_owned()));
                }
                Some(o) => {
                    let mut v = view(req.res, o).into_owned();
                    strategic::apply(&mut v, &p).map_err(ApiError::bad_request)?;
                    v
                }
            }
        }
        "application/merge-patch+json"
        | "application/json-patch+json"
        | "application/strategic-merge-patch+json" => {
            let o = old
                .as_ref()
                .ok_or_else(|| ApiError::not_found(req.res.group, req.res.plural, &name))?;
            let p = parse_json()?;
            let mut v = view(req.res, o).into_owned();
            match mime.as_str() {
                "application/merge-patch+json" => {
                    if !p.is_object() {
                        return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                    }
                    json_patch::merge(&mut v, &p);
                }
                "application/json-patch+json" => {
                    let ops: json_patch::Patch = serde_json::from_value(p)
                        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                    json_patch::patch(&mut v, &ops).map_err(|e| {
                        ApiError::invalid(
                            req.res.kind,
                            &name,
                            format!("the JSON patch could not be applied: {e}"),
                        )
                    })?;
                }
                _ => {
                    if !p.is_object() {
                        return Err(ApiError::bad_request(
                            "a strategic merge patch must be a JSON object",
                        ));
                    }
                    strategic::apply(&mut v, &p).map_err(ApiError::bad_request)?;
                }
            }
            v
        }
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {other:?}"
                ),
            ));
        }
    };
    let old = old.ok_or_else(|| ApiError::not_found(req.res.group, req.res.plural, &name))?;
    if meta(&new, "name") != Some(name.as_str()) {
        return Err(ApiError::bad_request(
            "the patch must not change metadata.name",
        ));
    }
    keep_other_half(req, &old, &mut new);
    admit(
        st,
        &store,
        "UPDATE",
        req,
        Some(&new),
        Some(&view(req.res, &old)),
        q,
    )?;
    if q.contains_key("dryRun") {
        return Ok((StatusCode::OK, new));
    }
    let obj = store.replace(req.res, &ns, &name, new)?;
    Ok((StatusCode::OK, view(req.res, &obj).into_owned()))
}

fn delete_options(body: &Bytes, q: &HashMap<String, String>) -> ApiResult<(Option<i64>, Value)> {
    let opts: Value = if body.is_empty() {
        json!({})
    } else if body.starts_with(b"k8s\0") {
        // A protobuf DeleteOptions: its magic cannot begin a JSON document.
        crate::protobuf::decode(body)?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let grace = match q.get("gracePeriodSeconds") {
        Some(g) => Some(
            g.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?,
        ),
        None => opts.get("gracePeriodSeconds").and_then(Value::as_i64),
    };
    Ok((grace, opts))
}

fn delete(
    st: &ApiState,
    req: &Req,
    body: &Bytes,
    q: &HashMap<String, String>,
) -> ApiResult<(StatusCode, Value)> {
    let (grace, opts) = delete_options(body, q)?;
    let name = req.name.as_deref().unwrap_or("");
    let mut store = st.store.lock();
    let obj = store
        .get(req.res, ns_or_empty(req), name)
        .ok_or_else(|| ApiError::not_found(req.res.group, req.res.plural, name))?;
    if let Some(pre) = opts.get("preconditions") {
        let uid_bad = pre
            .get("uid")
            .and_then(Value::as_str)
            .is_some_and(|u| Some(u) != meta(&obj, "uid"));
        let rv_bad = pre
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|r| Some(r) != meta(&obj, "resourceVersion"));
        if uid_bad || rv_bad {
            return Err(ApiError::conflict(req.res.group, req.res.plural, name));
        }
    }
    admit(
        st,
        &store,
        "DELETE",
        req,
        None,
        Some(&view(req.res, &obj)),
        q,
    )?;
    let gone = delete_object(&mut store, req.res, ns_or_empty(req), name, grace)?;
    Ok((StatusCode::OK, view(req.res, &gone).into_owned()))
}

/// Deletes as the real server does: a pod bound to a node keeps a deletionTimestamp until its
/// grace period ends (the simulated kubelet then removes it); an object with finalizers waits
/// for them; a namespace takes its contents with it; everything else goes at once.
pub fn delete_object(
    store: &mut crate::store::Inner,
    r: &Resource,
    ns: &str,
    name: &str,
    grace: Option<i64>,
) -> ApiResult<Arc<Value>> {
    let obj = store
        .get(r, ns, name)
        .ok_or_else(|| ApiError::not_found(r.group, r.plural, name))?;
    if r.kind == "Pod" {
        let bound = obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let finished = matches!(
            obj.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        );
        let grace = grace
            .or_else(|| {
                obj.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
            .max(0);
        if bound && !finished && grace > 0 {
            if let Some(existing) = obj
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                && existing <= grace
            {
                return Ok(obj);
            }
            let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
            return store.modify(r, ns, name, |v| {
                v["metadata"]["deletionTimestamp"] =
                    json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                v["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                Ok(())
            });
        }
        return store.remove(r, ns, name);
    }
    if r.kind == "Namespace" {
        for other in RESOURCES.iter().filter(|o| o.namespaced) {
            let names: Vec<String> = store
                .iter(other, Some(name))
                .map(|((_, n), _)| n.clone())
                .collect();
            for n in names {
                let _ = store.remove(other, name, &n);
            }
        }
        return store.remove(r, ns, name);
    }
    if obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
    {
        if obj.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(obj);
        }
        return store.modify(r, ns, name, |v| {
            v["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            Ok(())
        });
    }
    store.remove(r, ns, name)
}

fn delete_collection(
    st: &ApiState,
    req: &Req,
    q: &HashMap<String, String>,
) -> ApiResult<(StatusCode, Value)> {
    let filter = Filter::from_query(q)?;
    let grace = q.get("gracePeriodSeconds").and_then(|g| g.parse().ok());
    let mut store = st.store.lock();
    let keys: Vec<(String, String)> = store
        .iter(req.res, req.ns.as_deref())
        .filter(|(_, o)| filter.matches(o))
        .map(|(k, _)| k.clone())
        .collect();
    // Every object is admitted before any is deleted, so a refusal deletes nothing.
    for (ns, name) in &keys {
        let one = Req {
            ns: (!ns.is_empty()).then(|| ns.clone()),
            name: Some(name.clone()),
            ..req.clone()
        };
        let old = store
            .get(req.res, ns, name)
            .map(|o| view(req.res, &o).into_owned());
        admit(st, &store, "DELETE", &one, None, old.as_ref(), q)?;
    }
    let mut items = Vec::new();
    for (ns, name) in keys {
        if let Ok(o) = delete_object(&mut store, req.res, &ns, &name, grace) {
            items.push(view(req.res, &o).into_owned());
        }
    }
    let rv = store.current_rv().to_string();
    Ok((
        StatusCode::OK,
        json!({"kind": format!("{}List", req.res.kind), "apiVersion": req.res.api_version(), "metadata": {"resourceVersion": rv}, "items": items}),
    ))
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        r#type: &'a str,
        object: &'a Value,
    }
    let mut line = serde_json::to_vec(&Line {
        r#type: kind,
        object,
    })
    .unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// One change as a watcher of `res` is sent it, if it is in its scope: the event's shared JSON
/// line when the watcher sees the event as stored, else a line of its own.
fn event_line(
    ev: &WatchEvent,
    res: &'static Resource,
    ns: Option<&str>,
    filter: &Filter,
    encode: &impl Fn(&str, &Value) -> Bytes,
    proto: bool,
) -> Option<Bytes> {
    let (t, o) = filtered(ev, ns, filter)?;
    let v = view(res, &o);
    if !proto && t == ev.kind.as_str() && matches!(v, std::borrow::Cow::Borrowed(_)) {
        return Some(ev.json_line.get_or_init(|| watch_line(t, &v)).clone());
    }
    Some(encode(t, &v))
}

/// What a filtered watcher sees of one change.
fn filtered(
    ev: &WatchEvent,
    ns: Option<&str>,
    filter: &Filter,
) -> Option<(&'static str, Arc<Value>)> {
    let in_scope =
        |o: &Value| ns.is_none_or(|ns| meta(o, "namespace") == Some(ns)) && filter.matches(o);
    let now = in_scope(&ev.object);
    let before = ev.old.as_deref().is_some_and(in_scope);
    match ev.kind {
        EventType::Added if now => Some(("ADDED", ev.object.clone())),
        EventType::Deleted if before || now => Some(("DELETED", ev.object.clone())),
        EventType::Modified if now && before => Some(("MODIFIED", ev.object.clone())),
        EventType::Modified if now => Some(("ADDED", ev.object.clone())),
        EventType::Modified if before => Some(("DELETED", ev.object.clone())),
        _ => None,
    }
}

fn watch(st: Shared, req: Req, q: HashMap<String, String>, headers: &HeaderMap) -> Response {
    use crate::protobuf::{Wanted, wanted};
    let proto = match wanted(headers.get(header::ACCEPT).and_then(|a| a.to_str().ok())) {
        Wanted::Json => false,
        Wanted::Protobuf if crate::protobuf::built_in(&req.res.api_version()) => true,
        _ => return crate::protobuf::not_acceptable().into_response(),
    };
    // Newline-delimited JSON events, or length-prefixed protobuf frames.
    let watch_line = move |t: &str, o: &Value| -> Bytes {
        if proto {
            Bytes::from(crate::protobuf::watch_frame(t, o).unwrap_or_else(|e| {
                tracing::error!("watch event as protobuf: {e}");
                Vec::new()
            }))
        } else {
            watch_line(t, o)
        }
    };
    let content_type = if proto {
        "application/vnd.kubernetes.protobuf;stream=watch"
    } else {
        "application/json"
    };
    let filter = match Filter::from_query(&q) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let since: Option<u64> = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(s) => match s.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                return ApiError::bad_request(format!("invalid resourceVersion {s:?}"))
                    .into_response();
            }
        },
    };
    let bookmarks = q
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true" || b == "1");
    let initial_events = q.get("sendInitialEvents").is_some_and(|b| b == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let plan = st.faults.plan();
    let mut cuts = st.faults.watch_cuts();
    cuts.mark_unchanged();
    let cut_after_events = plan.watch_cut_after_events;
    let deadline =
        tokio::time::Instant::now() + plan.watch_cut_after.map_or(timeout, |c| c.min(timeout));
    let ns = req.ns.clone();
    let res = req.res;
    // Snapshot (when starting from "now") and subscription are taken under one lock.
    let (initial, replay, mut rx, start_rv) = {
        let store = st.store.lock();
        let rv = store.current_rv();
        let from = since.unwrap_or(rv);
        let (replay, rx) = match store.watch_from(res, from) {
            Ok(x) => x,
            Err(e) => {
                // kube-apiserver answers a too-old watch with 200 and an ERROR event.
                let body = watch_line("ERROR", &e.status());
                return (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body)
                    .into_response();
            }
        };
        let initial: Vec<Arc<Value>> = if since.is_none() || initial_events {
            store
                .iter(res, ns.as_deref())
                .filter(|(_, o)| filter.matches(o))
                .map(|(_, o)| o.clone())
                .collect()
        } else {
            Vec::new()
        };
        (initial, replay, rx, from)
    };
    let bookmark = move |rv: u64, initial_end: bool| {
        let mut md = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        watch_line(
            "BOOKMARK",
            &json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": md}),
        )
    };
    let interval = st.bookmark_interval;
    let stream = async_stream::stream! {
        let mut sent = 0usize;
        let mut last_rv = start_rv;
        for o in &initial {
            yield Ok::<Bytes, Infallible>(watch_line("ADDED", &view(res, o)));
        }
        if initial_events && bookmarks {
            yield Ok(bookmark(last_rv, true));
        }
        for ev in &replay {
            last_rv = ev.rv;
            if let Some(line) = event_line(ev, res, ns.as_deref(), &filter, &watch_line, proto) {
                yield Ok(line);
                sent += 1;
            }
        }
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            if cut_after_events.is_some_and(|n| sent >= n) {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = cuts.changed() => {
                    st.faults.count_watch_cut();
                    break;
                }
                _ = ticker.tick(), if bookmarks => {
                    // Drain what is queued under the store lock, so the bookmark's resourceVersion
                    // never runs ahead of an event this watcher has not been sent yet.
                    let (queued, rv, lagged) = {
                        let _store = st.store.lock();
                        let mut queued = Vec::new();
                        let mut lagged = false;
                        loop {
                            match rx.try_recv() {
                                Ok(ev) => queued.push(ev),
                                Err(tokio::sync::broadcast::error::TryRecvError::Empty) => break,
                                Err(_) => { lagged = true; break; }
                            }
                        }
                        (queued, _store.current_rv(), lagged)
                    };
                    for ev in queued {
                        if ev.rv <= last_rv { continue; }
                        last_rv = ev.rv;
                        if let Some(line) = event_line(&ev, res, ns.as_deref(), &filter, &watch_line, proto) {
                            yield Ok(line);
                            sent += 1;
                        }
                    }
                    if lagged { break; }
                    last_rv = last_rv.max(rv);
                    yield Ok(bookmark(last_rv, false));
                }
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        if ev.rv <= last_rv { continue; }
                        last_rv = ev.rv;
                        if let Some(line) = event_line(&ev, res, ns.as_deref(), &filter, &watch_line, proto) {
                            yield Ok(line);
                            sent += 1;
                        }
                    }
                    // A watcher that fell behind is cut, as the real server does; it resumes from
                    // its last resourceVersion or relists.
                    Err(_) => break,
                },
            }
        }
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| ApiError::internal("response").into_response())
}
