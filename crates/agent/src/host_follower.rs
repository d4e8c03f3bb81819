//! Following update_engine on the host: its status stream, reopened whenever it breaks.
//!
//! Kept apart from the decisions so a D-Bus hiccup never stalls them: the node loop only
//! sees the newest status through a `watch` channel.

use std::time::Duration;

use futures::StreamExt;
use host::{Host, UpdateStatus};
use shell::Backoff;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Follows update_engine's status into `tx`, reopening the stream with backoff whenever it
/// fails or ends. Never returns. Runs inside [`crate::run`]'s span, which names the node.
pub(crate) async fn follow_host<H: Host>(
    host: &H,
    tx: watch::Sender<Option<UpdateStatus>>,
) -> std::convert::Infallible {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        match host.status_updates().await {
            Ok(mut statuses) => {
                info!("following update_engine");
                let mut first = true;
                while let Some(status) = statuses.next().await {
                    // Only a stream that delivers counts as recovered.
                    if first {
                        backoff.reset();
                        first = false;
                    }
                    debug!(?status, "update_engine status");
                    tx.send_replace(Some(status));
                }
                warn!("lost update_engine's status stream; reconnecting");
            }
            Err(e) => warn!(error = %e, "cannot follow update_engine; retrying"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
