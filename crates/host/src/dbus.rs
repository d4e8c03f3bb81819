//! [`Host`] over D-Bus: update_engine for the status, logind for the reboot.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use tokio::sync::Mutex;
use tracing::{info, warn};
use zbus::fdo::DBusProxy;
use zbus::message::{Sequence, Type};
use zbus::proxy::CacheProperties;
use zbus::{Connection, MatchRule, Message, MessageStream};

use crate::{Host, HostError, UpdateStatus};

pub(crate) const UE_SERVICE: &str = "com.coreos.update1";
pub(crate) const UE_PATH: &str = "/com/coreos/update1";
pub(crate) const UE_INTERFACE: &str = "com.coreos.update1.Manager";
pub(crate) const UE_STATUS_SIGNAL: &str = "StatusUpdate";
const STATUS_SIGNATURE: &str = "xdssx";
const BUS_SERVICE: &str = "org.freedesktop.DBus";

/// Bounds every method call so a hung update_engine or logind cannot hang the agent.
const METHOD_TIMEOUT: Duration = Duration::from_secs(30);

#[zbus::proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1"
)]
trait Logind {
    fn reboot(&self, interactive: bool) -> zbus::Result<()>;
}

/// The real host: update_engine and logind on a D-Bus bus (the system bus by default).
pub struct DbusHost {
    address: Option<String>,
    /// Used for reboots; reopened if the bus dropped it, so a restarted bus does not
    /// make every later reboot attempt fail.
    conn: Mutex<Connection>,
}

impl DbusHost {
    /// Connects to `address` (a D-Bus address such as `unix:path=/run/dbus/system_bus_socket`),
    /// or to the system bus if `None`. Fails early if the bus is unreachable.
    pub async fn connect(address: Option<&str>) -> Result<Self, HostError> {
        let address = address.map(str::to_owned);
        let conn = open(address.as_deref()).await?;
        Ok(Self {
            address,
            conn: Mutex::new(conn),
        })
    }

    async fn connection(&self) -> Result<Connection, HostError> {
        let mut conn = self.conn.lock().await;
        if conn.is_closed() {
            *conn = open(self.address.as_deref()).await?;
        }
        Ok(conn.clone())
    }
}

impl Host for DbusHost {
    async fn status_updates(&self) -> Result<BoxStream<'static, UpdateStatus>, HostError> {
        // A connection of its own: its match rules and queue die with the stream, and
        // the next call after a lost bus gets a fresh socket.
        let conn = open(self.address.as_deref()).await?;
        let mut follower = StatusFollower::subscribe(conn).await?;
        let first = follower.initial_status().await?;
        let rest = stream::unfold(follower, |mut f| async move {
            f.next_status().await.map(|status| (status, f))
        });
        Ok(stream::iter(first).chain(rest).boxed())
    }

    async fn reboot(&self) -> Result<(), HostError> {
        let conn = self.connection().await?;
        let logind = LogindProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(HostError::Reboot)?;
        logind.reboot(false).await.map_err(HostError::Reboot)
    }
}

async fn open(address: Option<&str>) -> Result<Connection, HostError> {
    let connect_error = |error| HostError::Connect {
        address: address.unwrap_or("the system bus").to_owned(),
        error,
    };
    let builder = match address {
        Some(address) => zbus::connection::Builder::address(address),
        None => zbus::connection::Builder::system(),
    }
    .map_err(connect_error)?;
    builder
        .method_timeout(METHOD_TIMEOUT)
        .build()
        .await
        .map_err(connect_error)
}

/// Follows update_engine's status on a dedicated connection.
struct StatusFollower {
    conn: Connection,
    /// Every message of the connection: one stream keeps StatusUpdate and
    /// NameOwnerChanged in the order the bus sent them.
    messages: MessageStream,
    /// Unique name currently owning `com.coreos.update1`; only its signals count.
    owner: Option<String>,
    /// Position of the last GetStatus reply: signals received before it are older
    /// than the status it returned and must not overwrite it.
    fresh_from: Sequence,
}

