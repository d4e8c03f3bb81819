//! Following `--reboot-sentinel`: whether the file exists, looked at every
//! [`AgentConfig::sentinel_poll`](crate::AgentConfig::sentinel_poll). Polled, not watched
//! with inotify: the file lives in a host directory mounted into the pod, where a poll of
//! one `stat` is cheap and sees every way the file can appear.

use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

/// Sends whether `path` exists into `tx` whenever that changes (`None` before the first
/// look). Never returns. An error other than "not found" (e.g. a permission problem) is
/// logged once and counts as absent, so a sentinel that cannot be read never reboots.
pub(crate) async fn follow_sentinel(
    path: &Path,
    poll: Duration,
    tx: watch::Sender<Option<bool>>,
) -> std::convert::Infallible {
    let mut last_error: Option<String> = None;
    loop {
        let present = match tokio::fs::try_exists(path).await {
            Ok(p) => {
                last_error = None;
                p
            }
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_ref() != Some(&msg) {
                    warn!(path = %path.display(), error = %msg, "cannot look at --reboot-sentinel");
                    last_error = Some(msg);
                }
                false
            }
        };
        if *tx.borrow() != Some(present) {
            info!(path = %path.display(), present, "--reboot-sentinel");
            tx.send_replace(Some(present));
        }
        tokio::time::sleep(poll).await;
    }
}
