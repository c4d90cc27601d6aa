//! Approval automation decided as pure functions of the request and a
//! given instant: auto-approval rules (on-call group, on-call schedule,
//! business hours, maximum duration, low-risk role) and the on-call
//! schedule file they may read. No clock and no IO here: the server reads
//! the schedule file and passes `now`, so every rule is testable with any
//! instant.
//!
//! Safety limits live with the caller ([`crate::policy::Catalog::auto_approval`]):
//! rules run only after an eligibility permitted the request, never for
//! break-glass, and only when every approval policy covering the request
//! has a rule that fires.

use chrono::{Datelike, Timelike};
use serde::Serialize;

use crate::principal::Principal;
use crate::values::{GroupName, Name, Span, UserName};
use crate::Timestamp;

/// Days of the week, Monday first (bit 0 = Monday).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weekdays(u8);

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

const DAY_FULL_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

fn day_index(raw: &str) -> Result<u8, String> {
    let lower = raw.trim().to_lowercase();
    DAY_NAMES
        .iter()
        .zip(DAY_FULL_NAMES)
        .position(|(short, full)| lower == *short || lower == full)
        .map(|i| i as u8)
        .ok_or_else(|| {
            format!(
                "\"{}\" is not a day (mon, tue, wed, thu, fri, sat, sun)",
                raw.trim()
            )
        })
}

impl Weekdays {
    /// `mon-fri`, `sat,sun`, `mon-wed,fri`, `fri-mon` (a range may wrap
    /// over the week's end), `daily`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let text = raw.trim();
        if text.eq_ignore_ascii_case("daily") {
            return Ok(Weekdays(0x7f));
        }
        if text.is_empty() {
            return Err("names no day: write e.g. \"mon-fri\" or \"sat,sun\"".into());
        }
        let mut bits = 0u8;
        for part in text.split(',') {
            match part.split_once('-') {
                Some((from, to)) => {
                    let (from, to) = (day_index(from)?, day_index(to)?);
                    let mut d = from;
                    loop {
                        bits |= 1 << d;
                        if d == to {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => bits |= 1 << day_index(part)?,
            }
        }
        Ok(Weekdays(bits))
    }

    pub fn contains(self, day: chrono::Weekday) -> bool {
        self.0 & (1 << day.num_days_from_monday()) != 0
    }
}

impl Serialize for Weekdays {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let days: Vec<&str> = DAY_NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, d)| *d)
            .collect();
        s.serialize_str(&days.join(","))
    }
}

/// `HH:MM` as minutes after midnight; `24:00` is allowed as an end.
fn parse_clock(field: &str, raw: &str) -> Result<u32, String> {
    let bad = || format!("{field}: \"{raw}\" is not a time of day like 09:00");
    let (h, m) = raw.trim().split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// `+09:00`, `-05:30`, `Z` (or `+00:00`) as seconds east of UTC.
pub fn parse_utc_offset(raw: &str) -> Result<i32, String> {
    let text = raw.trim();
    let bad = || format!("utc_offset: \"{raw}\" is not an offset like +09:00 or -05:30");
    if text == "Z" || text.eq_ignore_ascii_case("utc") {
        return Ok(0);
    }
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: i32 = h.parse().map_err(|_| bad())?;
    let m: i32 = m.parse().map_err(|_| bad())?;
    if h > 14 || m > 59 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

/// Working hours in a fixed UTC offset: `days` from `from` to `to`. When
/// `to` is earlier than `from` the hours run over midnight, and belong to
/// the day they start on: `days = "mon-fri", from = "22:00", to = "06:00"`
/// is Monday 22:00 to Tuesday 06:00, …, Friday 22:00 to Saturday 06:00.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BusinessHours {
    pub days: Weekdays,
    /// Minutes after local midnight.
    pub from: u32,
    pub to: u32,
    /// Seconds east of UTC.
    pub utc_offset: i32,
}

impl BusinessHours {
    pub fn parse(
        days: &str,
        from: &str,
        to: &str,
        utc_offset: Option<&str>,
    ) -> Result<Self, String> {
        let days = Weekdays::parse(days).map_err(|e| format!("days: {e}"))?;
        let from_min = parse_clock("from", from)?;
        let to_min = parse_clock("to", to)?;
        if from_min == to_min {
            return Err("from and to are the same time: the hours would be empty".into());
        }
        if from_min == 24 * 60 {
            return Err("from: 24:00 is only allowed as an end".into());
        }
        let utc_offset = utc_offset.map(parse_utc_offset).transpose()?.unwrap_or(0);
        Ok(BusinessHours {
            days,
            from: from_min,
            to: to_min,
            utc_offset,
        })
    }

    /// Whether `at` falls inside these hours.
    pub fn contains(&self, at: Timestamp) -> bool {
        let local = at.naive_utc() + chrono::Duration::seconds(i64::from(self.utc_offset));
        let minute = local.hour() * 60 + local.minute();
        let day = local.weekday();
        if self.from < self.to {
            self.days.contains(day) && self.from <= minute && minute < self.to
        } else {
            // Over midnight: the evening part belongs to today, the
            // morning part to yesterday's shift.
            (minute >= self.from && self.days.contains(day))
                || (minute < self.to && self.days.contains(day.pred()))
        }
    }
}

/// One on-call shift: `user` is on call in `[starts_at, ends_at)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnCallSlot {
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub user: UserName,
}

