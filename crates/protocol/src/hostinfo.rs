//! Host facts for the `id`, `group` and `version` labels, parsed from the
//! text of /etc/os-release and the update.conf files (the shell reads them).
//!
//! Values are turned into valid Kubernetes label values by
//! [`sanitize_label_value`]: characters outside `[A-Za-z0-9._-]` become `_`,
//! leading/trailing non-alphanumerics are trimmed, the result is cut to 63
//! characters; a value that ends up empty is dropped (`None`, the label is
//! removed).

use serde::{Deserialize, Serialize};

/// The host's facts as label values (already sanitized).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostInfo {
    /// `ID` from os-release (e.g. `flatcar`).
    pub id: Option<String>,
    /// `VERSION` from os-release (e.g. `4081.2.0`).
    pub version: Option<String>,
    /// `GROUP` from update.conf (e.g. `stable`).
    pub group: Option<String>,
}

impl HostInfo {
    /// Builds the host info from the files' contents (`None` = file missing,
    /// which is not an error). `GROUP` in /etc/flatcar/update.conf overrides
    /// the one in /usr/share/flatcar/update.conf.
    pub fn from_files(
        os_release: Option<&str>,
        usr_update_conf: Option<&str>,
        etc_update_conf: Option<&str>,
    ) -> HostInfo {
        let os = os_release.map(parse_env_file).unwrap_or_default();
        let group = etc_update_conf
            .and_then(|t| lookup(&parse_env_file(t), "GROUP"))
            .or_else(|| usr_update_conf.and_then(|t| lookup(&parse_env_file(t), "GROUP")));
        HostInfo {
            id: lookup(&os, "ID").and_then(|v| sanitize_label_value(&v)),
            version: lookup(&os, "VERSION").and_then(|v| sanitize_label_value(&v)),
            group: group.and_then(|v| sanitize_label_value(&v)),
        }
    }
}

fn lookup(pairs: &[(String, String)], key: &str) -> Option<String> {
    // The last assignment wins, as when the file is sourced by a shell.
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

/// Parses os-release style `KEY=value` lines. Blank lines and `#` comments are
/// skipped, as are lines without `=`; an optional `export ` is ignored. Values
/// may be double-quoted (with `\"`, `\\`, `\$`, `` \` `` escapes) or
/// single-quoted (taken literally); unquoted values are trimmed and a trailing
/// ` #comment` is dropped.
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        out.push((k.to_string(), unquote(v.trim())));
    }
    out
}

fn unquote(v: &str) -> String {
    let mut chars = v.chars();
    match chars.next() {
        Some('"') => {
            let mut s = String::new();
            let mut it = chars;
            while let Some(c) = it.next() {
                match c {
                    '"' => break,
                    '\\' => match it.next() {
                        Some(e @ ('"' | '\\' | '$' | '`')) => s.push(e),
                        Some(e) => {
                            s.push('\\');
                            s.push(e);
                        }
                        None => s.push('\\'),
                    },
                    c => s.push(c),
                }
            }
            s
        }
        Some('\'') => chars.take_while(|&c| c != '\'').collect(),
        _ => {
            let v = match v.find(" #") {
                Some(i) => &v[..i],
                None => v,
            };
            v.trim().to_string()
        }
    }
}

/// Turns `raw` into a valid Kubernetes label value, or `None` if nothing
/// usable is left (see the module docs for the rules).
pub fn sanitize_label_value(raw: &str) -> Option<String> {
    let replaced: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = replaced.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    // All characters are ASCII now, so byte slicing is safe.
    let cut = &trimmed[..trimmed.len().min(63)];
    let cut = cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if cut.is_empty() {
        None
    } else {
        Some(cut.to_string())
    }
}