enum Signal {
    Status,
    OwnerChanged,
    Other,
}

impl StatusFollower {
    async fn subscribe(conn: Connection) -> Result<Self, HostError> {
        // The stream exists before the match rules, so nothing routed after them is missed.
        let messages = MessageStream::from(&conn);
        let dbus = DBusProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(HostError::Subscribe)?;
        for rule in match_rules().map_err(HostError::Subscribe)? {
            dbus.add_match_rule(rule)
                .await
                .map_err(|e| HostError::Subscribe(e.into()))?;
        }
        Ok(Self {
            conn,
            messages,
            owner: None,
            fresh_from: Sequence::default(),
        })
    }

    /// The status at start, or `None` if update_engine is not on the bus yet (its
    /// status then comes when it claims its name).
    async fn initial_status(&mut self) -> Result<Option<UpdateStatus>, HostError> {
        // Asking the well-known name (which also activates update_engine if needed)
        // gives the status and, as the reply's sender, its owner in one answer.
        match self.get_status(UE_SERVICE).await {
            Ok(status) => Ok(Some(status)),
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown"
                    || name.as_str() == "org.freedesktop.DBus.Error.NameHasNoOwner" =>
            {
                info!("update_engine is not on the bus; waiting for it");
                Ok(None)
            }
            Err(e) => Err(HostError::GetStatus(e)),
        }
    }

    async fn get_status(&mut self, destination: &str) -> zbus::Result<UpdateStatus> {
        // A raw call rather than a proxy: the reply's sender and position are needed.
        let reply = self
            .conn
            .call_method(
                Some(destination),
                UE_PATH,
                Some(UE_INTERFACE),
                "GetStatus",
                &(),
            )
            .await?;
        let status = parse_status(&reply)?;
        self.owner = reply.header().sender().map(|s| s.to_string());
        self.fresh_from = reply.recv_position();
        Ok(status)
    }

    /// The next status to report; `None` once the connection is gone.
    async fn next_status(&mut self) -> Option<UpdateStatus> {
        loop {
            let msg = match self.messages.next().await? {
                Ok(msg) => msg,
                Err(e) => {
                    warn!(error = %e, "lost the D-Bus connection");
                    return None;
                }
            };
            if msg.message_type() != Type::Signal || msg.recv_position() < self.fresh_from {
                continue;
            }
            let status = match classify(&msg) {
                Signal::Status => self.status_update(&msg),
                Signal::OwnerChanged => self.owner_changed(&msg).await,
                Signal::Other => None,
            };
            if status.is_some() {
                return status;
            }
        }
    }

    fn status_update(&self, msg: &Message) -> Option<UpdateStatus> {
        let header = msg.header();
        let sender = header.sender().map(|s| s.as_str());
        // Anyone can send a signal to us directly, bypassing the bus's sender match.
        if sender.is_none() || sender != self.owner.as_deref() {
            warn!(
                sender,
                owner = self.owner.as_deref(),
                "ignoring StatusUpdate not sent by the owner of {UE_SERVICE}"
            );
            return None;
        }
        match parse_status(msg) {
            Ok(status) => Some(status),
            Err(e) => {
                warn!(sender, error = %e, "ignoring malformed StatusUpdate");
                None
            }
        }
    }

    async fn owner_changed(&mut self, msg: &Message) -> Option<UpdateStatus> {
        // Only the bus itself may tell who owns a name.
        if msg.header().sender().map(|s| s.as_str()) != Some(BUS_SERVICE) {
            warn!(sender = ?msg.header().sender(), "ignoring NameOwnerChanged not sent by the bus");
            return None;
        }
        let (name, _old, new) = match msg.body().deserialize::<(String, String, String)>() {
            Ok(args) => args,
            Err(e) => {
                warn!(error = %e, "ignoring malformed NameOwnerChanged");
                return None;
            }
        };
        if name != UE_SERVICE || self.owner.as_deref() == Some(new.as_str()) {
            return None;
        }
        if new.is_empty() {
            info!("update_engine left the bus");
            self.owner = None;
            return None;
        }
        info!(owner = %new, "update_engine (re)started; asking for its status");
        // Its signals count even if GetStatus below fails.
        self.owner = Some(new.clone());
        match self.get_status(&new).await {
            Ok(status) => Some(status),
            Err(e) => {
                warn!(error = %e, "GetStatus after update_engine restart failed");
                None
            }
        }
    }
}

