//! API error counting and Events against the sandbox API server over real HTTP.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{EventType, Reporter};
use prometheus_client::registry::Registry;
use telemetry::api::ApiMetrics;
use telemetry::events::{self, node_ref};

async fn sandbox() -> sandbox::Sandbox {
    sandbox::Sandbox::start(sandbox::Options::default())
        .await
        .expect("sandbox")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_counted_by_verb_and_expected_answers_are_not() {
    let sb = sandbox().await;
    sb.add_node("n1", &[]).unwrap();
    let api = ApiMetrics::register(&mut Registry::default());
    assert!(!api.answered_within(Duration::from_secs(60)));
    let client = api.instrument(sb.client());
    let nodes: Api<Node> = Api::all(client.clone());

    // Answers the protocol expects are not errors, and show the API works.
    assert!(nodes.get_opt("nope").await.unwrap().is_none());
    nodes.list(&Default::default()).await.unwrap();
    let stale = serde_json::json!({"metadata": {"resourceVersion": "1", "labels": {"a": "b"}}});
    let e = nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(&stale))
        .await
        .unwrap_err();
    assert!(matches!(&e, kube::Error::Api(s) if s.code == 409), "{e}");
    for verb in telemetry::api::VERBS {
        assert_eq!(api.errors(verb), 0, "{verb}");
    }
    assert!(api.answered_within(Duration::from_secs(60)));

    // A failed write is an error; the error reaches the caller unchanged.
    sb.faults().set(sandbox::faults::FaultPlan {
        errors: vec![sandbox::faults::ErrorRule {
            verb: Some("patch".into()),
            resource: Some("nodes".into()),
            rate: 1.0,
            code: 500,
        }],
        ..Default::default()
    });
    let e = nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({})),
        )
        .await
        .unwrap_err();
    assert!(matches!(&e, kube::Error::Api(s) if s.code == 500), "{e}");
    assert_eq!(api.errors("patch"), 1);
    sb.faults().set(Default::default());

    // No answer at all: an error of its verb.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = kube::Config::new(format!("http://127.0.0.1:{dead_port}").parse().unwrap());
    config.default_retry = false;
    let dead = api.instrument(kube::Client::try_from(config).unwrap());
    let e = Api::<Node>::all(dead).get("n1").await.unwrap_err();
    assert!(!matches!(e, kube::Error::Api(_)), "{e}");
    assert_eq!(api.errors("get"), 1);
    assert_eq!(api.errors("list"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_written_in_the_background_and_failures_never_block() {
    let sb = sandbox().await;
    sb.add_node("n1", &[]).unwrap();
    let reporter = Reporter {
        controller: "test-controller".into(),
        instance: Some("i1".into()),
    };
    let (sink, driver) = events::channel(sb.client(), reporter.clone(), 8);
    let driver = tokio::spawn(driver.run());
    sink.publish(
        node_ref("n1", None),
        EventType::Normal,
        "Tested",
        "Test",
        "é".repeat(2000),
    );
    assert!(sink.flush(Duration::from_secs(10)).await);
    let list = Api::<Event>::namespaced(sb.client(), "default")
        .list(&Default::default())
        .await
        .unwrap();
    let ev = list
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some("Tested"))
        .expect("the Event");
    assert_eq!(ev.regarding.as_ref().unwrap().name.as_deref(), Some("n1"));
    assert_eq!(ev.reporting_controller.as_deref(), Some("test-controller"));
    assert!(ev.note.as_ref().unwrap().len() <= events::MAX_NOTE);
    drop(sink);
    driver.await.unwrap();

    // An API server that never answers: publishing returns at once, a full queue drops.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
            .unwrap();
    let (sink, driver) = events::channel(client, reporter, 2);
    let _driver = tokio::spawn(driver.run());
    let t0 = std::time::Instant::now();
    for i in 0..10 {
        sink.publish(
            node_ref("n1", None),
            EventType::Warning,
            "Tested",
            "Test",
            format!("{i}"),
        );
    }
    assert!(t0.elapsed() < Duration::from_millis(100));
    assert!(sink.dropped() >= 7, "{}", sink.dropped());
    assert!(!sink.flush(Duration::from_millis(200)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_patch_one_events_series_until_it_expires() {
    let sb = sandbox().await;
    sb.add_node("n1", &[]).unwrap();
    let reporter = Reporter {
        controller: "test-controller".into(),
        instance: None,
    };
    let ttl = Duration::from_millis(1500);
    let (sink, driver) = events::channel(sb.client(), reporter, 8);
    let driver = tokio::spawn(driver.with_series_ttl(ttl).run());
    let api = Api::<Event>::namespaced(sb.client(), "default");
    let of = |reason: &'static str| {
        let api = api.clone();
        async move {
            let mut v: Vec<Event> = api
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some(reason))
                .collect();
            v.sort_by_key(|e| e.event_time.clone().map(|t| t.0));
            v
        }
    };
    let publish = |reason: &str, note: &str| {
        sink.publish(
            node_ref("n1", None),
            EventType::Normal,
            reason,
            "Test",
            note,
        )
    };

    publish("Again", "first");
    publish("Again", "second");
    publish("Again", "third");
    publish("Other", "other");
    assert!(sink.flush(Duration::from_secs(10)).await);
    let again = of("Again").await;
    assert_eq!(again.len(), 1, "{again:?}");
    let ev = &again[0];
    assert!(ev.metadata.name.as_deref().unwrap().starts_with("n1."));
    assert_eq!(ev.note.as_deref(), Some("first"));
    assert_eq!(ev.reporting_instance.as_deref(), Some("test-controller"));
    let series = ev.series.as_ref().expect("a series");
    assert_eq!(series.count, 3);
    assert!(series.last_observed_time.0 >= ev.event_time.as_ref().unwrap().0);
    assert_eq!(of("Other").await.len(), 1);

    // Past the TTL a repeat starts a new Event.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    publish("Again", "fourth");
    assert!(sink.flush(Duration::from_secs(10)).await);
    let again = of("Again").await;
    assert_eq!(again.len(), 2, "{again:?}");
    assert_eq!(again[1].note.as_deref(), Some("fourth"));
    assert!(again[1].series.is_none());

    // The Event deleted meanwhile: the repeat creates it afresh rather than failing.
    api.delete(
        again[1].metadata.name.as_deref().unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    publish("Again", "fifth");
    assert!(sink.flush(Duration::from_secs(10)).await);
    let again = of("Again").await;
    assert_eq!(again.len(), 2, "{again:?}");
    assert_eq!(again[1].note.as_deref(), Some("fifth"));

    // Namespaced objects get their Events in their namespace.
    let ns = k8s_openapi::api::core::v1::Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some("work".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::all(sb.client())
        .create(&Default::default(), &ns)
        .await
        .unwrap();
    let mut pod = node_ref("p1", None);
    pod.kind = Some("Pod".into());
    pod.namespace = Some("work".into());
    sink.publish(pod, EventType::Warning, "PodThing", "Test", "x");
    assert!(sink.flush(Duration::from_secs(10)).await);
    let in_ns = Api::<Event>::namespaced(sb.client(), "work")
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(in_ns.items.len(), 1);
    assert_eq!(in_ns.items[0].type_.as_deref(), Some("Warning"));
    drop(sink);
    driver.await.unwrap();
}