/// Who is on call when, read from a file of lines `START END USER`
/// (RFC 3339 instants with an offset, then a user name), e.g.
///
/// ```text
/// # primary on-call, generated from the rota
/// 2026-12-01T09:00:00+09:00  2026-12-08T09:00:00+09:00  alice
/// 2026-12-08T09:00:00+09:00  2026-12-15T09:00:00+09:00  bob
/// ```
///
/// Blank lines and lines starting with `#` are ignored; shifts may overlap
/// (two people on call at once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnCallSchedule {
    /// Where it was read from, for messages.
    pub source: String,
    pub slots: Vec<OnCallSlot>,
}

/// A problem in a schedule file, with its line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

fn parse_instant(raw: &str) -> Result<Timestamp, String> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| {
            format!(
                "\"{raw}\" is not an RFC 3339 date-time with offset (2026-12-01T09:00:00+09:00)"
            )
        })
}

impl OnCallSchedule {
    /// Parses the whole file and reports every bad line at once.
    pub fn parse(source: &str, text: &str) -> Result<Self, Vec<ScheduleError>> {
        let mut slots = Vec::new();
        let mut errors = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            let mut fail = |message: String| {
                errors.push(ScheduleError {
                    line: i + 1,
                    message,
                })
            };
            let [start, end, user] = parts.as_slice() else {
                fail(format!(
                    "expected three fields START END USER, found {}",
                    parts.len()
                ));
                continue;
            };
            let (starts_at, ends_at, user) = match (
                parse_instant(start),
                parse_instant(end),
                UserName::parse(user),
            ) {
                (Ok(s), Ok(e), Ok(u)) => (s, e, u),
                (Err(e), _, _) | (_, Err(e), _) => {
                    fail(e);
                    continue;
                }
                (_, _, Err(e)) => {
                    fail(format!("user: {e}"));
                    continue;
                }
            };
            if ends_at <= starts_at {
                fail(format!("the shift ends ({end}) before it starts ({start})"));
                continue;
            }
            slots.push(OnCallSlot {
                starts_at,
                ends_at,
                user,
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(OnCallSchedule {
            source: source.to_owned(),
            slots,
        })
    }

    pub fn on_call(&self, user: &UserName, at: Timestamp) -> bool {
        self.slots
            .iter()
            .any(|s| &s.user == user && s.starts_at <= at && at < s.ends_at)
    }

    /// The last instant the schedule covers, to warn when it runs out.
    pub fn ends(&self) -> Option<Timestamp> {
        self.slots.iter().map(|s| s.ends_at).max()
    }
}

/// One auto-approval rule of an approval policy. Its conditions are
/// ANDed; a rule must have at least one (the config refuses an empty rule:
/// "approve everything" is `approval_required = false`, said openly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AutoApproveRule {
    pub name: Name,
    /// The requester is in this group.
    pub on_call_group: Option<GroupName>,
    /// The requester is on call in this schedule at the time.
    pub on_call_schedule: Option<OnCallSchedule>,
    pub business_hours: Option<BusinessHours>,
    /// The requested duration is at most this.
    pub max_duration: Option<Span>,
    /// The role is listed in the target's `low_risk_roles`.
    pub low_risk: bool,
}

/// What a rule looks at besides the time.
#[derive(Debug, Clone, Copy)]
pub struct AutoApproveAsk<'a> {
    pub requester: &'a Principal,
    pub duration: Span,
    /// The role is one of the target's low-risk roles.
    pub low_risk_role: bool,
}

