//! The operator's effective scheduling settings as it publishes them on its Lease
//! ([`keys::OPERATOR_SETTINGS`]), so `fluoctl status` and `plan` see what the running
//! operator does without repeating its flags.
//!
//! The format is a JSON object of the flags' own string forms (each parses back with the
//! flag's parser) and a `version`; a reader rejects other versions instead of guessing.

use serde::{Deserialize, Serialize};

use crate::keys;
use crate::operator::{MaxRebooting, OperatorConfig, StuckNodeAction};
use crate::schedule::Schedule;
use crate::selector::LabelSelector;
use crate::window::{RebootWindow, format_go_duration, parse_go_duration};

/// The format version written; a reader accepts only this one.
pub const VERSION: u32 = 1;

/// The annotation's JSON object.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PublishedSettings {
    pub version: u32,
    /// `--max-rebooting-nodes` as given: `"2"` or `"25%"`.
    pub max_rebooting_nodes: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rebooting_nodes_per_zone: Option<String>,
    pub zone_label: String,
    /// FLUO's `--reboot-window-start` / `--reboot-window-length`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_window_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_window_length: Option<String>,
    /// `--reboot-window` (each) and `--reboot-window-timezone`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reboot_windows: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_window_timezone: Option<String>,
    pub min_reboot_interval: String,
    pub reboot_timeout: String,
    pub stuck_node_action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    #[serde(default)]
    pub before_reboot_annotations: Vec<String>,
    #[serde(default)]
    pub after_reboot_annotations: Vec<String>,
}

impl PublishedSettings {
    /// What an operator running with `cfg` publishes.
    pub fn of(cfg: &OperatorConfig) -> PublishedSettings {
        PublishedSettings {
            version: VERSION,
            max_rebooting_nodes: cfg.max_rebooting.to_string(),
            max_rebooting_nodes_per_zone: cfg.max_rebooting_per_zone.map(|m| m.to_string()),
            zone_label: cfg.zone_label.clone(),
            reboot_window_start: cfg.window.map(|w| w.start_flag()),
            reboot_window_length: cfg.window.map(|w| format_go_duration(w.length())),
            reboot_windows: cfg
                .windows
                .as_ref()
                .map(Schedule::window_flags)
                .unwrap_or_default(),
            reboot_window_timezone: cfg.windows.as_ref().map(|s| s.tz_name().to_string()),
            min_reboot_interval: format_go_duration(cfg.min_reboot_interval),
            reboot_timeout: format_go_duration(cfg.reboot_timeout),
            stuck_node_action: cfg.stuck_node_action.to_string(),
            node_selector: cfg.node_selector.as_ref().map(|s| s.to_string()),
            before_reboot_annotations: cfg.before_reboot_annotations.clone(),
            after_reboot_annotations: cfg.after_reboot_annotations.clone(),
        }
    }

    /// The annotation's value.
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the annotation's value: an error for bad JSON, another version, or a value
    /// its flag would reject.
    pub fn parse(value: &str) -> Result<PublishedSettings, String> {
        #[derive(Deserialize)]
        struct Versioned {
            version: Option<u32>,
        }
        let v: Versioned =
            serde_json::from_str(value).map_err(|e| format!("not a JSON object: {e}"))?;
        match v.version {
            Some(VERSION) => {}
            Some(n) => {
                return Err(format!(
                    "unknown format version {n} (this fluoctl reads {VERSION})"
                ));
            }
            None => return Err("no format version".into()),
        }
        let s: PublishedSettings =
            serde_json::from_str(value).map_err(|e| format!("malformed: {e}"))?;
        s.to_config()?;
        Ok(s)
    }

    /// The settings as an [`OperatorConfig`].
    pub fn to_config(&self) -> Result<OperatorConfig, String> {
        let dur = |name: &str, v: &str| {
            parse_go_duration(v).map_err(|e| format!("{name}: invalid value {v:?}: {e}"))
        };
        Ok(OperatorConfig {
            max_rebooting: self
                .max_rebooting_nodes
                .parse::<MaxRebooting>()
                .map_err(|e| e.to_string())?,
            max_rebooting_per_zone: self
                .max_rebooting_nodes_per_zone
                .as_deref()
                .map(|v| MaxRebooting::parse_flag(v, "maxRebootingNodesPerZone"))
                .transpose()
                .map_err(|e| e.to_string())?,
            zone_label: self.zone_label.clone(),
            window: RebootWindow::from_flags(
                self.reboot_window_start.as_deref(),
                self.reboot_window_length.as_deref(),
            )
            .map_err(|e| e.to_string())?,
            windows: Schedule::from_flags(
                &self.reboot_windows,
                self.reboot_window_timezone.as_deref().unwrap_or("UTC"),
            )
            .map_err(|e| e.to_string())?,
            min_reboot_interval: dur("minRebootInterval", &self.min_reboot_interval)?,
            reboot_timeout: dur("rebootTimeout", &self.reboot_timeout)?,
            stuck_node_action: match self.stuck_node_action.as_str() {
                "hold" => StuckNodeAction::Hold,
                "release" => StuckNodeAction::Release,
                v => return Err(format!("stuckNodeAction: invalid value {v:?}")),
            },
            node_selector: self
                .node_selector
                .as_deref()
                .map(LabelSelector::parse)
                .transpose()
                .map_err(|e| format!("nodeSelector: {e}"))?,
            before_reboot_annotations: self.before_reboot_annotations.clone(),
            after_reboot_annotations: self.after_reboot_annotations.clone(),
        })
    }
}

