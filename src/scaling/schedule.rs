//! Scheduled capacity (`autoscale.schedule`): windows that open at the
//! times of a cron line, in a time zone, stay open for a duration, and set
//! the pool's min and max while open, as an ASG's scheduled actions do.
//! Pure: `active` takes the time it is asked about, so tests inject the
//! clock. A window is open at `now` when its cron line matched a minute of
//! the last `duration` (in the zone's local time, so a daily 08:00 stays at
//! 08:00 across daylight saving time); of several open windows, the first
//! listed applies.

use std::fmt;
use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// The longest a window may stay open: how far back `active` looks.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// One window, as the config checked it.
#[derive(Debug, Clone)]
pub struct Window {
    pub name: String,
    pub cron: Cron,
    /// The cron line as written, for messages.
    pub cron_text: String,
    pub time_zone: TimeZone,
    /// As written (`UTC`, `Europe/Berlin`), for messages.
    pub time_zone_name: String,
    pub duration: Duration,
    pub min: usize,
    pub max: usize,
}

impl PartialEq for Window {
    fn eq(&self, other: &Window) -> bool {
        (
            &self.name,
            &self.cron_text,
            &self.time_zone_name,
            self.duration,
            self.min,
            self.max,
        ) == (
            &other.name,
            &other.cron_text,
            &other.time_zone_name,
            other.duration,
            other.min,
            other.max,
        )
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "schedule window {} ({} {}, for {}): min {}, max {}",
            self.name,
            self.cron_text,
            self.time_zone_name,
            humantime::format_duration(self.duration),
            self.min,
            self.max
        )
    }
}

/// The first of `windows` open at `now`, if any.
pub fn active(windows: &[Window], now: SystemTime) -> Option<&Window> {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    // The minute `now` is in, then back one minute at a time.
    let this_minute = now - now % 60;
    windows.iter().find(|window| {
        let minutes = window.duration.as_secs().div_ceil(60);
        (0..minutes).any(|back| {
            let start = this_minute.saturating_sub(back * 60);
            // Open from the start of the matching minute for `duration`.
            now < start + window.duration.as_secs()
                && Timestamp::from_second(start as i64)
                    .is_ok_and(|at| window.cron.matches(&window.time_zone.to_datetime(at)))
        })
    })
}

/// A cron line's five fields: minute, hour, day of month, month, day of
/// week (0 or 7 is Sunday; names `mon`..`sun`, `jan`..`dec` too), each `*`,
/// a number, a range `a-b`, a step `*/n` or `a-b/n`, or a list of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    /// Day of month and day of week were both restricted: either matches
    /// (as cron has it).
    either_day: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Cron {
    /// Parses a cron line; the error says which field is wrong and why.
    pub fn parse(line: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(format!(
                "{line:?} has {} fields, not the five minute hour day-of-month month day-of-week (e.g. \"0 8 * * mon-fri\")",
                fields.len()
            ));
        };
        let mut weekdays = field("day of week", weekday, 0, 7, &WEEKDAYS)?;
        // 7 is Sunday too.
        if weekdays[7] {
            weekdays[0] = true;
        }
        weekdays.truncate(7);
        Ok(Cron {
            minutes: field("minute", minute, 0, 59, &[])?,
            hours: field("hour", hour, 0, 23, &[])?,
            days: field("day of month", day, 1, 31, &[])?,
            months: field("month", month, 1, 12, &MONTHS)?,
            weekdays,
            either_day: !day.starts_with('*') && !weekday.starts_with('*'),
        })
    }

    fn matches(&self, at: &jiff::civil::DateTime) -> bool {
        let day = self.days[at.day() as usize];
        let weekday = self.weekdays[at.weekday().to_sunday_zero_offset() as usize];
        let day_matches = if self.either_day {
            day || weekday
        } else {
            day && weekday
        };
        self.minutes[at.minute() as usize]
            && self.hours[at.hour() as usize]
            && self.months[at.month() as usize]
            && day_matches
    }
}