/// Whether `v` is a valid Kubernetes label value (empty is valid).
pub fn is_valid_label_value(v: &str) -> bool {
    crate::names::check_label_value(v).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OS_RELEASE: &str = r#"NAME="Flatcar Container Linux by Kinvolk"
ID=flatcar
ID_LIKE=coreos
VERSION=4081.2.0
VERSION_ID=4081.2.0
BUILD_ID=2024-08-26-1700
SYSEXT_LEVEL=1.0
PRETTY_NAME="Flatcar Container Linux by Kinvolk 4081.2.0 (Oklo)"
ANSI_COLOR="38;5;75"
HOME_URL="https://flatcar.org/"
"#;

    #[test]
    fn parses_flatcar_os_release() {
        let h = HostInfo::from_files(Some(OS_RELEASE), None, None);
        assert_eq!(h.id.as_deref(), Some("flatcar"));
        assert_eq!(h.version.as_deref(), Some("4081.2.0"));
        assert_eq!(h.group, None);
    }

    #[test]
    fn strips_quotes() {
        let h = HostInfo::from_files(
            Some("ID=\"flatcar\"\nVERSION='3815.2.5'\n"),
            Some("GROUP=\"beta\"\n"),
            None,
        );
        assert_eq!(h.id.as_deref(), Some("flatcar"));
        assert_eq!(h.version.as_deref(), Some("3815.2.5"));
        assert_eq!(h.group.as_deref(), Some("beta"));
    }

    #[test]
    fn etc_update_conf_overrides_usr() {
        let usr = "SERVER=https://public.update.flatcar-linux.net/v1/update/\nGROUP=stable\n";
        let etc = "# local\nGROUP=\"lts\"\n";
        let h = HostInfo::from_files(None, Some(usr), Some(etc));
        assert_eq!(h.group.as_deref(), Some("lts"));
        // etc without GROUP does not hide usr's
        let h = HostInfo::from_files(None, Some(usr), Some("SERVER=x\n"));
        assert_eq!(h.group.as_deref(), Some("stable"));
        // only etc
        let h = HostInfo::from_files(None, None, Some("GROUP=alpha"));
        assert_eq!(h.group.as_deref(), Some("alpha"));
    }

    #[test]
    fn missing_files_are_not_fatal() {
        assert_eq!(HostInfo::from_files(None, None, None), HostInfo::default());
        assert_eq!(
            HostInfo::from_files(Some(""), Some(""), Some("")),
            HostInfo::default()
        );
    }

    #[test]
    fn env_file_details() {
        let p = parse_env_file(
            "# c\n\n  export A=1\nB = \"x \\\"y\\\" \\$z\"\nC=plain # comment\nbroken line\nD=''\nA=2\n-X=1\n",
        );
        assert_eq!(
            p,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "x \"y\" $z".into()),
                ("C".into(), "plain".into()),
                ("D".into(), "".into()),
                ("A".into(), "2".into()),
            ]
        );
        assert_eq!(lookup(&p, "A").as_deref(), Some("2"));
    }

    #[test]
    fn sanitizes_label_values() {
        assert_eq!(
            sanitize_label_value("4081.2.0").as_deref(),
            Some("4081.2.0")
        );
        assert_eq!(
            sanitize_label_value("3510.2.0+dev").as_deref(),
            Some("3510.2.0_dev")
        );
        assert_eq!(
            sanitize_label_value("my group").as_deref(),
            Some("my_group")
        );
        assert_eq!(sanitize_label_value("-x-").as_deref(), Some("x"));
        assert_eq!(sanitize_label_value(""), None);
        assert_eq!(sanitize_label_value("+++"), None);
        assert_eq!(sanitize_label_value("é"), None);
        let long = format!("{}-{}", "a".repeat(62), "b".repeat(10));
        let s = sanitize_label_value(&long).unwrap();
        assert_eq!(s, "a".repeat(62)); // cut at 63 = "a"*62 + "-", then trimmed
        let h = HostInfo::from_files(Some("ID=\"\"\nVERSION=\"1.0 beta\""), None, None);
        assert_eq!(h.id, None);
        assert_eq!(h.version.as_deref(), Some("1.0_beta"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn sanitized_values_are_valid(s in any::<String>()) {
            if let Some(v) = sanitize_label_value(&s) {
                prop_assert!(is_valid_label_value(&v), "{v:?}");
                prop_assert!(!v.is_empty());
            }
        }

        #[test]
        fn valid_values_are_kept(s in "[a-z0-9]([a-zA-Z0-9._-]{0,61}[a-z0-9])?") {
            prop_assert_eq!(sanitize_label_value(&s), Some(s.clone()));
        }

        #[test]
        fn env_parsing_never_panics(s in any::<String>()) {
            let _ = HostInfo::from_files(Some(&s), Some(&s), Some(&s));
        }
    }
}
