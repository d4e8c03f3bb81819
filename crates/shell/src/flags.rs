//! Go-style command lines, so both binaries take FLUO's spellings: single-dash long flags
//! (`-node=x`), Go's booleans and Go's durations, each value parsed into its type by clap.

use std::ffi::OsString;
use std::time::Duration;

/// Rewrites `-name[=v]` to `--name[=v]` for `cmd`'s long flags, as Go's flag package
/// accepts both; values, unknown flags and everything after `--` are left alone.
pub fn go_style<I, T>(cmd: &clap::Command, args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let longs: Vec<&str> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long())
        .chain(["help", "version"])
        .collect();
    let mut out = Vec::new();
    let mut rest_verbatim = false;
    for (i, a) in args.into_iter().enumerate() {
        let a: OsString = a.into();
        if i == 0 || rest_verbatim {
            out.push(a);
            continue;
        }
        if a == "--" {
            rest_verbatim = true;
            out.push(a);
            continue;
        }
        let rewritten = a.to_str().and_then(|s| {
            let name = s.strip_prefix('-').filter(|n| !n.starts_with('-'))?;
            let flag = name.split('=').next().unwrap_or(name);
            longs.contains(&flag).then(|| format!("-{s}"))
        });
        out.push(rewritten.map(OsString::from).unwrap_or(a));
    }
    out
}

/// Go's `strconv.ParseBool`, as FLUO's flags: 1, t, T, TRUE, true, True, 0, f, F, FALSE,
/// false, False.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// A Go duration (`time.ParseDuration`: `90s`, `10m`, `1h30m`, `1.5s`, `0`) that is not
/// negative.
pub fn duration(s: &str) -> Result<Duration, String> {
    let d = protocol::window::parse_go_duration(s.trim())?;
    d.to_std()
        .map_err(|_| format!("invalid duration {s:?}: must not be negative"))
}

/// A Go duration more than zero.
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err("must be more than zero".into()),
        d => Ok(d),
    }
}

/// Whole seconds (FLUO's `--grace-period 600`) or a Go duration; more than zero.
pub fn seconds_or_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = t.parse().map_err(|_| "too large".to_string())?;
        return positive_duration(&format!("{secs}s"));
    }
    positive_duration(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let s = Duration::from_secs_f64;
        assert_eq!(seconds_or_duration("600"), Ok(s(600.0)));
        assert_eq!(seconds_or_duration("10m"), Ok(s(600.0)));
        assert_eq!(seconds_or_duration("1h30m"), Ok(s(5400.0)));
        assert_eq!(seconds_or_duration("1.5s"), Ok(s(1.5)));
        assert_eq!(seconds_or_duration("300ms"), Ok(s(0.3)));
        assert_eq!(seconds_or_duration("2m3.5s"), Ok(s(123.5)));
        for bad in [
            "", "0", "0s", "-5", "-5s", "abc", "10x", "s", "1..2s", "1h-2m", "5 m",
        ] {
            assert!(seconds_or_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        assert_eq!(duration("0s"), Ok(Duration::ZERO));
        assert!(duration("-1m").unwrap_err().contains("negative"));
        assert!(positive_duration("0s").is_err());
        assert!(
            duration("600").is_err(),
            "a bare number is seconds only where FLUO took it"
        );
    }

    #[test]
    fn go_bools() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(t), Ok(true));
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(f), Ok(false));
        }
        for bad in ["yes", "no", "on", "", "tRUE"] {
            assert!(parse_bool(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn go_style_rewrites_only_known_long_flags() {
        let cmd = clap::Command::new("x")
            .arg(clap::Arg::new("node").long("node"))
            .arg(clap::Arg::new("grace-period").long("grace-period"));
        let v = go_style(&cmd, ["x", "-node", "-grace-period", "--", "-node"]);
        assert_eq!(v, ["x", "--node", "--grace-period", "--", "-node"]);
        let v = go_style(&cmd, ["x", "--node=-node", "-h", "-unknown", "-help"]);
        assert_eq!(v, ["x", "--node=-node", "-h", "-unknown", "--help"]);
    }
}