/// One field as a table indexed by value (0..=max); `names` (if any) stand
/// for `low`, `low + 1`, ...
fn field(
    what: &str,
    text: &str,
    low: usize,
    high: usize,
    names: &[&str],
) -> Result<Vec<bool>, String> {
    let value = |part: &str| -> Result<usize, String> {
        if let Some(n) = names
            .iter()
            .position(|name| part.eq_ignore_ascii_case(name))
        {
            return Ok(low + n);
        }
        part.parse::<usize>()
            .ok()
            .filter(|n| (low..=high).contains(n))
            .ok_or_else(|| format!("{what} {part:?} is not a number from {low} to {high}"))
    };
    let mut table = vec![false; high + 1];
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (
                range,
                step.parse::<usize>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{what} step {step:?} is not a number above 0"))?,
            ),
            None => (item, 1),
        };
        let (from, to) = match range {
            "*" => (low, high),
            _ => match range.split_once('-') {
                Some((from, to)) => (value(from)?, value(to)?),
                None if step > 1 => (value(range)?, high),
                None => (value(range)?, value(range)?),
            },
        };
        if from > to {
            return Err(format!("{what} range {range:?} runs backwards"));
        }
        for n in (from..=to).step_by(step) {
            table[n] = true;
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(name: &str, cron: &str, zone: &str, duration: u64, min: usize) -> Window {
        Window {
            name: name.to_string(),
            cron: Cron::parse(cron).unwrap(),
            cron_text: cron.to_string(),
            time_zone: TimeZone::get(zone).unwrap(),
            time_zone_name: zone.to_string(),
            duration: Duration::from_secs(duration),
            min,
            max: 10,
        }
    }

    /// `2026-12-07T<hh:mm:ss>Z` (a Monday).
    fn at(time: &str) -> SystemTime {
        humantime::parse_rfc3339(&format!("2026-12-07T{time}Z")).unwrap()
    }

    #[test]
    fn a_window_changes_min_exactly_at_its_boundaries() {
        let business = window("business", "0 8 * * mon-fri", "UTC", 10 * 3600, 4);
        let windows = [business];
        assert_eq!(active(&windows, at("07:59:59")), None);
        assert_eq!(active(&windows, at("08:00:00")).map(|w| w.min), Some(4));
        assert_eq!(active(&windows, at("17:59:59")).map(|w| w.min), Some(4));
        assert_eq!(active(&windows, at("18:00:00")), None);
        // Sunday: no window.
        let sunday = humantime::parse_rfc3339("2026-12-06T09:00:00Z").unwrap();
        assert_eq!(active(&windows, sunday), None);
    }

    #[test]
    fn windows_follow_their_time_zone_and_the_first_open_one_applies() {
        // 08:00 in Berlin is 07:00 UTC in December.
        let berlin = window("berlin", "0 8 * * *", "Europe/Berlin", 3600, 3);
        let all_day = window("all-day", "0 0 * * *", "UTC", 24 * 3600, 2);
        let windows = [berlin, all_day];
        assert_eq!(active(&windows, at("06:59:00")).unwrap().name, "all-day");
        assert_eq!(active(&windows, at("07:00:00")).unwrap().name, "berlin");
        assert_eq!(active(&windows, at("07:59:59")).unwrap().name, "berlin");
        assert_eq!(active(&windows, at("08:00:00")).unwrap().name, "all-day");
        // In summer (CEST), 08:00 in Berlin is 06:00 UTC.
        let july = |time: &str| humantime::parse_rfc3339(&format!("2026-07-06T{time}Z")).unwrap();
        assert_eq!(active(&windows, july("06:00:00")).unwrap().name, "berlin");
        assert_eq!(active(&windows, july("07:00:00")).unwrap().name, "all-day");
    }

    #[test]
    fn cron_lines_read_as_cron_reads_them() {
        let every_quarter = Cron::parse("*/15 9-17 * jan-mar,dec 1-5").unwrap();
        let minutes: Vec<usize> = (0..60).filter(|m| every_quarter.minutes[*m]).collect();
        assert_eq!(minutes, [0, 15, 30, 45]);
        assert!(every_quarter.months[12] && !every_quarter.months[4]);
        assert!(every_quarter.weekdays[1] && !every_quarter.weekdays[0]);
        assert!(Cron::parse("0 0 * * 7").unwrap().weekdays[0], "7 is Sunday");
        // Day of month and day of week both given: either matches.
        let either = window("either", "0 0 1 * mon", "UTC", 60, 1);
        assert!(
            active(std::slice::from_ref(&either), at("00:00:30")).is_some(),
            "a Monday"
        );
        let first = humantime::parse_rfc3339("2026-12-01T00:00:30Z").unwrap();
        assert!(active(&[either], first).is_some(), "the 1st, a Tuesday");
        for (bad, says) in [
            ("0 8 * *", "4 fields"),
            ("60 8 * * *", "minute \"60\""),
            ("0 8 * * fr", "day of week \"fr\""),
            ("0 18-8 * * *", "runs backwards"),
            ("*/0 * * * *", "step \"0\""),
        ] {
            let err = Cron::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
