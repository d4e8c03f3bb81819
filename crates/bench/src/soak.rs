//! The soak (`bench --only soak`; never part of the default run): update rounds arrive
//! continuously on a few hundred nodes for an hour (`--soak-minutes`), while the leading
//! operator is killed (SIGKILL) and agents are restarted. Every node must take every round
//! offered to it exactly once, and the memory of the `update-operator` and `update-agent`
//! processes must stay flat: each process's RSS is sampled and its slope reported.
//!
//! The node side: most nodes run the simulated agents (the real agent's decisions, in this
//! process, in groups restarted one at a time); a few run the real `update-agent` binary on a
//! private dbus-daemon whose fake update_engine and logind are bridged to the node's simulated
//! host (its status mirrored, a logind Reboot rebooting the simulated machine), killed when
//! the machine goes down and started again when it is up, as a DaemonSet's pod.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use host::Host;
use host::testing::{FakeLogind, FakeUpdateEngine, TestBus};
use protocol::keys;
use protocol::update_engine::UPDATE_STATUS_IDLE;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sandbox::{Sandbox, SimHost};
use serde::Serialize;

use crate::child::ChildProc;
use crate::scenarios::{Env, NAMESPACE, node_names, sandbox_with_nodes, spawn_operator_with_env};
use crate::simagent::SimAgents;

/// What the soak runs.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub nodes: u32,
    pub max: u32,
    pub duration: Duration,
    /// A new version is released this often; each node is offered it once it runs the last.
    pub round_every: Duration,
    /// The leading operator is killed this often (a new replica replaces it).
    pub failover_every: Duration,
    /// One group of simulated agents, or one real agent, is restarted this often.
    pub restart_every: Duration,
    /// Nodes that run the real `update-agent` binary.
    pub real_agents: u32,
    /// How often memory is sampled.
    pub sample_every: Duration,
}

/// One process's RSS over its life.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub what: String,
    /// (minutes since the soak started, RSS MiB).
    pub samples: Vec<(f64, f64)>,
}

