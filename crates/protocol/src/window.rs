//! Reboot windows, as FLUO's `--reboot-window-start` / `--reboot-window-length`.
//!
//! Start: `"Mon 14:00"` (weekly; weekday case-insensitive, 3-letter or full
//! name) or `"14:00"` (daily); hour 0-23 with one or two digits, minutes two
//! digits. Length: a Go duration (`"1h30m"`, `"90m"`, `"3600s"`, `"1.5h"`),
//! positive, shorter than 24h for a daily window and shorter than 7 days for
//! a weekly one. All times are UTC. A window is the half-open interval
//! `[start, start + length)`, repeated every day or week.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc, Weekday};

/// The start flag's name.
pub const START_FLAG: &str = "--reboot-window-start";
/// The length flag's name.
pub const LENGTH_FLAG: &str = "--reboot-window-length";

const DAY: i64 = 86_400;
const WEEK: i64 = 7 * DAY;
/// 1970-01-05T00:00:00Z, a Monday.
const MONDAY_EPOCH: i64 = 4 * DAY;

/// A bad window flag. The message starts with the flag's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// `--reboot-window-start` is invalid.
    #[error("--reboot-window-start: invalid value {value:?}: {reason}")]
    Start {
        /// The value given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// `--reboot-window-length` is invalid.
    #[error("--reboot-window-length: invalid value {value:?}: {reason}")]
    Length {
        /// The value given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// Only one of the two flags was given.
    #[error("{missing}: required when {given} is set (give both or neither)")]
    Incomplete {
        /// The flag that is missing.
        missing: &'static str,
        /// The flag that was given.
        given: &'static str,
    },
}

impl WindowError {
    /// The flag this error is about.
    pub fn flag(&self) -> &'static str {
        match self {
            WindowError::Start { .. } => START_FLAG,
            WindowError::Length { .. } => LENGTH_FLAG,
            WindowError::Incomplete { missing, .. } => missing,
        }
    }
}

/// A daily or weekly reboot window in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebootWindow {
    weekday: Option<Weekday>,
    /// Minutes after midnight.
    start_minute: u32,
    length: TimeDelta,
}

fn parse_weekday(s: &str) -> Option<Weekday> {
    use Weekday::*;
    let l = s.to_ascii_lowercase();
    let all = [
        (Mon, "mon", "monday"),
        (Tue, "tue", "tuesday"),
        (Wed, "wed", "wednesday"),
        (Thu, "thu", "thursday"),
        (Fri, "fri", "friday"),
        (Sat, "sat", "saturday"),
        (Sun, "sun", "sunday"),
    ];
    all.iter()
        .find(|(_, short, long)| l == *short || l == *long)
        .map(|(d, _, _)| *d)
}

fn parse_clock(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    if !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn weekday_name(d: Weekday) -> &'static str {
    match d {
        Weekday::Mon => "Mon",
        Weekday::Tue => "Tue",
        Weekday::Wed => "Wed",
        Weekday::Thu => "Thu",
        Weekday::Fri => "Fri",
        Weekday::Sat => "Sat",
        Weekday::Sun => "Sun",
    }
}

