//! The API server's clock, read from the `Date` header of its answers.
//!
//! The operator stamps grants with its clock (`granted-at`, `grant-expires`, the end of the
//! reboot window); a node whose clock is minutes off would otherwise start a drain after the
//! window closed, or take a grant for expired that is not. The agent judges those times on
//! the API server's clock instead: every answer carries it (`Date`, whole seconds), and the
//! offset to the local clock is kept from the latest one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::task::{Context, Poll};
use std::time::SystemTime;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use futures::future::BoxFuture;

/// A handle on the API server's time; clones share it. Until an answer was seen (or when the
/// client was not built with [`client`]) it is the local clock.
#[derive(Clone, Default)]
pub struct ServerClock {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServerClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerClock")
            .field("offset", &self.offset())
            .field("local_skew", &self.inner.local_skew)
            .finish()
    }
}

#[derive(Default)]
struct Inner {
    /// Server minus local, in milliseconds.
    offset_ms: AtomicI64,
    seen: AtomicBool,
    /// Simulations only: how far this machine's own clock is off.
    local_skew: TimeDelta,
}

impl ServerClock {
    /// A clock on a machine whose own clock is `skew` off (the sandbox's simulated nodes).
    pub fn with_local_skew(skew: TimeDelta) -> ServerClock {
        ServerClock {
            inner: Arc::new(Inner {
                local_skew: skew,
                ..Inner::default()
            }),
        }
    }

    fn local_now(&self) -> DateTime<Utc> {
        Utc::now() + self.inner.local_skew
    }

    /// The API server's time now, as far as its answers tell.
    pub fn now(&self) -> DateTime<Utc> {
        self.local_now() + TimeDelta::milliseconds(self.inner.offset_ms.load(Ordering::Relaxed))
    }

    /// Server minus local clock, once an answer was seen.
    pub fn offset(&self) -> Option<TimeDelta> {
        self.inner
            .seen
            .load(Ordering::Relaxed)
            .then(|| TimeDelta::milliseconds(self.inner.offset_ms.load(Ordering::Relaxed)))
    }

    /// Takes the server's time from an answer's `Date` header. `Date` is truncated to the
    /// second, so the server's clock read somewhere in the second after it; the end of that
    /// second is taken: a grant then looks expired up to a second early, never late.
    pub fn observe(&self, headers: &http::HeaderMap) {
        let Some(date) = headers
            .get(http::header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d).ok())
        else {
            return;
        };
        let server = DateTime::<Utc>::from(date) + TimeDelta::seconds(1);
        let offset = (server - self.local_now()).num_milliseconds();
        self.inner.offset_ms.store(offset, Ordering::Relaxed);
        self.inner.seen.store(true, Ordering::Relaxed);
    }

    /// The server's time as the `Date` header of an answer at local time `at` would say.
    pub fn http_date(at: SystemTime) -> String {
        httpdate::fmt_http_date(at)
    }
}

/// A Kubernetes client whose every answer updates `clock`.
pub fn client(config: kube::Config, clock: &ServerClock) -> anyhow::Result<kube::Client> {
    Ok(kube::client::ClientBuilder::try_from(config)
        .context("cannot build the Kubernetes client")?
        .with_layer(&ClockLayer(clock.clone()))
        .build())
}

#[derive(Clone)]
struct ClockLayer(ServerClock);

impl<S> tower::Layer<S> for ClockLayer {
    type Service = ClockService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClockService {
            inner,
            clock: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct ClockService<S> {
    inner: S,
    clock: ServerClock,
}

impl<S, Req, B> tower::Service<Req> for ClockService<S>
where
    S: tower::Service<Req, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let clock = self.clock.clone();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let resp = answer.await?;
            clock.observe(resp.headers());
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(date: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::DATE, date.parse().unwrap());
        h
    }

    #[test]
    fn a_skewed_local_clock_reads_the_servers_time() {
        let clock = ServerClock::with_local_skew(TimeDelta::minutes(-7));
        assert!(clock.offset().is_none());
        let before = Utc::now();
        clock.observe(&headers(&ServerClock::http_date(SystemTime::now())));
        let now = clock.now();
        // Local is 7 minutes behind; the server's time is read within its second.
        assert!(
            now >= before && now <= Utc::now() + TimeDelta::milliseconds(1100),
            "{now}"
        );
        let off = clock.offset().unwrap();
        assert!(
            (off - TimeDelta::minutes(7)).num_milliseconds().abs() <= 1100,
            "{off}"
        );
    }

    #[test]
    fn a_missing_or_malformed_date_changes_nothing() {
        let clock = ServerClock::default();
        clock.observe(&http::HeaderMap::new());
        clock.observe(&headers("yesterday"));
        assert!(clock.offset().is_none());
        let d = (clock.now() - Utc::now()).num_milliseconds().abs();
        assert!(d < 100, "{d}");
    }
}
