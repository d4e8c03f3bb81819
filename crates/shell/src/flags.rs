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

/// Parses `args` (the program name first) into `P`, taking Go-style single-dash flags; also
/// returns clap's matches, which tell where each value came from. Empty environment
/// variables are ignored, and a bad value from a flag's variable is reported naming the
/// variable as well as the flag.
pub fn parse_matches<P, I, T>(args: I) -> Result<(P, clap::ArgMatches), clap::Error>
where
    P: clap::Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut cmd = P::command();
    // FLUO's SetFlagsFromEnv ignores empty variables: a flag whose variable is empty is as
    // if the variable were not set (its default applies).
    let empty: Vec<String> = cmd
        .get_arguments()
        .filter(|a| {
            a.get_env()
                .is_some_and(|e| std::env::var_os(e).is_some_and(|v| v.is_empty()))
        })
        .map(|a| a.get_id().to_string())
        .collect();
    for id in empty {
        cmd = cmd.mut_arg(id, |a| a.env(None));
    }
    let argv = go_style(&cmd, args);
    let m = cmd
        .try_get_matches_from_mut(&argv)
        .map_err(|e| note_env_source(&mut cmd, &argv, e))?;
    Ok((P::from_arg_matches(&m)?, m))
}

/// clap names the flag of a bad value; FLUO's users set flags through environment
/// variables, so say when the value came from one (the flag was not on the command line).
fn note_env_source(cmd: &mut clap::Command, argv: &[OsString], e: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::ValueValidation && e.kind() != ErrorKind::InvalidValue {
        return e;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return e;
    };
    let long = arg
        .trim_start_matches('-')
        .split([' ', '=', '['])
        .next()
        .unwrap_or_default()
        .to_string();
    let Some(env) = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some(long.as_str()))
        .and_then(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned())
    else {
        return e;
    };
    let flag = format!("--{long}");
    let on_command_line = argv.iter().skip(1).any(|a| {
        a.to_str()
            .is_some_and(|a| a == flag || a.starts_with(&format!("{flag}=")))
    });
    if on_command_line || std::env::var_os(&env).is_none_or(|v| v.is_empty()) {
        return e;
    }
    let value = match e.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) => format!(" {v:?}"),
        _ => String::new(),
    };
    let why = std::error::Error::source(&e)
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    cmd.error(
        ErrorKind::ValueValidation,
        format!("invalid value{value} for '{flag}' (from {env}){why}"),
    )
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
    match seconds_or_duration_or_zero(s)? {
        d if d.is_zero() => Err("must be more than zero".into()),
        d => Ok(d),
    }
}

/// Whole seconds or a Go duration, zero allowed (where `0` turns a wait off).
pub fn seconds_or_duration_or_zero(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = t.parse().map_err(|_| "too large".to_string())?;
        return duration(&format!("{secs}s"));
    }
    duration(t)
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
            if !bad.starts_with('0') {
                assert!(seconds_or_duration_or_zero(bad).is_err(), "{bad:?}");
            }
        }
        assert_eq!(seconds_or_duration_or_zero("0"), Ok(Duration::ZERO));
        assert_eq!(seconds_or_duration_or_zero("30"), Ok(s(30.0)));
        assert_eq!(seconds_or_duration_or_zero("2m"), Ok(s(120.0)));
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
