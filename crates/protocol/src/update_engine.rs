//! update_engine's status (`com.coreos.update1.Manager.GetStatus` and the
//! `StatusUpdate` signal both carry these five values).

use serde::{Deserialize, Serialize};

/// Nothing to do.
pub const UPDATE_STATUS_IDLE: &str = "UPDATE_STATUS_IDLE";
/// Checking the update server.
pub const UPDATE_STATUS_CHECKING_FOR_UPDATE: &str = "UPDATE_STATUS_CHECKING_FOR_UPDATE";
/// An update was offered.
pub const UPDATE_STATUS_UPDATE_AVAILABLE: &str = "UPDATE_STATUS_UPDATE_AVAILABLE";
/// Downloading the update.
pub const UPDATE_STATUS_DOWNLOADING: &str = "UPDATE_STATUS_DOWNLOADING";
/// Verifying the download.
pub const UPDATE_STATUS_VERIFYING: &str = "UPDATE_STATUS_VERIFYING";
/// Installing the update.
pub const UPDATE_STATUS_FINALIZING: &str = "UPDATE_STATUS_FINALIZING";
/// The update is installed; a reboot activates it.
pub const UPDATE_STATUS_UPDATED_NEED_REBOOT: &str = "UPDATE_STATUS_UPDATED_NEED_REBOOT";
/// Reporting an error to the update server.
pub const UPDATE_STATUS_REPORTING_ERROR_EVENT: &str = "UPDATE_STATUS_REPORTING_ERROR_EVENT";

/// All operations update_engine is known to report.
pub const ALL_OPERATIONS: [&str; 8] = [
    UPDATE_STATUS_IDLE,
    UPDATE_STATUS_CHECKING_FOR_UPDATE,
    UPDATE_STATUS_UPDATE_AVAILABLE,
    UPDATE_STATUS_DOWNLOADING,
    UPDATE_STATUS_VERIFYING,
    UPDATE_STATUS_FINALIZING,
    UPDATE_STATUS_UPDATED_NEED_REBOOT,
    UPDATE_STATUS_REPORTING_ERROR_EVENT,
];

/// `GetStatus() -> (x last_checked_time, d progress, s current_operation, s new_version, x new_size)`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// Unix seconds of the last update check.
    pub last_checked_time: i64,
    /// Progress of the current operation, 0.0 ..= 1.0.
    pub progress: f64,
    /// One of the `UPDATE_STATUS_*` operations (unknown strings are kept as is).
    pub current_operation: String,
    /// Version of the downloaded update (empty if none).
    pub new_version: String,
    /// Size of the update in bytes.
    pub new_size: i64,
}

impl UpdateStatus {
    /// Builds a status from the D-Bus tuple, in wire order.
    pub fn from_tuple(t: (i64, f64, String, String, i64)) -> Self {
        let (last_checked_time, progress, current_operation, new_version, new_size) = t;
        Self {
            last_checked_time,
            progress,
            current_operation,
            new_version,
            new_size,
        }
    }

    /// update_engine installed an update and waits for a reboot.
    pub fn needs_reboot(&self) -> bool {
        self.current_operation == UPDATE_STATUS_UPDATED_NEED_REBOOT
    }

    /// The values of the `status`, `last-checked-time` and `new-version`
    /// annotations for this status, in that order (FLUO's formats).
    pub fn annotation_values(&self) -> [(&'static str, String); 3] {
        [
            (crate::keys::STATUS, self.current_operation.clone()),
            (
                crate::keys::LAST_CHECKED_TIME,
                self.last_checked_time.to_string(),
            ),
            (crate::keys::NEW_VERSION, self.new_version.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_reboot_only_on_updated_need_reboot() {
        for op in ALL_OPERATIONS {
            let s = UpdateStatus {
                current_operation: op.to_string(),
                ..Default::default()
            };
            assert_eq!(s.needs_reboot(), op == UPDATE_STATUS_UPDATED_NEED_REBOOT);
        }
        let s = UpdateStatus {
            current_operation: "update_status_updated_need_reboot".into(),
            ..Default::default()
        };
        assert!(!s.needs_reboot());
    }

    #[test]
    fn tuple_and_annotations() {
        let s = UpdateStatus::from_tuple((
            1_700_000_000,
            0.5,
            UPDATE_STATUS_DOWNLOADING.into(),
            "4081.2.0".into(),
            123,
        ));
        assert_eq!(s.new_size, 123);
        let a = s.annotation_values();
        assert_eq!(
            a[0],
            (crate::keys::STATUS, UPDATE_STATUS_DOWNLOADING.into())
        );
        assert_eq!(a[1], (crate::keys::LAST_CHECKED_TIME, "1700000000".into()));
        assert_eq!(a[2], (crate::keys::NEW_VERSION, "4081.2.0".into()));
    }
}
