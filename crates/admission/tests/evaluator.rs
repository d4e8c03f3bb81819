//! The evaluator itself, on small policies: the API server's order and fallbacks, so that
//! node_policy.rs's verdicts mean what the API server would answer.

use admission::{Decision, Denial, Policy, Request, Resource, UserInfo};
use serde_json::{Value as Json, json};

fn policy(spec: Json, actions: Json) -> Result<Policy, admission::LoadError> {
    let mut full = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "p"},
        "spec": {"matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["*"],
            "operations": ["UPDATE"], "resources": ["nodes"]}]}},
    });
    for (k, v) in spec.as_object().expect("spec") {
        full["spec"][k] = v.clone();
    }
    let binding = json!({"kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": "b"},
        "spec": {"policyName": "p", "validationActions": actions}});
    Policy::new(&full, &binding)
}

fn deny(spec: Json) -> Policy {
    policy(spec, json!(["Deny"])).expect("policy")
}

fn node(name: &str, labels: Json) -> Json {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}})
}

fn update(user: &str, old: Json, new: Json) -> Request {
    let user = UserInfo {
        username: user.into(),
        ..Default::default()
    };
    Request::update(Resource::nodes(), user, old, new)
}

fn denied(code: u16, reason: &str, message: &str) -> Decision {
    let cause = format!("ValidatingAdmissionPolicy 'p' with binding 'b' denied request: {message}");
    Decision::Denied(Denial {
        code,
        reason: reason.into(),
        message: format!("nodes \"n\" is forbidden: {cause}"),
        name: "n".into(),
        cause,
    })
}

const ADMITTED: Decision = Decision::Admitted { warnings: vec![] };

#[test]
fn a_false_match_condition_wins_over_an_error_in_another() {
    let p = deny(json!({
        "matchConditions": [
            {"name": "broken", "expression": "object.metadata.nope == 'x'"},
            {"name": "alice", "expression": "request.userInfo.username == 'alice'"},
        ],
        "validations": [{"expression": "false"}],
    }));
    let r = |u| update(u, node("n", json!({})), node("n", json!({})));
    assert_eq!(p.evaluate(&r("bob")), Decision::NotMatched);
    let Decision::Denied(d) = p.evaluate(&r("alice")) else {
        panic!("an erroring condition with failurePolicy Fail denies");
    };
    assert_eq!(d.code, 422);
    assert!(
        d.message.contains(
            "matchCondition 'broken': expression 'object.metadata.nope == 'x'' resulted in error"
        ),
        "{}",
        d.message
    );
}

#[test]
fn messages_fall_back_from_expression_to_message_to_the_expression() {
    let p = deny(json!({"validations": [
        {"expression": "object.metadata.labels.size() == 0", "messageExpression": "'has ' + string(object.metadata.labels.size())", "reason": "Forbidden"},
    ]}));
    let d = p.evaluate(&update(
        "u",
        node("n", json!({})),
        node("n", json!({"a": "b"})),
    ));
    assert_eq!(d, denied(403, "Forbidden", "has 1"));
    // A messageExpression that fails, gives a blank or a multi-line string: `message`.
    for bad in ["object.nope", "'  '", "'two\\nlines'"] {
        let p = deny(json!({"validations": [
            {"expression": "false", "messageExpression": bad, "message": " fixed "},
        ]}));
        let d = p.evaluate(&update("u", node("n", json!({})), node("n", json!({}))));
        assert_eq!(d, denied(422, "Invalid", "fixed"), "{bad}");
    }
    let p = deny(json!({"validations": [{"expression": " 1 == 2 "}]}));
    let d = p.evaluate(&update("u", node("n", json!({})), node("n", json!({}))));
    assert_eq!(d, denied(422, "Invalid", "failed expression: 1 == 2"));
}

#[test]
fn variables_see_the_earlier_ones_and_a_failed_one_fails_only_its_users() {
    let p = deny(json!({
        "variables": [
            {"name": "labels", "expression": "object.metadata.labels"},
            {"name": "broken", "expression": "object.metadata.nope"},
            {"name": "count", "expression": "variables.labels.size()"},
        ],
        "validations": [
            {"expression": "variables.count == 1", "message": "one label"},
            {"expression": "variables.broken == 1", "message": "unused"},
        ],
    }));
    let d = p.evaluate(&update(
        "u",
        node("n", json!({})),
        node("n", json!({"a": "b", "c": "d"})),
    ));
    assert_eq!(d, denied(422, "Invalid", "one label"));
    let Decision::Denied(d) = p.evaluate(&update(
        "u",
        node("n", json!({})),
        node("n", json!({"a": "b"})),
    )) else {
        panic!("the second validation uses the failed variable");
    };
    assert!(
        d.message
            .contains("expression 'variables.broken == 1' resulted in error")
            && d.message.contains(
                "(variable 'broken': expression 'object.metadata.nope' resulted in error"
            ),
        "{}",
        d.message
    );
}

