//! Sandbox at scale: 5,000 nodes and 100,000 pods. Measures what our components and kubectl do
//! most (list all nodes, start a node watch, list one node's pods) and writes bench/sandbox.md.
//!
//! Run: cargo bench -p sandbox --bench scale   (NODES / PODS env vars override the sizes)

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use serde_json::json;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn time<F, Fut, T>(runs: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut out = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        f().await;
        out.push(t.elapsed());
    }
    median(out)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let nodes: usize = std::env::var("NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let pods: usize = std::env::var("PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rss_before = rss_mib();
    let sb = sandbox::Sandbox::start(sandbox::Options {
        watch_history: 1_000,
        ..Default::default()
    })
    .await?;
    let t = Instant::now();
    for i in 0..nodes {
        sb.add_node(
            &format!("node-{i:05}"),
            &[("topology.kubernetes.io/zone", &format!("zone-{}", i % 3))],
        )?;
    }
    let add_nodes = t.elapsed();
    let t = Instant::now();
    let pod_res = sandbox::eviction::pods();
    for i in 0..pods {
        let node = format!("node-{:05}", i % nodes);
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("app-{i:06}"), "namespace": "default", "labels": {"app": format!("app-{}", i % 500)}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 30, "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        });
        sb.store()
            .lock()
            .create(pod_res, pod)
            .map_err(|e| anyhow::anyhow!(e.message))?;
    }
    let add_pods = t.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_loaded = rss_mib();

    let client = sb.client();
    let node_api: Api<Node> = Api::all(client.clone());
    let pod_api: Api<Pod> = Api::all(client.clone());
    let list_nodes = time(5, || async {
        assert_eq!(
            node_api
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len(),
            nodes
        )
    })
    .await;
    let list_nodes_paged = time(5, || async {
        let mut lp = ListParams::default().limit(500);
        let mut n = 0;
        loop {
            let page = node_api.list(&lp).await.unwrap();
            n += page.items.len();
            match page.metadata.continue_ {
                Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
                _ => break,
            }
        }
        assert_eq!(n, nodes);
    })
    .await;
    let rv = node_api
        .list_metadata(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let watch_start = time(5, || async {
        let mut s = node_api
            .watch(&WatchParams::default().timeout(10), &rv)
            .await
            .unwrap()
            .boxed();
        // A watch from the current resourceVersion is open once the first change arrives.
        sb.store()
            .lock()
            .modify(
                sandbox::resources::find("", "v1", "nodes").unwrap(),
                "",
                "node-00000",
                |v| {
                    v["metadata"]["labels"]["touch"] =
                        json!(Instant::now().elapsed().as_nanos().to_string());
                    Ok(())
                },
            )
            .unwrap();
        while let Some(ev) = s.next().await {
            if matches!(ev.unwrap(), WatchEvent::Modified(_)) {
                break;
            }
        }
    })
    .await;
    let watch_initial = time(3, || async {
        // A watch without resourceVersion starts with every node as ADDED.
        let mut s = node_api
            .watch(&WatchParams::default().timeout(30), "0")
            .await
            .unwrap()
            .boxed();
        let mut n = 0;
        while let Some(ev) = s.next().await {
            if matches!(ev.unwrap(), WatchEvent::Added(_)) {
                n += 1;
                if n == nodes {
                    break;
                }
            }
        }
    })
    .await;
    let pods_on_node = time(20, || async {
        let lp = ListParams::default().fields("spec.nodeName=node-00042");
        assert_eq!(pod_api.list(&lp).await.unwrap().items.len(), pods / nodes);
    })
    .await;
    let list_pods = time(3, || async {
        assert_eq!(
            pod_api
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len(),
            pods
        )
    })
    .await;
    let rss_after = rss_mib();

    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let report = format!(
        "# Sandbox at scale\n\n{date}, {cores} cores ({model}), release build, `cargo bench -p sandbox --bench scale`.\n\n\
         {nodes} nodes, {pods} pods (all bound and Running), medians over repeated runs, through kube-rs over loopback HTTP.\n\n\
         | what | figure |\n|---|---|\n\
         | add {nodes} nodes (store, in-process) | {add_nodes} |\n\
         | add {pods} pods (store, in-process) | {add_pods} |\n\
         | list all nodes (one request) | {list_nodes} |\n\
         | list all nodes in pages of 500 | {list_nodes_paged} |\n\
         | start a node watch from a resourceVersion, first event | {watch_start} |\n\
         | watch from \"0\": all {nodes} nodes as ADDED | {watch_initial} |\n\
         | list one node's pods (`fieldSelector=spec.nodeName`) | {pods_on_node} |\n\
         | list all {pods} pods (one request) | {list_pods} |\n\
         | RSS before / loaded / after | {rss_before:.0} / {rss_loaded:.0} / {rss_after:.0} MiB |\n",
        date = chrono::Utc::now().format("%Y-%m-%d"),
        cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        add_nodes = ms(add_nodes),
        add_pods = ms(add_pods),
        list_nodes = ms(list_nodes),
        list_nodes_paged = ms(list_nodes_paged),
        watch_start = ms(watch_start),
        watch_initial = ms(watch_initial),
        pods_on_node = ms(pods_on_node),
        list_pods = ms(list_pods),
    );
    print!("{report}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/sandbox.md");
    std::fs::write(&path, &report)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