fn saturating_add(t: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl RebootWindow {
    /// Parses FLUO's two flag values (see the module docs).
    pub fn parse(start: &str, length: &str) -> Result<RebootWindow, WindowError> {
        let start_err = |reason: &str| WindowError::Start {
            value: start.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = start.split_whitespace().collect();
        let (weekday, clock) = match parts.as_slice() {
            [clock] => (None, *clock),
            [day, clock] => {
                let d = parse_weekday(day).ok_or_else(|| {
                    start_err("unknown weekday (expected Mon..Sun or Monday..Sunday)")
                })?;
                (Some(d), *clock)
            }
            _ => {
                return Err(start_err(
                    "expected \"<weekday> HH:MM\" (weekly) or \"HH:MM\" (daily), in UTC",
                ));
            }
        };
        let start_minute = parse_clock(clock)
            .ok_or_else(|| start_err("expected a time HH:MM from 00:00 to 23:59, in UTC"))?;
        let length_err = |reason: String| WindowError::Length {
            value: length.to_string(),
            reason,
        };
        let len = parse_go_duration(length.trim()).map_err(length_err)?;
        if len <= TimeDelta::zero() {
            return Err(length_err("must be positive".into()));
        }
        match weekday {
            None if len >= TimeDelta::seconds(DAY) => {
                return Err(length_err(
                    "must be shorter than 24h for a daily window".into(),
                ));
            }
            Some(_) if len >= TimeDelta::seconds(WEEK) => {
                return Err(length_err(
                    "must be shorter than 168h (7 days) for a weekly window".into(),
                ));
            }
            _ => {}
        }
        Ok(RebootWindow {
            weekday,
            start_minute,
            length: len,
        })
    }

    /// Both flags or neither: `Ok(None)` when neither is given (empty or
    /// blank strings count as not given, like FLUO's empty env vars).
    pub fn from_flags(
        start: Option<&str>,
        length: Option<&str>,
    ) -> Result<Option<RebootWindow>, WindowError> {
        let start = start.filter(|s| !s.trim().is_empty());
        let length = length.filter(|s| !s.trim().is_empty());
        match (start, length) {
            (None, None) => Ok(None),
            (Some(s), Some(l)) => RebootWindow::parse(s, l).map(Some),
            (Some(_), None) => Err(WindowError::Incomplete {
                missing: LENGTH_FLAG,
                given: START_FLAG,
            }),
            (None, Some(_)) => Err(WindowError::Incomplete {
                missing: START_FLAG,
                given: LENGTH_FLAG,
            }),
        }
    }

    /// The weekday of a weekly window, `None` for a daily one.
    pub fn weekday(&self) -> Option<Weekday> {
        self.weekday
    }

    /// Start time of day, in minutes after midnight UTC.
    pub fn start_minute(&self) -> u32 {
        self.start_minute
    }

    /// The start as `--reboot-window-start` takes it: `14:00` or `Mon 14:00`.
    pub fn start_flag(&self) -> String {
        let hm = format!(
            "{:02}:{:02}",
            self.start_minute / 60,
            self.start_minute % 60
        );
        match self.weekday {
            Some(d) => format!("{} {hm}", weekday_name(d)),
            None => hm,
        }
    }

    /// How long the window stays open.
    pub fn length(&self) -> TimeDelta {
        self.length
    }

    fn period(&self) -> i64 {
        if self.weekday.is_some() { WEEK } else { DAY }
    }

    /// The latest window start at or before `now`.
    pub fn last_start(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let (anchor, day) = match self.weekday {
            Some(d) => (MONDAY_EPOCH, i64::from(d.num_days_from_monday())),
            None => (0, 0),
        };
        let offset = day * DAY + i64::from(self.start_minute) * 60;
        let secs = now.timestamp();
        let delta =
            (secs as i128 - anchor as i128 - offset as i128).rem_euclid(self.period() as i128);
        DateTime::from_timestamp(secs - delta as i64, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// Whether the window is open at `now`.
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        now < saturating_add(self.last_start(now), self.length)
    }

    /// The end of the window containing `now`, `None` if it is closed.
    pub fn current_end(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let end = saturating_add(self.last_start(now), self.length);
        (now < end).then_some(end)
    }

    /// The next instant after `now` at which the window opens or closes.
    pub fn next_change(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let start = self.last_start(now);
        let end = saturating_add(start, self.length);
        if now < end {
            end
        } else {
            saturating_add(start, TimeDelta::seconds(self.period()))
        }
    }
}

impl fmt::Display for RebootWindow {
    /// E.g. `Mon 14:00 +1h30m0s` (start as the flag takes it, then the length).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = self.weekday {
            write!(f, "{} ", weekday_name(d))?;
        }
        write!(
            f,
            "{:02}:{:02} +{}",
            self.start_minute / 60,
            self.start_minute % 60,
            format_go_duration(self.length)
        )
    }
}

/// Parses a Go `time.ParseDuration` string: an optional sign, then one or
/// more decimal numbers (fraction allowed) each with a unit among `ns`, `us`
/// (`µs`, `μs`), `ms`, `s`, `m`, `h`; or the bare `0`. Errors are messages
/// without the flag name.
pub fn parse_go_duration(s: &str) -> Result<TimeDelta, String> {
    let orig = s;
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(TimeDelta::zero());
    }
    if rest.is_empty() {
        return Err(format!("invalid duration {orig:?}"));
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &r[..n];
            rest = &r[n..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(format!("invalid duration {orig:?}"));
        }
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("missing unit in duration {orig:?}")),
            u => return Err(format!("unknown unit {u:?} in duration {orig:?}")),
        };
        let overflow = || format!("invalid duration {orig:?}: too large");
        let int: i128 = if int_part.is_empty() {
            0
        } else if int_part.len() > 30 {
            return Err(overflow());
        } else {
            int_part.parse().map_err(|_| overflow())?
        };
        let v = int.checked_mul(scale).ok_or_else(overflow)?;
        // Fraction: only the digits that can matter at nanosecond precision.
        let mut f: i128 = 0;
        let mut div: i128 = 1;
        for b in frac_part.bytes().take(20) {
            f = f * 10 + i128::from(b - b'0');
            div *= 10;
        }
        // Checked: an integer part just below i128::MAX plus a fraction overflows.
        let v = v.checked_add(f * scale / div).ok_or_else(overflow)?;
        total = total.checked_add(v).ok_or_else(overflow)?;
        if total > i128::from(i64::MAX) + i128::from(neg) {
            return Err(overflow());
        }
    }
    let nanos = if neg { -total } else { total };
    Ok(TimeDelta::nanoseconds(nanos as i64))
}