#[test]
fn failure_policy_ignore_and_warn_and_audit_actions_admit() {
    let spec = json!({"failurePolicy": "Ignore", "validations": [
        {"expression": "object.nope", "message": "error"},
    ]});
    let p = policy(spec, json!(["Deny"])).expect("policy");
    assert_eq!(
        p.evaluate(&update("u", node("n", json!({})), node("n", json!({})))),
        ADMITTED
    );
    let spec = json!({"validations": [{"expression": "false", "message": "no"}]});
    let p = policy(spec, json!(["Warn", "Audit"])).expect("policy");
    assert_eq!(
        p.evaluate(&update("u", node("n", json!({})), node("n", json!({})))),
        Decision::Admitted {
            warnings: vec![
                "Validation failed for ValidatingAdmissionPolicy 'p' with binding 'b': no".into()
            ]
        }
    );
}

#[test]
fn resource_rules_match_operations_resources_and_subresources() {
    let p = deny(json!({
        "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
            "operations": ["UPDATE"], "resources": ["nodes", "pods/*"]}]},
        "validations": [{"expression": "false", "message": "hit"}],
    }));
    let hit = denied(422, "Invalid", "hit");
    let mut r = update("u", node("n", json!({})), node("n", json!({})));
    assert_eq!(p.evaluate(&r), hit);
    r.resource = Resource::nodes().subresource("status");
    assert_eq!(
        p.evaluate(&r),
        Decision::NotMatched,
        "nodes does not cover nodes/status"
    );
    r.resource = Resource {
        resource: "pods".into(),
        ..Resource::nodes().subresource("eviction")
    };
    let Decision::Denied(d) = p.evaluate(&r) else {
        panic!("pods/* covers pods/eviction");
    };
    assert_eq!(
        d.message,
        "pods \"n\" is forbidden: ValidatingAdmissionPolicy 'p' with binding 'b' denied request: hit"
    );
    // As in the API server's matcher, a `*` subresource also matches none.
    r.resource = Resource {
        resource: "pods".into(),
        ..Resource::nodes()
    };
    assert!(
        matches!(p.evaluate(&r), Decision::Denied(_)),
        "pods/* covers pods"
    );
    r.resource = Resource {
        resource: "services".into(),
        ..Resource::nodes()
    };
    assert_eq!(p.evaluate(&r), Decision::NotMatched);
    r.resource = Resource {
        version: "v2".into(),
        ..Resource::nodes()
    };
    assert_eq!(p.evaluate(&r), Decision::NotMatched);
    let mut r = update("u", node("n", json!({})), node("n", json!({})));
    r.operation = "CREATE".into();
    assert_eq!(p.evaluate(&r), Decision::NotMatched);
}

#[test]
fn the_request_is_built_as_the_api_server_builds_it() {
    let p = deny(json!({"validations": [
        {"expression": "request.operation == 'UPDATE' && request.name == 'n' && !has(request.namespace) && request.resource.resource == 'nodes' && request.kind.kind == 'Node' && request.options.kind == 'UpdateOptions' && !has(request.subResource) && !has(request.userInfo.extra) && !has(request.userInfo.groups) && oldObject.metadata.name == 'n' && params == null", "message": "request"},
    ]}));
    assert_eq!(
        p.evaluate(&update("u", node("n", json!({})), node("n", json!({})))),
        ADMITTED
    );
}

#[test]
fn policies_it_cannot_evaluate_faithfully_are_refused_naming_the_field() {
    let err = |spec: Json| {
        policy(spec, json!(["Deny"]))
            .err()
            .expect("refused")
            .to_string()
    };
    assert_eq!(
        err(json!({"validations": [{"expression": "1 +"}]}))
            .split(':')
            .next(),
        Some("spec.validations[0].expression")
    );
    assert!(
        err(json!({"paramKind": {"kind": "ConfigMap"}, "validations": [{"expression": "true"}]}))
            .starts_with("spec.paramKind: not supported")
    );
    assert!(err(json!({"auditAnnotations": [{"key": "k", "valueExpression": "'v'"}], "validations": [{"expression": "true"}]}))
        .starts_with("spec.auditAnnotations: not supported"));
    assert!(
        err(json!({"failurePolicy": "Sometimes", "validations": [{"expression": "true"}]}))
            .starts_with("spec.failurePolicy")
    );
    assert!(
        err(json!({"variables": [{"expression": "1"}], "validations": [{"expression": "true"}]}))
            .starts_with("spec.variables[0].name: missing")
    );
    let e = policy(
        json!({"validations": [{"expression": "true"}]}),
        json!(["Block"]),
    )
    .err()
    .expect("refused");
    assert!(
        e.to_string().starts_with("binding spec.validationActions"),
        "{e}"
    );
    let yaml = "kind: ValidatingAdmissionPolicy\nmetadata: {name: p}\nspec: {}\n";
    let e = Policy::from_yaml(yaml).err().expect("no binding");
    assert_eq!(
        e.to_string(),
        "no ValidatingAdmissionPolicyBinding in the file"
    );
}

