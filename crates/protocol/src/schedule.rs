//! Reboot windows with weekdays, several of them, in a time zone:
//! `--reboot-window` (repeatable) and `--reboot-window-timezone`.
//!
//! A window is `[DAYS ]HH:MM-HH:MM`: `Mon-Fri 02:00-05:00`,
//! `Sat,Sun 00:00-08:00`, `02:00-05:00` (every day), `Fri 22:00-02:00`
//! (crosses midnight: Friday 22:00 to Saturday 02:00; the days name the day a
//! window starts on). Days are `Mon`..`Sun` or `Monday`..`Sunday`
//! (case-insensitive), separated by commas, with ranges `Mon-Fri` (a range
//! may wrap: `Fri-Mon`). The end may be `24:00`; start and end must differ.
//!
//! Times are **wall-clock times in the time zone** (an IANA name such as
//! `Europe/Berlin`, default `UTC`): the schedule is open at an instant when
//! the zone's clock shows a time inside one of the windows. Across a DST
//! change this means exactly what the clock says: on the night the clocks go
//! forward, `02:00-03:00` in Europe/Berlin never opens (02:00-03:00 does not
//! exist that night), and `01:00-04:00` is open for two hours; on the night
//! they go back, `02:00-03:00` is open twice (both 02:00-03:00 hours).

use std::fmt;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, Offset, TimeDelta, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

/// The flag of a window.
pub const WINDOW_FLAG: &str = "--reboot-window";
/// The flag of the time zone.
pub const TIMEZONE_FLAG: &str = "--reboot-window-timezone";

/// How far ahead [`Schedule::next_change`] looks (a weekly schedule repeats
/// within 7 days; the rest covers DST shifts and gaps).
const HORIZON_DAYS: i64 = 15;

/// A bad window or time zone; the message starts with the flag's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// A `--reboot-window` value is invalid.
    #[error("--reboot-window: invalid value {value:?}: {reason}")]
    Window {
        /// The value given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The time zone is unknown.
    #[error(
        "--reboot-window-timezone: invalid value {value:?}: not an IANA time zone name (e.g. UTC, Europe/Berlin, America/New_York)"
    )]
    TimeZone {
        /// The value given.
        value: String,
    },
}

impl ScheduleError {
    /// The flag this error is about.
    pub fn flag(&self) -> &'static str {
        match self {
            ScheduleError::Window { .. } => WINDOW_FLAG,
            ScheduleError::TimeZone { .. } => TIMEZONE_FLAG,
        }
    }
}

/// One window: the days it starts on and its wall-clock start and end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalWindow {
    /// Indexed by `Weekday::num_days_from_monday`.
    days: [bool; 7],
    /// Minutes after midnight, 0..1440.
    start: u32,
    /// Minutes after midnight, 1..=1440; `end <= start` crosses midnight.
    end: u32,
}

const DAY_NAMES: [(&str, &str); 7] = [
    ("mon", "monday"),
    ("tue", "tuesday"),
    ("wed", "wednesday"),
    ("thu", "thursday"),
    ("fri", "friday"),
    ("sat", "saturday"),
    ("sun", "sunday"),
];

fn day_index(s: &str) -> Option<usize> {
    let l = s.trim().to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|(short, long)| l == *short || l == *long)
}