fn classify(msg: &Message) -> Signal {
    let header = msg.header();
    let path = header.path().map(|p| p.as_str());
    let interface = header.interface().map(|i| i.as_str());
    let member = header.member().map(|m| m.as_str());
    match (path, interface, member) {
        (Some(UE_PATH), Some(UE_INTERFACE), Some(UE_STATUS_SIGNAL)) => Signal::Status,
        (Some("/org/freedesktop/DBus"), Some(BUS_SERVICE), Some("NameOwnerChanged")) => {
            Signal::OwnerChanged
        }
        _ => Signal::Other,
    }
}

fn match_rules() -> zbus::Result<[MatchRule<'static>; 2]> {
    Ok([
        // The bus routes only signals from the current owner of the name.
        MatchRule::builder()
            .msg_type(Type::Signal)
            .sender(UE_SERVICE)?
            .path(UE_PATH)?
            .interface(UE_INTERFACE)?
            .member(UE_STATUS_SIGNAL)?
            .build(),
        MatchRule::builder()
            .msg_type(Type::Signal)
            .sender(BUS_SERVICE)?
            .interface(BUS_SERVICE)?
            .member("NameOwnerChanged")?
            .arg(0, UE_SERVICE)?
            .build(),
    ])
}

fn parse_status(msg: &Message) -> zbus::Result<UpdateStatus> {
    let body = msg.body();
    if body.signature() != STATUS_SIGNATURE {
        return Err(zbus::Error::Failure(format!(
            "expected body ({STATUS_SIGNATURE}), got ({})",
            body.signature()
        )));
    }
    let status = UpdateStatus::from_tuple(body.deserialize()?);
    check_status(&status).map_err(zbus::Error::Failure)?;
    Ok(status)
}

/// Longest `current_operation` accepted (the real ones are about 35 bytes).
const MAX_OPERATION_LEN: usize = 64;
/// Longest `new_version` accepted (the real ones look like `4081.2.0`).
const MAX_VERSION_LEN: usize = 128;

/// Rejects values update_engine never sends: they would end up in Node
/// annotations (a 1 MiB version exceeds the API's limit) or mean a broken or
/// spoofing sender. The error names the field.
fn check_status(s: &UpdateStatus) -> Result<(), String> {
    let op = &s.current_operation;
    if op.is_empty()
        || op.len() > MAX_OPERATION_LEN
        || !op
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!(
            "current_operation {:?} is not an update_engine operation (1 to {MAX_OPERATION_LEN} characters A-Z, 0-9, _)",
            truncated(op)
        ));
    }
    if s.new_version.len() > MAX_VERSION_LEN || s.new_version.chars().any(char::is_control) {
        return Err(format!(
            "new_version {:?} ({} bytes) is not a version (at most {MAX_VERSION_LEN} bytes, no control characters)",
            truncated(&s.new_version),
            s.new_version.len()
        ));
    }
    if !(0.0..=1.0).contains(&s.progress) {
        return Err(format!("progress {} is not within 0..1", s.progress));
    }
    if s.new_size < 0 {
        return Err(format!("new_size {} is negative", s.new_size));
    }
    if s.last_checked_time < 0 {
        return Err(format!(
            "last_checked_time {} is negative",
            s.last_checked_time
        ));
    }
    Ok(())
}

/// The start of `s`, for messages about values that may be huge.
fn truncated(s: &str) -> &str {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
