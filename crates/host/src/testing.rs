//! Test harness: a private `dbus-daemon` with fake update_engine and logind
//! services, for tests of [`DbusHost`](crate::DbusHost) and of the agent on it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use host::testing::{FakeLogind, FakeUpdateEngine, TestBus};
//! use host::{DbusHost, Host, UpdateStatus};
//!
//! let bus = TestBus::start()?;
//! let idle = UpdateStatus {
//!     current_operation: "UPDATE_STATUS_IDLE".into(),
//!     ..UpdateStatus::default()
//! };
//! let engine = FakeUpdateEngine::start(bus.address(), idle).await?;
//! let logind = FakeLogind::start(bus.address()).await?;
//! let host = DbusHost::connect(Some(bus.address())).await?;
//! let statuses = host.status_updates().await?;
//! # Ok(()) }
//! ```

use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::DynamicType;
use zbus::{Connection, fdo};

use crate::UpdateStatus;
use crate::dbus::{UE_INTERFACE, UE_PATH, UE_SERVICE, UE_STATUS_SIGNAL};

/// A `dbus-daemon` on a socket in a temporary directory; killed on drop.
pub struct TestBus {
    daemon: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl TestBus {
    /// Starts `dbus-daemon` (from `PATH`) with a config that allows everything;
    /// returns once it listens.
    pub fn start() -> io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("bus.conf");
        std::fs::write(&config, bus_config(&dir.path().join("bus")))?;
        let (daemon, address) = Self::spawn(dir.path())?;
        Ok(Self {
            daemon,
            address,
            _dir: dir,
        })
    }

    /// Kills the daemon and starts a new one on the same socket, as when the system's
    /// dbus-daemon restarts: every connection drops and every name is gone.
    pub fn restart(&mut self) -> io::Result<()> {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let dir = self._dir.path().to_path_buf();
        // The dead daemon leaves its socket file behind; a new one cannot bind over it.
        let _ = std::fs::remove_file(dir.join("bus"));
        let (daemon, address) = Self::spawn(&dir)?;
        if address != self.address {
            return Err(io::Error::other(format!(
                "the restarted bus listens on {address}, not {}",
                self.address
            )));
        }
        self.daemon = daemon;
        Ok(())
    }

    fn spawn(dir: &Path) -> io::Result<(Child, String)> {
        let config = dir.join("bus.conf");
        // To a file, not a pipe: nobody reads it while the bus runs.
        let log = dir.join("dbus-daemon.log");
        let mut daemon = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        // The address is printed once the socket is listening.
        let mut line = String::new();
        let read = BufReader::new(daemon.stdout.take().expect("piped stdout")).read_line(&mut line);
        // Without the daemon's guid, as the system bus's well-known address: a client then
        // reconnects to a restarted daemon (a new guid) at the same address.
        let address: String = line
            .trim()
            .split(',')
            .filter(|kv| !kv.starts_with("guid="))
            .collect::<Vec<_>>()
            .join(",");
        if read.is_err() || address.is_empty() {
            let _ = daemon.kill();
            let _ = daemon.wait();
            let stderr = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(io::Error::other(format!(
                "dbus-daemon did not start ({read:?}): {stderr}"
            )));
        }
        Ok((daemon, address))
    }

    /// The bus address, for `DbusHost::connect(Some(..))` and the fakes.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A new plain connection to the bus (e.g. to spoof signals from).
    pub async fn connect(&self) -> zbus::Result<Connection> {
        zbus::connection::Builder::address(self.address())?
            .build()
            .await
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

fn bus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
        socket.display()
    )
}

/// Sends a `StatusUpdate` signal with any body from `conn` (to `destination`, or
/// broadcast), and returns once the bus has routed it, so a signal sent later from
/// another connection is delivered after it.
pub async fn emit_status_update<B>(
    conn: &Connection,
    destination: Option<&str>,
    body: &B,
) -> zbus::Result<()>
where
    B: serde::Serialize + DynamicType,
{
    conn.emit_signal(destination, UE_PATH, UE_INTERFACE, UE_STATUS_SIGNAL, body)
        .await?;
    // The bus handles a connection's messages in order: once this reply is back,
    // the signal has been routed.
    fdo::DBusProxy::new(conn).await?.get_id().await?;
    Ok(())
}

fn status_body(s: &UpdateStatus) -> (i64, f64, &str, &str, i64) {
    (
        s.last_checked_time,
        s.progress,
        &s.current_operation,
        &s.new_version,
        s.new_size,
    )
}

#[derive(Default)]
struct EngineState {
    status: UpdateStatus,
    callers: Vec<String>,
    before_reply: Option<UpdateStatus>,
}

struct UpdateEngineIface(Arc<Mutex<EngineState>>);

