//! Kubernetes' name grammars (apimachinery's validation), once: label and annotation keys,
//! label values, DNS labels and subdomains. Errors say what is wrong, not which value;
//! callers name the value and the flag or field.

fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// A DNS-1123 label (a namespace): 1-63 lowercase alphanumerics or `-`, starting and ending
/// with an alphanumeric.
pub fn check_dns_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.starts_with(lower_alnum)
        && s.ends_with(lower_alnum)
        && s.chars().all(|c| lower_alnum(c) || c == '-');
    if ok {
        Ok(())
    } else {
        Err("must be lowercase alphanumerics or '-', starting and ending with an alphanumeric, at most 63 characters per label".into())
    }
}

/// A DNS-1123 subdomain (most object names, a key's prefix): at most 253 characters of
/// DNS labels joined by `.`.
pub fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be 1-253 characters".into());
    }
    s.split('.').try_for_each(check_dns_label)
}

/// A qualified name (a label or annotation key): an optional DNS subdomain prefix and `/`,
/// then 1-63 alphanumerics, `-`, `_`, `.`, starting and ending with an alphanumeric.
pub fn check_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if name.is_empty() || name.len() > 63 {
        return Err("the name part must be 1-63 characters".into());
    }
    if !is_name_part(name) {
        return Err(
            "the name part must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric"
                .into(),
        );
    }
    if let Some(p) = prefix {
        check_dns_subdomain(p).map_err(|e| format!("the prefix {e}"))?;
    }
    Ok(())
}

/// A label value: empty, or at most 63 alphanumerics, `-`, `_`, `.`, starting and ending
/// with an alphanumeric.
pub fn check_label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || (v.len() <= 63 && is_name_part(v)) {
        Ok(())
    } else {
        Err("a label value must be at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric".into())
    }
}

fn is_name_part(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    s.starts_with(alnum)
        && s.ends_with(alnum)
        && s.chars()
            .all(|c| alnum(c) || c == '-' || c == '_' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn qualified_names() {
        for ok in [
            "a",
            "example.com/hook-1",
            "x_y.z",
            "A1",
            "my.domain.io/Ready",
        ] {
            assert!(check_qualified_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Example.com/a", "a/b/c", "a b", "/a", "x/"] {
            assert!(check_qualified_name(bad).is_err(), "{bad}");
        }
        assert!(check_qualified_name(&"a".repeat(64)).is_err());
        assert!(check_qualified_name(&format!("{}/a", "a".repeat(254))).is_err());
    }

    #[test]
    fn dns_names_and_label_values() {
        assert!(check_dns_label("reboot-coordinator").is_ok());
        for bad in ["", "Caps", "-a", "a-", "a.b", &"a".repeat(64)] {
            assert!(check_dns_label(bad).is_err(), "{bad}");
        }
        assert!(check_dns_subdomain("flatcar-linux-update.v1.flatcar-linux.net").is_ok());
        for bad in ["", "a..b", ".a", "a_b"] {
            assert!(check_dns_subdomain(bad).is_err(), "{bad}");
        }
        for ok in ["", "a", "1.2.3", "stable_x-Y"] {
            assert!(check_label_value(ok).is_ok(), "{ok}");
        }
        for bad in ["-a", "a b", "a/b", &"a".repeat(64)] {
            assert!(check_label_value(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        /// A valid label value is a valid unprefixed key when non-empty, and the other way.
        #[test]
        fn label_values_and_unprefixed_keys_agree(v in "[a-zA-Z0-9._/ -]{0,70}") {
            if !v.is_empty() && !v.contains('/') {
                prop_assert_eq!(check_label_value(&v).is_ok(), check_qualified_name(&v).is_ok());
            }
        }
    }
}