fn parse_clock(s: &str, allow_24: bool) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    if !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    if allow_24 && h == 24 && m == 0 {
        return Some(1440);
    }
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl LocalWindow {
    /// Parses one window (see the module docs); errors are reasons without
    /// the flag.
    pub fn parse(s: &str) -> Result<LocalWindow, String> {
        let s = s.trim();
        let (days_part, times) = match s.rsplit_once(char::is_whitespace) {
            Some((d, t)) => (Some(d.trim()), t),
            None => (None, s),
        };
        let mut days = [days_part.is_none(); 7];
        if let Some(d) = days_part {
            for item in d.split(',') {
                let item = item.trim();
                if item.is_empty() {
                    return Err("empty day in the day list".into());
                }
                let unknown = |x: &str| {
                    format!(
                        "unknown day {x:?} (expected Mon..Sun or Monday..Sunday, lists \"Sat,Sun\" and ranges \"Mon-Fri\")"
                    )
                };
                match item.split_once('-') {
                    Some((a, b)) => {
                        let a = day_index(a).ok_or_else(|| unknown(a))?;
                        let b = day_index(b).ok_or_else(|| unknown(b))?;
                        let mut i = a;
                        loop {
                            days[i] = true;
                            if i == b {
                                break;
                            }
                            i = (i + 1) % 7;
                        }
                    }
                    None => days[day_index(item).ok_or_else(|| unknown(item))?] = true,
                }
            }
        }
        let (a, b) = times.split_once('-').ok_or_else(|| {
            "expected \"[DAYS ]HH:MM-HH:MM\", e.g. \"Mon-Fri 02:00-05:00\" or \"22:00-02:00\""
                .to_string()
        })?;
        let start = parse_clock(a.trim(), false)
            .ok_or_else(|| format!("invalid start time {a:?} (expected HH:MM, 00:00 to 23:59)"))?;
        let end = parse_clock(b.trim(), true)
            .ok_or_else(|| format!("invalid end time {b:?} (expected HH:MM, 00:00 to 24:00)"))?;
        if start == end {
            return Err("start and end are the same (use 00:00-24:00 for a whole day)".into());
        }
        // `22:00-00:00` ends at midnight.
        let end = if end == 0 { 1440 } else { end };
        Ok(LocalWindow { days, start, end })
    }

    /// Whether the wall-clock time `(day, second of day)` is inside.
    fn contains(&self, day: usize, sec: u32) -> bool {
        let (s, e) = (self.start * 60, self.end * 60);
        if self.end > self.start {
            self.days[day] && s <= sec && sec < e
        } else {
            (self.days[day] && sec >= s) || (self.days[(day + 6) % 7] && sec < e)
        }
    }
}

impl fmt::Display for LocalWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.days.iter().all(|d| *d) {
            let names: Vec<String> = (0..7)
                .filter(|i| self.days[*i])
                .map(|i| {
                    let s = DAY_NAMES[i].0;
                    format!("{}{}", s[..1].to_ascii_uppercase(), &s[1..])
                })
                .collect();
            write!(f, "{} ", names.join(","))?;
        }
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

/// Several windows in one time zone; open when any window is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    windows: Vec<LocalWindow>,
    tz: Tz,
}

