//! The Kubernetes client of both binaries.

use anyhow::Context;

/// `--kubeconfig` if given, else in-cluster, `KUBECONFIG` or ~/.kube/config. kube's own
/// retry of 429/503 (up to 15 times, minutes in all) is off: our loops back off and log
/// themselves, and must see the errors.
pub async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    kube::Client::try_from(config(kubeconfig).await?).context("cannot build the Kubernetes client")
}

/// [`kube_client`], whose answers also keep `clock` on the API server's time.
pub async fn kube_client_with_clock(
    kubeconfig: Option<&std::path::Path>,
    clock: &crate::ServerClock,
) -> anyhow::Result<kube::Client> {
    crate::clock::client(config(kubeconfig).await?, clock)
}

async fn config(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Config> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig: cannot read {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("--kubeconfig: cannot use {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no Kubernetes configuration (in-cluster, KUBECONFIG or ~/.kube/config); use --kubeconfig",
        )?,
    };
    config.default_retry = false;
    Ok(config)
}
