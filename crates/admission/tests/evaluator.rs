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