impl Series {
    /// Least-squares slope in MiB per hour, over the samples after the first `warmup`
    /// minutes of the process's life (None with fewer than 3 such samples).
    pub fn slope_per_hour(&self, warmup: f64) -> Option<f64> {
        let t0 = self.samples.first()?.0;
        let s: Vec<(f64, f64)> = self
            .samples
            .iter()
            .copied()
            .filter(|(t, _)| t - t0 >= warmup)
            .collect();
        if s.len() < 3 {
            return None;
        }
        let n = s.len() as f64;
        let (mx, my) = (
            s.iter().map(|p| p.0).sum::<f64>() / n,
            s.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let sxx: f64 = s.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = s.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        (sxx > 0.0).then(|| sxy / sxx * 60.0)
    }

    fn span_minutes(&self) -> f64 {
        match (self.samples.first(), self.samples.last()) {
            (Some(a), Some(b)) => b.0 - a.0,
            _ => 0.0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SoakResult {
    pub nodes: u32,
    pub max: u32,
    pub minutes: f64,
    pub rounds_released: u32,
    /// Offers of a new version to a node, and reboots of all nodes, over the soak.
    pub offers: u64,
    pub reboots: u64,
    /// Nodes whose reboots differ from their offers, or that do not run the last version
    /// they were offered, after the rollout settled: nothing may be lost or done twice.
    pub lost: Vec<String>,
    pub failovers: u32,
    pub agent_restarts: u32,
    pub operators: Vec<Series>,
    pub agents: Vec<Series>,
}

/// A real `update-agent` on a simulated machine: its own bus with a fake update_engine and
/// logind bridged to the machine.
struct RealAgent {
    node: String,
    bus: TestBus,
    _engine: Arc<FakeUpdateEngine>,
    _logind: Arc<FakeLogind>,
    bridge: Vec<tokio::task::JoinHandle<()>>,
    os_release: std::path::PathBuf,
    child: Option<ChildProc>,
    starts: u32,
}

impl RealAgent {
    async fn start(sb: &Sandbox, env: &Env, node: &str) -> anyhow::Result<RealAgent> {
        let host = sb.host(node).context("host")?;
        let bus = TestBus::start().context("starting dbus-daemon (is it installed?)")?;
        let engine = Arc::new(FakeUpdateEngine::start(bus.address(), host.status()).await?);
        let logind = Arc::new(FakeLogind::start(bus.address()).await?);
        let mut bridge = Vec::new();
        // update_engine's status follows the machine's.
        let mut statuses = host.status_updates().await?;
        let e = engine.clone();
        bridge.push(tokio::spawn(async move {
            while let Some(s) = statuses.next().await {
                let _ = e.set_status(s).await;
            }
        }));
        // logind's Reboot reboots the machine.
        let (h, l) = (host.clone(), logind.clone());
        bridge.push(tokio::spawn(async move {
            let mut asked = 0;
            loop {
                asked = l.wait_for_reboot_calls(asked + 1).await.len();
                let _ = h.reboot().await;
            }
        }));
        let os_release = env.logs.join(format!("os-release-{node}"));
        let mut a = RealAgent {
            node: node.to_string(),
            bus,
            _engine: engine,
            _logind: logind,
            bridge,
            os_release,
            child: None,
            starts: 0,
        };
        a.spawn(sb, env, &host)?;
        Ok(a)
    }

    fn spawn(&mut self, sb: &Sandbox, env: &Env, host: &SimHost) -> anyhow::Result<()> {
        std::fs::write(&self.os_release, host.os_release())?;
        let args = [
            "--node".to_string(),
            self.node.clone(),
            "--kubeconfig".into(),
            sb.kubeconfig_path().display().to_string(),
            "--dbus-address".into(),
            self.bus.address().to_string(),
            "--os-release-path".into(),
            self.os_release.display().to_string(),
            "--metrics-address".into(),
            "off".into(),
            "--grace-period".into(),
            "60s".into(),
        ];
        self.starts += 1;
        self.child = Some(ChildProc::spawn(
            &env.agent,
            &args,
            env.logs
                .join(format!("update-agent-{}-{}.log", self.node, self.starts)),
        )?);
        Ok(())
    }
}

impl Drop for RealAgent {
    fn drop(&mut self) {
        for t in &self.bridge {
            t.abort();
        }
    }
}

fn spawn_replica(env: &Env, sb: &Sandbox, max: u32, n: u32) -> anyhow::Result<ChildProc> {
    // HOSTNAME names the replica in its holder identity (`<HOSTNAME>_<random>`).
    spawn_operator_with_env(
        env,
        sb,
        max,
        &format!("soak-{n}"),
        &[("HOSTNAME", &format!("replica-{n}"))],
    )
}

/// Whether the node runs `version`, needs nothing and holds no slot: ready for the next.
fn settled_on(sb: &Sandbox, node: &str, version: &str) -> bool {
    let nodes = sandbox::resources::find("", "v1", "nodes").expect("nodes");
    sb.store().lock().get(nodes, "", node).is_some_and(|n| {
        let ann = |k: &str| {
            n.pointer("/metadata/annotations")
                .and_then(|a| a.get(k))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let label = n
            .pointer("/metadata/labels")
            .and_then(|l| l.get(keys::LABEL_VERSION))
            .and_then(|v| v.as_str());
        label == Some(version)
            && ann(keys::REBOOT_NEEDED).as_deref() == Some(keys::FALSE)
            && ann(keys::REBOOT_OK).as_deref() != Some(keys::TRUE)
            && ann(keys::REBOOT_IN_PROGRESS).as_deref() != Some(keys::TRUE)
            && n.pointer("/spec/unschedulable").and_then(|u| u.as_bool()) != Some(true)
    })
}

fn version_of(round: u32) -> String {
    format!("{}.{round}.0", 5000 + round / 100)
}

pub async fn soak(env: &Env, cfg: &SoakConfig, seed: u64) -> anyhow::Result<SoakResult> {
    let names = node_names(cfg.nodes);
    let sb = sandbox_with_nodes(&names, Duration::from_secs(1)).await?;
    let mut rng = StdRng::seed_from_u64(seed);
    let real_n = (cfg.real_agents as usize).min(names.len());
    let (real_names, sim_names) = names.split_at(real_n);
    let mut real = Vec::new();
    for n in real_names {
        real.push(RealAgent::start(&sb, env, n).await?);
    }
    let groups: Vec<Vec<String>> = sim_names.chunks(50).map(<[String]>::to_vec).collect();
    let mut sim: Vec<SimAgents> = groups
        .iter()
        .map(|g| SimAgents::start(&sb, g, "soak-agents"))
        .collect::<anyhow::Result<_>>()?;
    let mut replica_n = 0;
    let mut replicas: Vec<(u32, ChildProc)> = Vec::new();
    for _ in 0..2 {
        replica_n += 1;
        replicas.push((replica_n, spawn_replica(env, &sb, cfg.max, replica_n)?));
    }
    let t0 = Instant::now();
    let minutes = |at: Instant| at.duration_since(t0).as_secs_f64() / 60.0;
    let mut offers: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut series: BTreeMap<String, Series> = BTreeMap::new();
    let (mut round, mut failovers, mut restarts) = (1u32, 0u32, 0u32);
    let mut failover_due = false;
    let (mut next_round, mut next_failover, mut next_restart, mut next_sample) = (
        t0 + cfg.round_every,
        t0 + cfg.failover_every,
        t0 + cfg.restart_every,
        t0,
    );
    let pending = Arc::new(Mutex::new(Vec::<tokio::task::JoinHandle<()>>::new()));
    let end = t0 + cfg.duration;
    // After `end`, no new round: the last ones settle (bounded).
    let settle_by = end + Duration::from_secs(120) + cfg.round_every;
    loop {
        let now = Instant::now();
        if now >= end {
            let all = names
                .iter()
                .all(|n| offers.get(n).is_none_or(|(_, v)| settled_on(&sb, n, v)));
            if all || now >= settle_by {
                break;
            }
        } else if now >= next_round {
            round += 1;
            next_round += cfg.round_every;
        }
        // Offer the current round to every node that settled on its last one.
        if now < end {
            let version = version_of(round);
            for n in &names {
                let due = match offers.get(n) {
                    None => true,
                    Some((_, v)) => *v != version && settled_on(&sb, n, v),
                };
                let host = sb.host(n).context("host")?;
                if due && host.status().current_operation == UPDATE_STATUS_IDLE {
                    let e = offers.entry(n.clone()).or_insert((0, String::new()));
                    e.0 += 1;
                    e.1 = version.clone();
                    let v = version.clone();
                    pending
                        .lock()
                        .unwrap()
                        .push(tokio::spawn(async move { host.offer_update(&v).await }));
                }
            }
            pending.lock().unwrap().retain(|t| !t.is_finished());
        }
        if now < end && now >= next_failover {
            next_failover += cfg.failover_every;
            failover_due = true;
        }
        // The leader lets its Lease go while no node needs it: the kill waits for one.
        if failover_due
            && let Some(holder) = fleet::operators::lease_holder(&sb, NAMESPACE)
            && let Some(i) = replicas
                .iter()
                .position(|(n, _)| holder.starts_with(&format!("replica-{n}_")))
        {
            // SIGKILL: nothing released, the standby waits the Lease out.
            drop(replicas.remove(i));
            failovers += 1;
            failover_due = false;
            replica_n += 1;
            replicas.push((replica_n, spawn_replica(env, &sb, cfg.max, replica_n)?));
        }
        if now < end && now >= next_restart {
            next_restart += cfg.restart_every;
            let k = rng.random_range(0..groups.len() + real.len());
            if k < groups.len() {
                sim[k] = SimAgents::start(&sb, &groups[k], "soak-agents")?;
            } else {
                let a = &mut real[k - groups.len()];
                if a.child.take().is_some() {
                    let host = sb.host(&a.node).context("host")?;
                    a.spawn(&sb, env, &host)?;
                }
            }
            restarts += 1;
        }
        // A real agent's machine going down takes its process; it starts when back up.
        for a in &mut real {
            let host = sb.host(&a.node).context("host")?;
            match (host.is_rebooting(), a.child.is_some()) {
                (true, true) => a.child = None,
                (false, false) => a.spawn(&sb, env, &host)?,
                _ => {}
            }
        }
        if now >= next_sample {
            next_sample += cfg.sample_every;
            let at = minutes(now);
            // A process sampled as it starts has no RSS yet.
            for (n, c) in &mut replicas {
                if let Ok(u) = c.usage()
                    && u.rss_mib >= 1.0
                {
                    series
                        .entry(format!("update-operator replica-{n}"))
                        .or_insert_with(|| Series {
                            what: format!("update-operator replica-{n}"),
                            samples: Vec::new(),
                        })
                        .samples
                        .push((at, u.rss_mib));
                }
            }
            for a in &mut real {
                if let Some(c) = a.child.as_mut()
                    && let Ok(u) = c.usage()
                    && u.rss_mib >= 1.0
                {
                    // Per node across its processes: each reboot starts a new one.
                    let s = series
                        .entry(format!("update-agent {}", a.node))
                        .or_insert_with(|| Series {
                            what: String::new(),
                            samples: Vec::new(),
                        });
                    s.what = format!("update-agent {} (its {} processes)", a.node, a.starts);
                    s.samples.push((at, u.rss_mib));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let minutes_run = minutes(Instant::now());
    let mut lost = Vec::new();
    let mut reboots = 0u64;
    for n in &names {
        let host = sb.host(n).context("host")?;
        reboots += u64::from(host.reboots());
        let (offered, last) = offers.get(n).cloned().unwrap_or_default();
        if u64::from(host.reboots()) != offered || !settled_on(&sb, n, &last) {
            lost.push(format!(
                "{n}: offered {offered} versions, rebooted {} times, last offered {last}, runs {}",
                host.reboots(),
                host.os_version()
            ));
        }
    }
    let (operators, agents): (Vec<Series>, Vec<Series>) = series
        .into_values()
        .partition(|s| s.what.starts_with("update-operator"));
    Ok(SoakResult {
        nodes: cfg.nodes,
        max: cfg.max,
        minutes: minutes_run,
        rounds_released: round,
        offers: offers.values().map(|(n, _)| *n).sum(),
        reboots,
        lost,
        failovers,
        agent_restarts: restarts,
        operators,
        agents,
    })
}

/// The report: bench/SOAK.md.
pub fn markdown(r: &SoakResult, machine: &str, cfg: &SoakConfig) -> String {
    let mut out = String::from("# Soak\n\n");
    out.push_str(machine);
    out.push_str(&format!(
        "\n\n{} nodes, `--max-rebooting-nodes {}`, reboots of 1 s; a new version every {:.0} s, \
         offered to each node once it runs the last; the leading `update-operator` killed \
         (SIGKILL) every {:.0} s and replaced; one group of 50 simulated agents, or one of the \
         {} real `update-agent` processes, restarted every {:.0} s; memory sampled every {:.0} s.\n\n",
        r.nodes,
        r.max,
        cfg.round_every.as_secs_f64(),
        cfg.failover_every.as_secs_f64(),
        cfg.real_agents,
        cfg.restart_every.as_secs_f64(),
        cfg.sample_every.as_secs_f64(),
    ));
    out.push_str(&format!(
        "- Ran {:.1} min: {} versions released, {} offers to nodes, {} reboots; {} operator \
         failovers, {} agent restarts.\n",
        r.minutes, r.rounds_released, r.offers, r.reboots, r.failovers, r.agent_restarts
    ));
    out.push_str(&format!(
        "- Lost or doubled (a node's reboots differ from its offers, or it does not run its last \
         version): {}.\n\n",
        if r.lost.is_empty() {
            "none".to_string()
        } else {
            r.lost.join("; ")
        }
    ));
    out.push_str(
        "| process (an agent: its node's processes one after another) | sampled over (min) | RSS first / last / max (MiB) | slope after its first 2 min (MiB/h) |\n\
         |---|---|---|---|\n",
    );
    for s in r.operators.iter().chain(&r.agents) {
        let max = s.samples.iter().map(|p| p.1).fold(0.0, f64::max);
        let (first, last) = (
            s.samples.first().map_or(0.0, |p| p.1),
            s.samples.last().map_or(0.0, |p| p.1),
        );
        out.push_str(&format!(
            "| {} | {:.1} | {:.1} / {:.1} / {:.1} | {} |\n",
            s.what,
            s.span_minutes(),
            first,
            last,
            max,
            s.slope_per_hour(2.0)
                .map_or("too short".to_string(), |v| format!("{v:+.2}"))
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_is_mib_per_hour_after_the_warmup() {
        let s = Series {
            what: "x".into(),
            // 0.5 MiB per minute after a jump in the first minute.
            samples: (0..20)
                .map(|i| {
                    (
                        f64::from(i),
                        if i == 0 {
                            100.0
                        } else {
                            10.0 + 0.5 * f64::from(i)
                        },
                    )
                })
                .collect(),
        };
        let v = s.slope_per_hour(2.0).unwrap();
        assert!((v - 30.0).abs() < 1e-9, "{v}");
        assert!(s.slope_per_hour(30.0).is_none());
    }
}