impl AutoApproveRule {
    pub fn has_conditions(&self) -> bool {
        self.on_call_group.is_some()
            || self.on_call_schedule.is_some()
            || self.business_hours.is_some()
            || self.max_duration.is_some()
            || self.low_risk
    }

    /// Whether every condition holds for `ask` at `at`. A rule with no
    /// condition never fires (deny by default).
    pub fn fires(&self, ask: &AutoApproveAsk<'_>, at: Timestamp) -> bool {
        self.has_conditions()
            && self
                .on_call_group
                .as_ref()
                .is_none_or(|g| ask.requester.groups.contains(g))
            && self
                .on_call_schedule
                .as_ref()
                .is_none_or(|s| s.on_call(&ask.requester.name, at))
            && self.business_hours.as_ref().is_none_or(|h| h.contains(at))
            && self.max_duration.is_none_or(|m| ask.duration <= m)
            && (!self.low_risk || ask.low_risk_role)
    }

    /// Whether the rule depends on the time it is asked at.
    pub fn time_dependent(&self) -> bool {
        self.on_call_schedule.is_some() || self.business_hours.is_some()
    }
}

/// The rule that approved a request, recorded in its `request.created`
/// event as `"auto_approval": {"rule": ..., "policy": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AutoApproval {
    pub rule: Name,
    pub policy: Name,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::UserName;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Timestamp {
        chrono::Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn person(name: &str, groups: &[&str]) -> Principal {
        let mut p = Principal::new(UserName::parse(name).unwrap());
        p.groups = groups
            .iter()
            .map(|g| GroupName::parse(g).unwrap())
            .collect();
        p
    }

    fn rule() -> AutoApproveRule {
        AutoApproveRule {
            name: Name::parse("rule", "r").unwrap(),
            on_call_group: None,
            on_call_schedule: None,
            business_hours: None,
            max_duration: None,
            low_risk: false,
        }
    }

    #[test]
    fn weekdays_parse_ranges_lists_and_wrapping_ranges() {
        use chrono::Weekday::*;
        let wd = Weekdays::parse("mon-fri").unwrap();
        assert!(wd.contains(Mon) && wd.contains(Fri) && !wd.contains(Sat) && !wd.contains(Sun));
        let wrap = Weekdays::parse("fri-mon").unwrap();
        assert!(wrap.contains(Fri) && wrap.contains(Sun) && wrap.contains(Mon));
        assert!(!wrap.contains(Tue) && !wrap.contains(Thu));
        let list = Weekdays::parse("Monday, wed,sun").unwrap();
        assert!(
            list.contains(Mon) && list.contains(Wed) && list.contains(Sun) && !list.contains(Tue)
        );
        assert!(Weekdays::parse("daily").unwrap().contains(Sat));
        for bad in ["", "mo", "mon-", "funday", "mon-xyz", "montag"] {
            assert!(Weekdays::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn business_hours_are_read_in_their_utc_offset() {
        // 09:00–18:00 in Tokyo (+09:00) is 00:00–09:00 UTC.
        let h = BusinessHours::parse("mon-fri", "09:00", "18:00", Some("+09:00")).unwrap();
        // Monday 2026-12-07 00:00 UTC = Monday 09:00 in Tokyo.
        assert!(h.contains(utc(2026, 12, 7, 0, 0)));
        assert!(h.contains(utc(2026, 12, 7, 8, 59)));
        // 09:00 UTC = 18:00 local: the end is exclusive.
        assert!(!h.contains(utc(2026, 12, 7, 9, 0)));
        // Sunday 23:30 UTC is already Monday 08:30 in Tokyo: not yet open.
        assert!(!h.contains(utc(2026, 12, 6, 23, 30)));
        // Sunday 2026-12-06 00:30 UTC is Sunday in Tokyo too: closed, and
        // Friday 2026-12-04 23:00 UTC is Saturday 08:00 in Tokyo: closed.
        assert!(!h.contains(utc(2026, 12, 6, 0, 30)));
        assert!(!h.contains(utc(2026, 12, 4, 23, 0)));
        // A negative offset moves the other way: New York 09:00 Monday is
        // 14:00 UTC.
        let ny = BusinessHours::parse("mon-fri", "09:00", "17:00", Some("-05:00")).unwrap();
        assert!(!ny.contains(utc(2026, 12, 7, 13, 59)));
        assert!(ny.contains(utc(2026, 12, 7, 14, 0)));
        // Friday 21:30 UTC is Friday 16:30 in New York: open.
        assert!(ny.contains(utc(2026, 12, 4, 21, 30)));
    }

    #[test]
    fn business_hours_over_midnight_belong_to_the_day_they_start() {
        let night = BusinessHours::parse("mon-fri", "22:00", "06:00", None).unwrap();
        // Monday 23:00 and Tuesday 05:59 are in Monday's shift.
        assert!(night.contains(utc(2026, 12, 7, 23, 0)));
        assert!(night.contains(utc(2026, 12, 8, 5, 59)));
        assert!(!night.contains(utc(2026, 12, 8, 6, 0)));
        assert!(!night.contains(utc(2026, 12, 8, 12, 0)));
        // Monday 03:00 belongs to Sunday night, which is not listed.
        assert!(!night.contains(utc(2026, 12, 7, 3, 0)));
        // Saturday 03:00 belongs to Friday night, which is.
        assert!(night.contains(utc(2026, 12, 12, 3, 0)));
        // Saturday 22:00 starts a Saturday shift: not listed.
        assert!(!night.contains(utc(2026, 12, 12, 22, 0)));
    }

    #[test]
    fn business_hours_refuse_bad_values_with_the_field_named() {
        let e = |d: &str, f: &str, t: &str, o: Option<&str>| {
            BusinessHours::parse(d, f, t, o).unwrap_err()
        };
        assert!(e("mon-fri", "9:00", "18:00", None).starts_with("from:"));
        assert!(e("mon-fri", "09:00", "25:00", None).starts_with("to:"));
        assert!(e("mon-fri", "09:00", "09:00", None).contains("same time"));
        assert!(e("weekdays", "09:00", "18:00", None).starts_with("days:"));
        assert!(e("mon-fri", "09:00", "18:00", Some("+9")).starts_with("utc_offset:"));
        assert!(e("mon-fri", "09:00", "18:00", Some("+15:00")).starts_with("utc_offset:"));
        assert!(BusinessHours::parse("mon-fri", "09:00", "24:00", Some("Z")).is_ok());
    }

    #[test]
    fn the_schedule_file_says_who_is_on_call_when() {
        let text = "# rota\n\n2026-12-01T09:00:00+09:00 2026-12-08T09:00:00+09:00 Alice\n2026-12-08T09:00:00+09:00   2026-12-15T09:00:00+09:00\tbob\n";
        let s = OnCallSchedule::parse("oncall.txt", text).unwrap();
        let alice = UserName::parse("alice").unwrap();
        let bob = UserName::parse("bob").unwrap();
        // 2026-12-01T09:00+09:00 is 00:00 UTC.
        assert!(!s.on_call(&alice, utc(2026, 11, 30, 23, 59)));
        assert!(s.on_call(&alice, utc(2026, 12, 1, 0, 0)));
        assert!(s.on_call(&alice, utc(2026, 12, 7, 23, 59)));
        assert!(!s.on_call(&alice, utc(2026, 12, 8, 0, 0)));
        assert!(s.on_call(&bob, utc(2026, 12, 8, 0, 0)));
        assert!(!s.on_call(&bob, utc(2026, 12, 15, 0, 0)));
        assert_eq!(s.ends(), Some(utc(2026, 12, 15, 0, 0)));
    }

    #[test]
    fn schedule_file_errors_name_every_bad_line() {
        let text = "2026-12-01T09:00:00Z 2026-12-02T09:00:00Z alice\n\
                    2026-12-01 2026-12-02 bob\n\
                    # fine\n\
                    2026-12-03T09:00:00Z 2026-12-02T09:00:00Z carol\n\
                    2026-12-03T09:00:00Z 2026-12-04T09:00:00Z\n\
                    2026-12-03T09:00:00Z 2026-12-04T09:00:00Z a:b\n";
        let errors = OnCallSchedule::parse("x", text).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 4, 5, 6], "{errors:?}");
        assert!(errors[0].message.contains("RFC 3339"), "{}", errors[0]);
        assert!(
            errors[1].message.contains("before it starts"),
            "{}",
            errors[1]
        );
        assert!(errors[2].message.contains("three fields"), "{}", errors[2]);
        assert!(errors[3].message.starts_with("user:"), "{}", errors[3]);
        assert_eq!(errors[0].to_string().split(':').next(), Some("line 2"));
    }

    fn ask(p: &Principal, secs: u64, low_risk_role: bool) -> AutoApproveAsk<'_> {
        AutoApproveAsk {
            requester: p,
            duration: Span::from_secs(secs),
            low_risk_role,
        }
    }

    #[test]
    fn a_rule_fires_only_when_all_its_conditions_hold() {
        let alice = person("alice", &["oncall"]);
        let eve = person("eve", &["developers"]);
        let mut r = rule();
        let at = utc(2026, 12, 7, 10, 0);
        // No condition: never fires.
        assert!(!r.fires(&ask(&alice, 60, true), at));
        r.on_call_group = Some(GroupName::parse("oncall").unwrap());
        r.max_duration = Some(Span::from_secs(3600));
        assert!(r.fires(&ask(&alice, 3600, false), at));
        assert!(!r.fires(&ask(&alice, 3601, false), at));
        assert!(!r.fires(&ask(&eve, 60, false), at));
        r.low_risk = true;
        assert!(!r.fires(&ask(&alice, 60, false), at));
        assert!(r.fires(&ask(&alice, 60, true), at));
        r.business_hours = Some(BusinessHours::parse("mon-fri", "09:00", "18:00", None).unwrap());
        assert!(r.fires(&ask(&alice, 60, true), at));
        // Saturday.
        assert!(!r.fires(&ask(&alice, 60, true), utc(2026, 12, 12, 10, 0)));
        assert!(r.time_dependent());
    }

    #[test]
    fn an_on_call_schedule_rule_fires_only_for_the_user_on_call_then() {
        let text = "2026-12-07T00:00:00Z 2026-12-08T00:00:00Z alice\n";
        let mut r = rule();
        r.on_call_schedule = Some(OnCallSchedule::parse("s", text).unwrap());
        let alice = person("alice", &[]);
        let bob = person("bob", &[]);
        assert!(r.fires(&ask(&alice, 60, false), utc(2026, 12, 7, 12, 0)));
        assert!(!r.fires(&ask(&bob, 60, false), utc(2026, 12, 7, 12, 0)));
        assert!(!r.fires(&ask(&alice, 60, false), utc(2026, 12, 8, 0, 0)));
    }
}