#[test]
fn the_bindings_match_resources_narrow_the_policy() {
    let spec = json!({
        "matchConstraints": {
            "resourceRules": [{"apiGroups": [""], "apiVersions": ["*"], "operations": ["UPDATE"],
                "resources": ["nodes", "nodes/status"]}],
            "excludeResourceRules": [{"apiGroups": [""], "apiVersions": ["*"],
                "operations": ["*"], "resources": ["nodes"], "resourceNames": ["skip"]}],
        },
        "validations": [{"expression": "false", "message": "hit"}],
    });
    let mut full =
        json!({"kind": "ValidatingAdmissionPolicy", "metadata": {"name": "p"}, "spec": spec});
    let only_status = json!({"kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": "b"},
        "spec": {"policyName": "p", "validationActions": ["Deny"], "matchResources": {
            "resourceRules": [{"apiGroups": [""], "apiVersions": ["*"], "operations": ["*"],
                "resources": ["nodes/status"]}]}}});
    let p = Policy::new(&full, &only_status).expect("policy");
    let r = update("u", node("n", json!({})), node("n", json!({})));
    assert_eq!(
        p.evaluate(&r),
        Decision::NotMatched,
        "the binding takes only nodes/status"
    );
    let mut status = r.clone();
    status.resource = Resource::nodes().subresource("status");
    assert!(matches!(p.evaluate(&status), Decision::Denied(_)));

    // Without matchResources, the policy's constraints alone, less its exclusions.
    let b = json!({"kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": "b"},
        "spec": {"policyName": "p", "validationActions": ["Deny"]}});
    let p = Policy::new(&full, &b).expect("policy");
    assert_eq!(p.evaluate(&r), denied(422, "Invalid", "hit"));
    let skip = update("u", node("skip", json!({})), node("skip", json!({})));
    assert_eq!(p.evaluate(&skip), Decision::NotMatched, "excluded by name");

    // A `Namespaced` rule never matches a cluster-scoped Node.
    full["spec"]["matchConstraints"]["resourceRules"][0]["scope"] = json!("Namespaced");
    let p = Policy::new(&full, &b).expect("policy");
    assert_eq!(p.evaluate(&r), Decision::NotMatched);
}

#[test]
fn a_denial_names_the_request_then_the_object() {
    let p = deny(json!({
        "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["*"],
            "operations": ["*"], "resources": ["configmaps"]}]},
        "validations": [{"expression": "request.dryRun == false", "message": "dry", "reason": "Forbidden"}],
    }));
    let cm = |md: Json| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": md});
    let mut r = update("u", cm(json!({})), cm(json!({"generateName": "gen-"})));
    r.resource = Resource {
        resource: "configmaps".into(),
        kind: "ConfigMap".into(),
        ..Resource::nodes()
    };
    r.operation = "CREATE".into();
    r.old_object = None;
    r.namespace = "default".into();
    r.dry_run = true;
    let Decision::Denied(d) = p.evaluate(&r) else {
        panic!("a dry run is denied by this policy");
    };
    assert_eq!((d.code, d.name.as_str()), (403, "gen-"));
    assert_eq!(
        d.message,
        "configmaps \"gen-\" is forbidden: ValidatingAdmissionPolicy 'p' with binding 'b' denied request: dry"
    );
    assert_eq!(
        d.cause,
        "ValidatingAdmissionPolicy 'p' with binding 'b' denied request: dry"
    );
    // A DELETE has no object: the request's name.
    r.operation = "DELETE".into();
    r.object = None;
    r.old_object = Some(cm(json!({"name": "old"})));
    r.name = "old".into();
    let Decision::Denied(d) = p.evaluate(&r) else {
        panic!("denied");
    };
    assert_eq!(d.name, "old");
}

