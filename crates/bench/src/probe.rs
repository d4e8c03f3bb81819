//! The API's own write round trip while a scenario runs: a client of its own patches one
//! ConfigMap's annotation, one request at a time, every 20 ms, and times each answer. A freed
//! slot costs at least two such round trips in a row (the release, then the grant), whatever
//! the operator does, so this is the floor under the freed slot -> grant latency.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use sandbox::Sandbox;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::slots::SlotLatency;

const EVERY: Duration = Duration::from_millis(20);
const NAME: &str = "bench-api-probe";
/// Its user in the sandbox's audit record (not counted as the operator's requests).
pub const USER: &str = "bench-probe";

/// Runs until [`ApiProbe::finish`].
pub struct ApiProbe {
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<Vec<(f64, f64)>>>,
}

impl ApiProbe {
    /// Creates the ConfigMap (in `default`, as `user`) and starts patching it.
    pub async fn start(sb: &Sandbox, user: &str) -> anyhow::Result<ApiProbe> {
        let api: Api<ConfigMap> = Api::namespaced(sb.client_as(user)?, "default");
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": NAME}}))?;
        api.create(&PostParams::default(), &cm).await?;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for i in 0u64.. {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tick.tick() => {}
                }
                let body = json!({"metadata": {"annotations": {"bench/probe": i.to_string()}}});
                let sent = Instant::now();
                api.patch(NAME, &PatchParams::default(), &Patch::Merge(&body))
                    .await?;
                samples.push((
                    sent.elapsed().as_secs_f64() * 1000.0,
                    sent.duration_since(start).as_secs_f64(),
                ));
            }
            Ok(samples)
        });
        Ok(ApiProbe { stop, task })
    }

    /// Stops the probe; the round trips it timed.
    pub async fn finish(self) -> anyhow::Result<SlotLatency> {
        let _ = self.stop.send(true);
        Ok(SlotLatency::of(self.task.await??, 0))
    }
}