#[zbus::interface(name = "com.coreos.update1.Manager")]
impl UpdateEngineIface {
    async fn get_status(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> zbus::fdo::Result<(i64, f64, String, String, i64)> {
        let early = {
            let mut state = self.0.lock().unwrap();
            if let Some(sender) = header.sender() {
                state.callers.push(sender.to_string());
            }
            state.before_reply.take()
        };
        if let Some(early) = early {
            emitter
                .emit(UE_INTERFACE, UE_STATUS_SIGNAL, &status_body(&early))
                .await?;
        }
        let state = self.0.lock().unwrap();
        let s = &state.status;
        Ok((
            s.last_checked_time,
            s.progress,
            s.current_operation.clone(),
            s.new_version.clone(),
            s.new_size,
        ))
    }
}

/// A fake update_engine owning `com.coreos.update1`.
pub struct FakeUpdateEngine {
    conn: Connection,
    state: Arc<Mutex<EngineState>>,
}

impl FakeUpdateEngine {
    /// Serves `GetStatus` (answering `status`) and claims `com.coreos.update1`.
    pub async fn start(address: &str, status: UpdateStatus) -> zbus::Result<Self> {
        let state = Arc::new(Mutex::new(EngineState {
            status,
            ..Default::default()
        }));
        let conn = zbus::connection::Builder::address(address)?
            .serve_at(UE_PATH, UpdateEngineIface(state.clone()))?
            .name(UE_SERVICE)?
            .build()
            .await?;
        Ok(Self { conn, state })
    }

    /// This instance's unique bus name.
    pub fn unique_name(&self) -> String {
        self.conn.unique_name().expect("bus connection").to_string()
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Sets what `GetStatus` answers and emits it as a `StatusUpdate`.
    pub async fn set_status(&self, status: UpdateStatus) -> zbus::Result<()> {
        self.state.lock().unwrap().status = status.clone();
        emit_status_update(&self.conn, None, &status_body(&status)).await
    }

    /// Emits a `StatusUpdate` with any body (e.g. a malformed one) from this owner.
    pub async fn emit_raw<B>(&self, body: &B) -> zbus::Result<()>
    where
        B: serde::Serialize + DynamicType,
    {
        emit_status_update(&self.conn, None, body).await
    }

    /// Makes the next `GetStatus` emit `status` as a `StatusUpdate` just before
    /// replying: an older signal racing the reply.
    pub fn emit_before_next_reply(&self, status: UpdateStatus) {
        self.state.lock().unwrap().before_reply = Some(status);
    }

    /// Unique names of the connections that called `GetStatus`, in order.
    pub fn get_status_callers(&self) -> Vec<String> {
        self.state.lock().unwrap().callers.clone()
    }

    /// Gives up `com.coreos.update1` but stays connected (a stale old instance).
    pub async fn release_name(&self) -> zbus::Result<()> {
        self.conn.release_name(UE_SERVICE).await.map(drop)
    }

    /// Disconnects, as when update_engine exits.
    pub async fn stop(self) -> zbus::Result<()> {
        self.conn.close().await
    }
}

struct LogindState {
    calls: watch::Sender<Vec<bool>>,
    fail_with: Mutex<Option<fdo::Error>>,
}

struct LogindIface(Arc<LogindState>);

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl LogindIface {
    fn reboot(&self, interactive: bool) -> fdo::Result<()> {
        self.0.calls.send_modify(|calls| calls.push(interactive));
        match self.0.fail_with.lock().unwrap().clone() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// A fake logind owning `org.freedesktop.login1` that records `Reboot` calls.
pub struct FakeLogind {
    conn: Connection,
    state: Arc<LogindState>,
}

impl FakeLogind {
    pub async fn start(address: &str) -> zbus::Result<Self> {
        let state = Arc::new(LogindState {
            calls: watch::Sender::new(Vec::new()),
            fail_with: Mutex::new(None),
        });
        let conn = zbus::connection::Builder::address(address)?
            .serve_at("/org/freedesktop/login1", LogindIface(state.clone()))?
            .name("org.freedesktop.login1")?
            .build()
            .await?;
        Ok(Self { conn, state })
    }

    /// Makes later `Reboot` calls fail with `error` (e.g.
    /// `fdo::Error::AccessDenied(..)`), or succeed again with `None`. Calls are
    /// recorded either way.
    pub fn fail_reboots_with(&self, error: Option<fdo::Error>) {
        *self.state.fail_with.lock().unwrap() = error;
    }

    /// The `interactive` argument of every `Reboot` call so far.
    pub fn reboot_calls(&self) -> Vec<bool> {
        self.state.calls.borrow().clone()
    }

    /// Waits until at least `n` `Reboot` calls were made; returns them all.
    /// Wrap in a timeout.
    pub async fn wait_for_reboot_calls(&self, n: usize) -> Vec<bool> {
        let mut calls = self.state.calls.subscribe();
        let calls = calls
            .wait_for(|calls| calls.len() >= n)
            .await
            .expect("sender lives in self");
        calls.clone()
    }

    pub async fn stop(self) -> zbus::Result<()> {
        self.conn.close().await
    }
}