#[test]
fn what_the_api_server_refuses_in_a_policy_or_binding_is_refused() {
    let err = |spec: Json, actions: Json| policy(spec, actions).err().expect("refused").to_string();
    let ok = json!({"validations": [{"expression": "true"}]});
    assert!(
        err(
            json!({"validations": [{"expression": "false", "reason": "Teapot"}]}),
            json!(["Deny"])
        )
        .starts_with("spec.validations[0].reason: \"Teapot\" is not one of")
    );
    assert!(
        err(ok.clone(), json!(["Deny", "Warn"]))
            .starts_with("binding spec.validationActions: Deny and Warn together")
    );
    assert!(
        err(json!({"matchConstraints": {"resourceRules": []}, "validations": [{"expression": "true"}]}), json!(["Deny"]))
            .starts_with("spec.matchConstraints.resourceRules: Required value")
    );
    for (sel, want) in [
        (
            json!({"matchExpressions": [{"key": "a", "operator": "Near", "values": ["b"]}]}),
            "spec.matchConstraints.objectSelector.matchExpressions[0].operator: \"Near\" is not one of In, NotIn, Exists, DoesNotExist",
        ),
        (
            json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
            "spec.matchConstraints.objectSelector.matchExpressions[0].values: must be non-empty for In and NotIn",
        ),
        (
            json!({"matchLabel": {"a": "b"}}),
            "spec.matchConstraints.objectSelector: unknown field \"matchLabel\"; a label selector has matchLabels and matchExpressions",
        ),
    ] {
        let mut spec = ok.clone();
        spec["matchConstraints"] = json!({"resourceRules": [{"apiGroups": [""], "apiVersions": ["*"],
            "operations": ["*"], "resources": ["nodes"]}], "objectSelector": sel});
        assert_eq!(err(spec, json!(["Deny"])), want);
    }
    assert!(
        admission::validate_binding(&json!({"metadata": {"name": "b"},
        "spec": {"policyName": "p", "validationActions": ["Warn"],
            "paramRef": {"name": "x"}}}))
        .is_err_and(|e| e
            .to_string()
            .starts_with("binding spec.paramRef: not supported"))
    );
}

#[test]
fn namespace_and_object_selectors_match_as_the_api_server_matches() {
    let full = json!({"kind": "ValidatingAdmissionPolicy", "metadata": {"name": "p"}, "spec": {
        "matchConstraints": {
            "resourceRules": [{"apiGroups": [""], "apiVersions": ["*"], "operations": ["*"],
                "resources": ["configmaps", "namespaces", "nodes"]}],
            "namespaceSelector": {"matchLabels": {"env": "prod"}},
            "objectSelector": {"matchExpressions": [
                {"key": "tier", "operator": "NotIn", "values": ["test"]},
                {"key": "skip", "operator": "DoesNotExist"},
            ]},
        },
        "validations": [{"expression": "false", "message": "hit"}],
    }});
    let b = json!({"kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": "b"},
        "spec": {"policyName": "p", "validationActions": ["Deny"]}});
    let p = Policy::new(&full, &b).expect("policy");
    assert!(p.matches_on_objects());
    let obj = |kind: &str, labels: Json| json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "o", "labels": labels}});
    let req = |resource: &str, ns: &str, ns_labels: Json, labels: Json| {
        let mut r = update("u", obj("X", labels.clone()), obj("X", labels));
        r.resource = Resource {
            resource: resource.into(),
            ..Resource::nodes()
        };
        r.namespace = ns.into();
        r.namespace_object = (!ns.is_empty()).then(|| obj("Namespace", ns_labels));
        r
    };
    let hit = |r: &Request| matches!(p.evaluate(r), Decision::Denied(_));
    let prod = json!({"env": "prod"});
    assert!(hit(&req("configmaps", "a", prod.clone(), json!({}))));
    assert!(
        !hit(&req("configmaps", "a", json!({"env": "dev"}), json!({}))),
        "namespace labels"
    );
    assert!(
        !hit(&req(
            "configmaps",
            "a",
            prod.clone(),
            json!({"tier": "test"})
        )),
        "NotIn"
    );
    assert!(
        !hit(&req("configmaps", "a", prod.clone(), json!({"skip": ""}))),
        "DoesNotExist"
    );
    // A cluster-scoped object is never exempted by the namespace selector...
    assert!(hit(&req("nodes", "", Json::Null, json!({}))));
    // ...but a Namespace is matched by its own labels.
    assert!(hit(&req("namespaces", "", Json::Null, prod.clone())));
    assert!(!hit(&req("namespaces", "", Json::Null, json!({}))));
    // The object before the request matches too.
    let mut r = req("configmaps", "a", prod, json!({"tier": "test"}));
    r.old_object = Some(obj("X", json!({})));
    assert!(hit(&r), "the old object's labels match");
}