/// Formats a duration like Go's `Duration.String` for whole seconds and
/// above (`1h30m0s`, `90s` -> `1m30s`); sub-second parts are shown as
/// fractional seconds.
pub fn format_go_duration(d: TimeDelta) -> String {
    let neg = d < TimeDelta::zero();
    let d = d.abs();
    let secs = d.num_seconds();
    let nanos = d.subsec_nanos();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if nanos == 0 {
        out.push_str(&format!("{s}s"));
    } else {
        let frac = format!("{nanos:09}");
        out.push_str(&format!("{s}.{}s", frac.trim_end_matches('0')));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike};
    use proptest::prelude::*;

    fn t(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn go_durations() {
        let ok = [
            ("0", 0),
            ("1h30m", 5400),
            ("90m", 5400),
            ("3600s", 3600),
            ("1.5h", 5400),
            (".5m", 30),
            ("1.m", 60),
            ("+2h", 7200),
            ("1h1m1s", 3661),
            ("2m3600s", 3720),
        ];
        for (s, secs) in ok {
            assert_eq!(parse_go_duration(s), Ok(TimeDelta::seconds(secs)), "{s}");
        }
        assert_eq!(parse_go_duration("-1m"), Ok(TimeDelta::seconds(-60)));
        assert_eq!(
            parse_go_duration("1500ms"),
            Ok(TimeDelta::milliseconds(1500))
        );
        assert_eq!(parse_go_duration("3us"), Ok(TimeDelta::microseconds(3)));
        assert_eq!(parse_go_duration("3µs"), Ok(TimeDelta::microseconds(3)));
        assert_eq!(parse_go_duration("3μs"), Ok(TimeDelta::microseconds(3)));
        assert_eq!(parse_go_duration("7ns"), Ok(TimeDelta::nanoseconds(7)));
        assert_eq!(
            parse_go_duration("2562047h47m16.854775807s"),
            Ok(TimeDelta::nanoseconds(i64::MAX))
        );
        for bad in [
            "",
            "1",
            "h",
            "1d",
            "1 h",
            " 1h",
            "1h ",
            "-",
            ".",
            ".h",
            "1hh",
            "1H",
            "1h30",
            "9999999999999999999h",
            "2562048h",
            "1e3s",
            "--1h",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
        assert!(
            parse_go_duration("1d")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(
            parse_go_duration("10")
                .unwrap_err()
                .contains("missing unit")
        );
    }

    #[test]
    fn formats_durations() {
        assert_eq!(format_go_duration(TimeDelta::seconds(5400)), "1h30m0s");
        assert_eq!(format_go_duration(TimeDelta::seconds(90)), "1m30s");
        assert_eq!(format_go_duration(TimeDelta::seconds(5)), "5s");
        assert_eq!(format_go_duration(TimeDelta::milliseconds(1500)), "1.5s");
        assert_eq!(format_go_duration(TimeDelta::seconds(-60)), "-1m0s");
    }

    #[test]
    fn parses_weekly_and_daily() {
        let w = RebootWindow::parse("Mon 14:00", "1h30m").unwrap();
        assert_eq!(w.weekday(), Some(Weekday::Mon));
        assert_eq!(w.start_minute(), 14 * 60);
        assert_eq!(w.length(), TimeDelta::minutes(90));
        assert_eq!(w.to_string(), "Mon 14:00 +1h30m0s");
        for s in [
            "mon 14:00",
            "MON 14:00",
            "Monday 14:00",
            "mOnDaY 14:00",
            "  Mon   14:00 ",
        ] {
            assert_eq!(RebootWindow::parse(s, "90m").unwrap(), w, "{s}");
        }
        for (s, d) in [
            ("Tue 0:00", Weekday::Tue),
            ("wednesday 1:00", Weekday::Wed),
            ("Thu 23:59", Weekday::Thu),
            ("FRI 12:00", Weekday::Fri),
            ("Saturday 12:00", Weekday::Sat),
            ("sun 12:00", Weekday::Sun),
        ] {
            assert_eq!(
                RebootWindow::parse(s, "1h").unwrap().weekday(),
                Some(d),
                "{s}"
            );
        }
        let d = RebootWindow::parse("11:00", "3600s").unwrap();
        assert_eq!(d.weekday(), None);
        assert_eq!(d.start_minute(), 660);
        assert_eq!(d.to_string(), "11:00 +1h0m0s");
        assert_eq!(
            RebootWindow::parse("7:05", "1h").unwrap().start_minute(),
            425
        );
    }

    #[test]
    fn rejects_bad_start() {
        for s in [
            "",
            "Mon",
            "14",
            "14:0",
            "24:00",
            "14:60",
            "123:00",
            "Mo 14:00",
            "Mon 14:00 UTC",
            "Mon14:00",
            "14:00:00",
            "-1:00",
            "Mon, 14:00",
            "1 4:00",
            "+1:00",
            "Funday 10:00",
        ] {
            let e = RebootWindow::parse(s, "1h").unwrap_err();
            assert_eq!(e.flag(), START_FLAG, "{s:?}");
            assert!(e.to_string().starts_with("--reboot-window-start: "), "{e}");
        }
    }

    #[test]
    fn rejects_bad_length() {
        for (s, l) in [
            ("14:00", ""),
            ("14:00", "1"),
            ("14:00", "0"),
            ("14:00", "0s"),
            ("14:00", "-1h"),
            ("14:00", "24h"),
            ("14:00", "1440m"),
            ("14:00", "1d"),
            ("Mon 14:00", "168h"),
            ("Mon 14:00", "200h"),
            ("Mon 14:00", "0h"),
        ] {
            let e = RebootWindow::parse(s, l).unwrap_err();
            assert_eq!(e.flag(), LENGTH_FLAG, "{s:?} {l:?}");
            assert!(e.to_string().starts_with("--reboot-window-length: "), "{e}");
        }
        assert!(RebootWindow::parse("14:00", "23h59m59s").is_ok());
        assert!(RebootWindow::parse("Mon 14:00", "167h59m").is_ok());
        assert!(RebootWindow::parse("Mon 14:00", "24h").is_ok());
        let e = RebootWindow::parse("14:00", "24h").unwrap_err();
        assert!(e.to_string().contains("daily"), "{e}");
    }

    #[test]
    fn both_or_neither() {
        assert_eq!(RebootWindow::from_flags(None, None), Ok(None));
        assert_eq!(RebootWindow::from_flags(Some(""), Some(" ")), Ok(None));
        assert!(
            RebootWindow::from_flags(Some("11:00"), Some("1h"))
                .unwrap()
                .is_some()
        );
        let e = RebootWindow::from_flags(Some("11:00"), None).unwrap_err();
        assert_eq!(e.flag(), LENGTH_FLAG);
        assert!(e.to_string().starts_with("--reboot-window-length: "));
        let e = RebootWindow::from_flags(Some(""), Some("1h")).unwrap_err();
        assert_eq!(e.flag(), START_FLAG);
        assert!(e.to_string().starts_with("--reboot-window-start: "));
        let e = RebootWindow::from_flags(Some("x"), Some("1h")).unwrap_err();
        assert_eq!(e.flag(), START_FLAG);
    }

    #[test]
    fn daily_contains_and_edges() {
        let w = RebootWindow::parse("11:00", "1h").unwrap();
        // 2024-05-01 is a Wednesday.
        assert!(!w.contains(t(2024, 5, 1, 10, 59)));
        assert!(w.contains(t(2024, 5, 1, 11, 0)));
        assert!(w.contains(t(2024, 5, 1, 11, 59)));
        assert!(!w.contains(t(2024, 5, 1, 12, 0)));
        assert_eq!(
            w.current_end(t(2024, 5, 1, 11, 30)),
            Some(t(2024, 5, 1, 12, 0))
        );
        assert_eq!(w.current_end(t(2024, 5, 1, 12, 0)), None);
        assert_eq!(w.next_change(t(2024, 5, 1, 10, 0)), t(2024, 5, 1, 11, 0));
        assert_eq!(w.next_change(t(2024, 5, 1, 11, 0)), t(2024, 5, 1, 12, 0));
        assert_eq!(w.next_change(t(2024, 5, 1, 12, 0)), t(2024, 5, 2, 11, 0));
        assert_eq!(w.last_start(t(2024, 5, 1, 10, 0)), t(2024, 4, 30, 11, 0));
    }

    #[test]
    fn daily_window_over_midnight() {
        let w = RebootWindow::parse("23:00", "2h").unwrap();
        assert!(w.contains(t(2024, 5, 1, 23, 30)));
        assert!(w.contains(t(2024, 5, 2, 0, 59)));
        assert!(!w.contains(t(2024, 5, 2, 1, 0)));
        assert_eq!(
            w.current_end(t(2024, 5, 2, 0, 30)),
            Some(t(2024, 5, 2, 1, 0))
        );
        assert_eq!(w.next_change(t(2024, 5, 2, 1, 0)), t(2024, 5, 2, 23, 0));
    }

    #[test]
    fn weekly_wraps_sunday_to_monday() {
        let w = RebootWindow::parse("Sun 22:00", "4h").unwrap();
        // 2024-05-05 is a Sunday, 2024-05-06 a Monday.
        assert_eq!(t(2024, 5, 5, 0, 0).weekday(), Weekday::Sun);
        assert!(!w.contains(t(2024, 5, 5, 21, 59)));
        assert!(w.contains(t(2024, 5, 5, 22, 0)));
        assert!(w.contains(t(2024, 5, 6, 1, 59)));
        assert!(!w.contains(t(2024, 5, 6, 2, 0)));
        assert_eq!(
            w.current_end(t(2024, 5, 6, 1, 0)),
            Some(t(2024, 5, 6, 2, 0))
        );
        assert_eq!(w.next_change(t(2024, 5, 6, 2, 0)), t(2024, 5, 12, 22, 0));
        assert_eq!(w.next_change(t(2024, 5, 1, 0, 0)), t(2024, 5, 5, 22, 0));
        // Not open on other days at the same time.
        assert!(!w.contains(t(2024, 5, 4, 23, 0)));
        assert!(!w.contains(t(2024, 5, 7, 1, 0)));
    }

    #[test]
    fn weekly_long_window_wraps_week() {
        let w = RebootWindow::parse("Sat 00:00", "72h").unwrap(); // Sat..Mon
        assert!(w.contains(t(2024, 5, 4, 0, 0)));
        assert!(w.contains(t(2024, 5, 6, 23, 59)));
        assert!(!w.contains(t(2024, 5, 7, 0, 0)));
        assert!(!w.contains(t(2024, 5, 3, 23, 59)));
        let m = RebootWindow::parse("Mon 14:00", "1h").unwrap();
        assert!(m.contains(t(2024, 5, 6, 14, 30)));
        assert!(!m.contains(t(2024, 5, 7, 14, 30)));
        assert!(!m.contains(t(2024, 4, 29, 13, 59)));
    }

    fn window_strategy() -> impl Strategy<Value = RebootWindow> {
        (
            proptest::option::of(0u32..7),
            0u32..24,
            0u32..60,
            1i64..(7 * 24 * 60),
        )
            .prop_map(|(d, h, m, len)| {
                let len = if d.is_none() { len % (24 * 60) } else { len }.max(1);
                let start = match d {
                    Some(d) => format!(
                        "{} {h}:{m:02}",
                        weekday_name(Weekday::try_from(d as u8).unwrap())
                    ),
                    None => format!("{h}:{m:02}"),
                };
                RebootWindow::parse(&start, &format!("{len}m")).unwrap()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn window_invariants(w in window_strategy(), secs in 0i64..8_000_000_000, nanos in 0u32..1_000_000_000) {
            let now = DateTime::from_timestamp(secs, nanos).unwrap();
            let start = w.last_start(now);
            prop_assert!(start <= now);
            prop_assert!(now - start < TimeDelta::seconds(w.period()));
            prop_assert_eq!(start.minute() + start.hour() * 60, w.start_minute());
            if let Some(d) = w.weekday() { prop_assert_eq!(start.weekday(), d); }
            let next = w.next_change(now);
            prop_assert!(next > now);
            prop_assert_eq!(w.current_end(now).is_some(), w.contains(now));
            // The state does not change strictly before next_change, and does at it.
            let before = next - TimeDelta::nanoseconds(1);
            if before >= now {
                prop_assert_eq!(w.contains(before), w.contains(now));
            }
            prop_assert_ne!(w.contains(next), w.contains(now));
            if let Some(end) = w.current_end(now) {
                prop_assert_eq!(end, next);
                prop_assert!(end - now <= w.length());
            }
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,12}", l in "\\PC{0,12}") {
            let _ = RebootWindow::parse(&s, &l);
            let _ = parse_go_duration(&l);
        }

        #[test]
        fn durations_roundtrip(n in 0i64..1_000_000_000_000) {
            let d = TimeDelta::milliseconds(n);
            prop_assert_eq!(parse_go_duration(&format_go_duration(d)), Ok(d));
        }
    }
}