/// Splits flag values into windows: each value may hold several separated
/// by `;` (handy in one environment variable); blank items are dropped.
pub fn split_windows(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses an IANA time zone name.
pub fn parse_timezone(s: &str) -> Result<Tz, ScheduleError> {
    s.trim().parse::<Tz>().map_err(|_| ScheduleError::TimeZone {
        value: s.to_string(),
    })
}

impl Schedule {
    /// The windows in `values` (see [`split_windows`]) in time zone `tz`;
    /// `Ok(None)` when there are none.
    pub fn from_flags(values: &[String], tz: &str) -> Result<Option<Schedule>, ScheduleError> {
        let tz = parse_timezone(tz)?;
        let items = split_windows(values);
        if items.is_empty() {
            return Ok(None);
        }
        let windows = items
            .iter()
            .map(|w| {
                LocalWindow::parse(w).map_err(|reason| ScheduleError::Window {
                    value: w.clone(),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Schedule { windows, tz }))
    }

    /// A schedule of already parsed windows.
    pub fn new(windows: Vec<LocalWindow>, tz: Tz) -> Schedule {
        Schedule { windows, tz }
    }

    /// The time zone.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The windows.
    pub fn windows(&self) -> &[LocalWindow] {
        &self.windows
    }

    /// Whether the zone's wall clock at `t` is inside a window.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        let l = t.with_timezone(&self.tz);
        let day = l.weekday().num_days_from_monday() as usize;
        let sec = l.num_seconds_from_midnight();
        self.windows.iter().any(|w| w.contains(day, sec))
    }

    /// UTC offset in seconds at `t`.
    fn offset(&self, t: DateTime<Utc>) -> i32 {
        self.tz
            .offset_from_utc_datetime(&t.naive_utc())
            .fix()
            .local_minus_utc()
    }

    /// The instants in `(from, to]` at which the zone's UTC offset changes.
    fn transitions(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let step = TimeDelta::hours(1);
        let mut a = from;
        let mut oa = self.offset(a);
        while a < to {
            let b = (a + step).min(to);
            let ob = self.offset(b);
            if ob != oa {
                // The first second in (a, b] with the new offset.
                let (mut lo, mut hi) = (a.timestamp(), b.timestamp());
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    let m = DateTime::from_timestamp(mid, 0).unwrap_or(b);
                    if self.offset(m) == oa {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                out.push(DateTime::from_timestamp(hi, 0).unwrap_or(b));
            }
            a = b;
            oa = ob;
        }
        out
    }

    /// Every instant in `(from, to]` at which [`Schedule::contains`] may
    /// change: when the wall clock shows a window's start or end, and the
    /// zone's offset changes (the clock jumps). Sorted, no duplicates.
    fn edges(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = self.transitions(from, to);
        let first: NaiveDate = from.with_timezone(&self.tz).date_naive() - TimeDelta::days(1);
        let last: NaiveDate = to.with_timezone(&self.tz).date_naive() + TimeDelta::days(1);
        let mut minutes: Vec<u32> = self
            .windows
            .iter()
            .flat_map(|w| [w.start, w.end % 1440])
            .collect();
        minutes.sort_unstable();
        minutes.dedup();
        let mut d = first;
        while d <= last {
            for &m in &minutes {
                let Some(naive) = d.and_hms_opt(m / 60, m % 60, 0) else {
                    continue;
                };
                match self.tz.from_local_datetime(&naive) {
                    LocalResult::Single(t) => out.push(t.with_timezone(&Utc)),
                    LocalResult::Ambiguous(a, b) => {
                        out.push(a.with_timezone(&Utc));
                        out.push(b.with_timezone(&Utc));
                    }
                    // In a gap: the clock jumps over it; that is a transition.
                    LocalResult::None => {}
                }
            }
            let Some(next) = d.succ_opt() else { break };
            d = next;
        }
        out.retain(|t| *t > from && *t <= to);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The first instant after `now` at which the schedule opens or closes;
    /// `None` if that does not happen within the next 15 days (e.g. windows
    /// covering the whole week).
    pub fn next_change(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let to = now.checked_add_signed(TimeDelta::days(HORIZON_DAYS))?;
        let open = self.contains(now);
        self.edges(now, to)
            .into_iter()
            .find(|t| self.contains(*t) != open)
    }

    /// When the open period containing `now` ends; `None` if closed at `now`
    /// (or open without an end in sight, see [`Schedule::next_change`]).
    pub fn current_end(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.contains(now) {
            self.next_change(now)
        } else {
            None
        }
    }
}

impl Schedule {
    /// Each window as `--reboot-window` takes it.
    pub fn window_flags(&self) -> Vec<String> {
        self.windows.iter().map(|w| w.to_string()).collect()
    }

    /// The IANA name of the time zone.
    pub fn tz_name(&self) -> &str {
        self.tz.name()
    }
}

impl fmt::Display for Schedule {
    /// E.g. `Mon,Tue,Wed,Thu,Fri 02:00-05:00; 22:00-24:00 (Europe/Berlin)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ws: Vec<String> = self.windows.iter().map(|w| w.to_string()).collect();
        write!(f, "{} ({})", ws.join("; "), self.tz.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn sched(ws: &[&str], tz: &str) -> Schedule {
        let v: Vec<String> = ws.iter().map(|s| s.to_string()).collect();
        Schedule::from_flags(&v, tz).unwrap().unwrap()
    }

    #[test]
    fn parses_windows() {
        let w = LocalWindow::parse("Mon-Fri 02:00-05:00").unwrap();
        assert_eq!(w.to_string(), "Mon,Tue,Wed,Thu,Fri 02:00-05:00");
        let w = LocalWindow::parse(" sat , SUNDAY 00:00-08:00 ").unwrap();
        assert_eq!(w.to_string(), "Sat,Sun 00:00-08:00");
        assert_eq!(
            LocalWindow::parse("02:00-05:00").unwrap().to_string(),
            "02:00-05:00"
        );
        assert_eq!(
            LocalWindow::parse("Fri-Mon 22:00-2:00")
                .unwrap()
                .to_string(),
            "Mon,Fri,Sat,Sun 22:00-02:00"
        );
        assert_eq!(
            LocalWindow::parse("00:00-24:00").unwrap().to_string(),
            "00:00-24:00"
        );
        assert_eq!(
            LocalWindow::parse("Mon 22:00-00:00").unwrap().to_string(),
            "Mon 22:00-24:00"
        );
        for bad in [
            "",
            "Mon",
            "Mon 02:00",
            "Funday 02:00-03:00",
            "Mon-Xyz 02:00-03:00",
            "Mon,,Tue 02:00-03:00",
            "02:00-02:00",
            "00:00-00:00",
            "25:00-26:00",
            "02:00-24:01",
            "24:00-02:00",
            "2-3",
            "02:0-03:00",
            "Mon 02:00 - 03:00",
        ] {
            assert!(LocalWindow::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags_errors_name_the_flag() {
        let e = Schedule::from_flags(&["Mon 02:00".into()], "UTC").unwrap_err();
        assert!(e.to_string().starts_with("--reboot-window: "), "{e}");
        assert_eq!(e.flag(), WINDOW_FLAG);
        let e = Schedule::from_flags(&["02:00-03:00".into()], "Mars/Olympus").unwrap_err();
        assert!(
            e.to_string().starts_with("--reboot-window-timezone: "),
            "{e}"
        );
        assert_eq!(e.flag(), TIMEZONE_FLAG);
        assert_eq!(Schedule::from_flags(&[], "UTC"), Ok(None));
        assert_eq!(Schedule::from_flags(&[" ; ".into()], "UTC"), Ok(None));
        let s = sched(
            &["Mon-Fri 02:00-05:00; Sat,Sun 00:00-08:00"],
            "Europe/Berlin",
        );
        assert_eq!(s.windows().len(), 2);
        assert_eq!(
            s.to_string(),
            "Mon,Tue,Wed,Thu,Fri 02:00-05:00; Sat,Sun 00:00-08:00 (Europe/Berlin)"
        );
    }

    #[test]
    fn weekdays_and_midnight_in_utc() {
        // 2024-05-03 is a Friday.
        let s = sched(&["Mon-Fri 02:00-05:00", "Fri 22:00-02:00"], "UTC");
        assert!(s.contains(utc(2024, 5, 3, 2, 0)));
        assert!(s.contains(utc(2024, 5, 3, 4, 59)));
        assert!(!s.contains(utc(2024, 5, 3, 5, 0)));
        assert!(s.contains(utc(2024, 5, 3, 23, 0)));
        assert!(s.contains(utc(2024, 5, 4, 1, 59))); // Saturday, tail of Friday's
        assert!(!s.contains(utc(2024, 5, 4, 2, 0)));
        assert!(!s.contains(utc(2024, 5, 4, 3, 0))); // Saturday 03:00: weekdays only
        assert_eq!(
            s.current_end(utc(2024, 5, 3, 3, 0)),
            Some(utc(2024, 5, 3, 5, 0))
        );
        assert_eq!(
            s.next_change(utc(2024, 5, 3, 5, 0)),
            Some(utc(2024, 5, 3, 22, 0))
        );
        assert_eq!(
            s.current_end(utc(2024, 5, 3, 22, 30)),
            Some(utc(2024, 5, 4, 2, 0))
        );
        // Saturday 02:00 -> Monday 02:00.
        assert_eq!(
            s.next_change(utc(2024, 5, 4, 2, 0)),
            Some(utc(2024, 5, 6, 2, 0))
        );
        assert_eq!(s.current_end(utc(2024, 5, 4, 12, 0)), None);
        // Always open: no change, no end.
        let all = sched(&["00:00-24:00"], "UTC");
        assert!(all.contains(utc(2024, 5, 4, 12, 0)));
        assert_eq!(all.next_change(utc(2024, 5, 4, 12, 0)), None);
        // Adjacent windows merge.
        let adj = sched(&["22:00-24:00", "00:00-01:00"], "UTC");
        assert_eq!(
            adj.current_end(utc(2024, 5, 4, 23, 0)),
            Some(utc(2024, 5, 5, 1, 0))
        );
    }

    #[test]
    fn time_zone_and_dst_europe_berlin() {
        // 2024-03-31: clocks go from 02:00 CET to 03:00 CEST (01:00 UTC).
        let s = sched(&["01:00-04:00"], "Europe/Berlin");
        assert!(!s.contains(utc(2024, 3, 30, 23, 59))); // 00:59 CET
        assert!(s.contains(utc(2024, 3, 31, 0, 0))); // 01:00 CET
        assert_eq!(
            s.current_end(utc(2024, 3, 31, 0, 0)),
            Some(utc(2024, 3, 31, 2, 0)) // 04:00 CEST: two hours of wall-clock time
        );
        // 02:00-03:00 does not exist that night: never open.
        let gap = sched(&["02:00-03:00"], "Europe/Berlin");
        for m in 0..180 {
            assert!(!gap.contains(utc(2024, 3, 31, 0, 0) + TimeDelta::minutes(m)));
        }
        assert_eq!(
            gap.next_change(utc(2024, 3, 30, 12, 0)),
            Some(utc(2024, 4, 1, 0, 0)) // 02:00 CEST on Monday
        );
        // 2024-10-27: clocks go from 03:00 CEST back to 02:00 CET (01:00 UTC).
        // 02:00-03:00 happens twice, both are open.
        assert_eq!(
            gap.next_change(utc(2024, 10, 26, 12, 0)),
            Some(utc(2024, 10, 27, 0, 0)) // 02:00 CEST
        );
        assert_eq!(
            gap.current_end(utc(2024, 10, 27, 0, 30)),
            Some(utc(2024, 10, 27, 2, 0)) // through both hours to 03:00 CET
        );
        // 02:30-04:00: the clock jumps back from 03:00 to 02:00, out of the window.
        let w = sched(&["02:30-04:00"], "Europe/Berlin");
        assert_eq!(
            w.current_end(utc(2024, 10, 27, 0, 45)),
            Some(utc(2024, 10, 27, 1, 0))
        );
        assert_eq!(
            w.next_change(utc(2024, 10, 27, 1, 0)),
            Some(utc(2024, 10, 27, 1, 30)) // 02:30 CET
        );
        // Summer vs winter: 03:00 local is 01:00 UTC in summer, 02:00 UTC in winter.
        let n = sched(&["03:00-04:00"], "Europe/Berlin");
        assert!(n.contains(utc(2024, 7, 1, 1, 30)));
        assert!(!n.contains(utc(2024, 7, 1, 2, 30)));
        assert!(n.contains(utc(2024, 1, 15, 2, 30)));
    }

    const ZONES: [&str; 8] = [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "Asia/Kolkata",
        "Pacific/Chatham",
        "America/Sao_Paulo",
        "Pacific/Apia",
    ];

    /// Around the 2024 DST changes of Europe and North America, and at random.
    fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
        let base = prop::sample::select(vec![
            utc(2024, 3, 31, 1, 0),
            utc(2024, 10, 27, 1, 0),
            utc(2024, 3, 10, 7, 0),
            utc(2024, 11, 3, 6, 0),
            utc(2024, 4, 7, 2, 0),
            utc(2024, 5, 1, 12, 0),
        ]);
        (base, -4000i64..4000, 0i64..60)
            .prop_map(|(b, m, s)| b + TimeDelta::minutes(m) + TimeDelta::seconds(s))
    }

    fn any_window() -> impl Strategy<Value = String> {
        let days =
            prop::sample::select(vec!["", "Mon-Fri ", "Sat,Sun ", "Sun ", "Fri-Mon ", "Wed "]);
        (days, 0u32..48, 1u32..48).prop_map(|(d, s, len)| {
            let (s, e) = (s * 30, (s * 30 + len * 30) % 1440);
            let e = if e == 0 { 1440 } else { e };
            format!("{d}{:02}:{:02}-{:02}:{:02}", s / 60, s % 60, e / 60, e % 60)
        })
    }

    /// An independent oracle: a (weekday, minute) grid filled from the windows.
    fn grid(ws: &[String]) -> Vec<[bool; 1440]> {
        let mut g = vec![[false; 1440]; 7];
        for w in ws {
            let (days, times) = match w.rsplit_once(' ') {
                Some((d, t)) => (d, t),
                None => ("Mon-Sun", w.as_str()),
            };
            let (a, b) = times.split_once('-').unwrap();
            let clock = |c: &str| {
                let (h, m) = c.split_once(':').unwrap();
                h.parse::<usize>().unwrap() * 60 + m.parse::<usize>().unwrap()
            };
            let (a, b) = (clock(a), clock(b));
            let len = if b > a { b - a } else { b + 1440 - a };
            let mut set = [false; 7];
            for item in days.split(',') {
                let idx = |n: &str| day_index(n).unwrap();
                match item.split_once('-') {
                    Some((x, y)) => {
                        let (mut i, y) = (idx(x), idx(y));
                        loop {
                            set[i] = true;
                            if i == y {
                                break;
                            }
                            i = (i + 1) % 7;
                        }
                    }
                    None => set[idx(item)] = true,
                }
            }
            for (d, on) in set.iter().enumerate() {
                if *on {
                    for k in 0..len {
                        let m = a + k;
                        g[(d + m / 1440) % 7][m % 1440] = true;
                    }
                }
            }
        }
        g
    }

    fn oracle(g: &[[bool; 1440]], tz: Tz, t: DateTime<Utc>) -> bool {
        let l = t.with_timezone(&tz);
        g[l.weekday().num_days_from_monday() as usize]
            [(l.num_seconds_from_midnight() / 60) as usize]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// `contains` is the wall clock inside a window (checked against an
        /// independent grid), and `next_change` is the first change: the
        /// schedule is constant up to it, and differs at it.
        #[test]
        fn wall_clock_semantics_across_dst(
            ws in prop::collection::vec(any_window(), 1..4),
            tz in prop::sample::select(ZONES.to_vec()),
            now in any_instant(),
        ) {
            let s = sched(&ws.iter().map(String::as_str).collect::<Vec<_>>(), tz);
            let tz = s.timezone();
            let g = grid(&ws);
            prop_assert_eq!(s.contains(now), oracle(&g, tz, now));
            let open = s.contains(now);
            let change = s.next_change(now);
            if let Some(c) = change {
                prop_assert!(c > now);
                prop_assert_ne!(oracle(&g, tz, c), open);
                prop_assert_eq!(oracle(&g, tz, c - TimeDelta::seconds(1)), open);
            }
            let limit = change.unwrap_or(now + TimeDelta::days(8)).min(now + TimeDelta::days(8));
            let mut t = now;
            while t < limit {
                prop_assert_eq!(oracle(&g, tz, t), open, "changed at {} before {:?}", t, change);
                t += TimeDelta::minutes(1);
            }
            prop_assert_eq!(s.current_end(now), if open { change } else { None });
        }
    }
}