/// The settings published in Lease `annotations`: `Ok(None)` when there are none, `Err`
/// (the reason) when they cannot be used.
pub fn from_annotations(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<Option<PublishedSettings>, String> {
    match annotations.and_then(|a| a.get(keys::OPERATOR_SETTINGS)) {
        None => Ok(None),
        Some(v) => PublishedSettings::parse(v).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn round_trip(cfg: &OperatorConfig) {
        let text = PublishedSettings::of(cfg).to_annotation();
        let back = PublishedSettings::parse(&text)
            .unwrap()
            .to_config()
            .unwrap();
        assert_eq!(&back, cfg, "{text}");
    }

    #[test]
    fn the_defaults_round_trip() {
        round_trip(&OperatorConfig::default());
    }

    #[test]
    fn every_setting_round_trips() {
        let windows: Vec<String> = vec!["Mon-Fri 02:00-05:00".into(), "22:00-24:00".into()];
        round_trip(&OperatorConfig {
            max_rebooting: "25%".parse().unwrap(),
            max_rebooting_per_zone: Some("1".parse().unwrap()),
            zone_label: "example.com/rack".into(),
            window: None,
            windows: Schedule::from_flags(&windows, "Europe/Berlin").unwrap(),
            min_reboot_interval: TimeDelta::minutes(10),
            reboot_timeout: TimeDelta::seconds(3725),
            stuck_node_action: StuckNodeAction::Release,
            node_selector: Some(LabelSelector::parse("pool=a,tier notin (db,cache)").unwrap()),
            before_reboot_annotations: vec!["example.com/ok".into()],
            after_reboot_annotations: vec!["example.com/a".into(), "example.com/b".into()],
        });
        for (start, len) in [("Mon 14:00", "1h30m"), ("03:05", "7m")] {
            round_trip(&OperatorConfig {
                max_rebooting: MaxRebooting::Count(2),
                window: RebootWindow::from_flags(Some(start), Some(len)).unwrap(),
                ..Default::default()
            });
        }
    }

    #[test]
    fn the_format_is_camel_case_json_with_a_version() {
        let cfg = OperatorConfig {
            max_rebooting: MaxRebooting::Count(2),
            ..Default::default()
        };
        let v: serde_json::Value =
            serde_json::from_str(&PublishedSettings::of(&cfg).to_annotation()).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["maxRebootingNodes"], "2");
        assert_eq!(v["stuckNodeAction"], "hold");
        assert_eq!(v["rebootTimeout"], "30m0s");
    }

    #[test]
    fn bad_values_are_errors_with_a_reason() {
        let good = PublishedSettings::of(&OperatorConfig::default()).to_annotation();
        assert!(
            PublishedSettings::parse("{not json")
                .unwrap_err()
                .contains("JSON")
        );
        let v2 = good.replace("\"version\":1", "\"version\":2");
        assert!(
            PublishedSettings::parse(&v2)
                .unwrap_err()
                .contains("version 2")
        );
        assert!(
            PublishedSettings::parse("{}")
                .unwrap_err()
                .contains("version")
        );
        let bad_max = good.replace("\"maxRebootingNodes\":\"1\"", "\"maxRebootingNodes\":\"0\"");
        assert_ne!(bad_max, good);
        assert!(PublishedSettings::parse(&bad_max).is_err());
        let mut anns = std::collections::BTreeMap::new();
        assert_eq!(from_annotations(Some(&anns)), Ok(None));
        assert_eq!(from_annotations(None), Ok(None));
        anns.insert(keys::OPERATOR_SETTINGS.to_string(), "garbage".to_string());
        assert!(from_annotations(Some(&anns)).is_err());
    }
}
