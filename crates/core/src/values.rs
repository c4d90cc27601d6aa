//! Values that cross a boundary (config, API, CLI) are parsed into these
//! types once; code that holds one never re-checks it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::DomainError;

fn has_control(s: &str) -> bool {
    s.chars().any(|c| c.is_control())
}

/// A user name. Compared case-insensitively (people type `Alice` and
/// `alice` for the same person), so it is stored in its lowercase form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserName(String);

impl UserName {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        // Lowercase first and check the result: lowercasing can lengthen a
        // name ('İ' becomes two characters), and the stored form must parse
        // back to itself.
        let lower = raw.trim().to_lowercase();
        let s = lower.trim();
        if s.is_empty() || s.chars().count() > 256 {
            return Err(DomainError::invalid(
                "user",
                "a user name must have 1 to 256 characters",
            ));
        }
        if has_control(s) || s.contains(':') {
            return Err(DomainError::invalid(
                "user",
                format!("\"{s}\" is not a valid user name (no control characters or ':')"),
            ));
        }
        Ok(UserName(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for UserName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        UserName::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A group name, compared case-insensitively like user names: identity
/// providers are inconsistent about the case of group names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct GroupName(String);

impl GroupName {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let lower = raw.trim().to_lowercase();
        let s = lower.trim();
        if s.is_empty() || s.chars().count() > 256 || has_control(s) {
            return Err(DomainError::invalid(
                "group",
                format!("\"{}\" is not a valid group name", raw.trim()),
            ));
        }
        Ok(GroupName(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for GroupName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        GroupName::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An e-mail address. The whole address is compared case-insensitively:
/// strictly the local part is case-sensitive, but no real mail system
/// treats it so, and requests going missing because of `Alice@` versus
/// `alice@` is a known failure of other tools.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let lower = raw.trim().to_lowercase();
        let s = lower.trim();
        let valid = s.len() <= 320
            && !has_control(s)
            && !s.contains(char::is_whitespace)
            && matches!(s.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
        if !valid {
            return Err(DomainError::invalid(
                "email",
                format!("\"{s}\" is not an e-mail address"),
            ));
        }
        Ok(Email(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Email::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An identifier of a configured object (target, resource, role,
/// eligibility, policy). Any script is allowed; case is kept because the
/// systems behind them (database roles, account names) are case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, DomainError> {
        if raw.is_empty() || raw.chars().count() > 200 {
            return Err(DomainError::invalid(field, "must have 1 to 200 characters"));
        }
        if has_control(raw) || raw.trim() != raw {
            return Err(DomainError::invalid(
                field,
                format!("\"{raw}\" has control characters or surrounding spaces"),
            ));
        }
        Ok(Name(raw.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Name::parse("name", &s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why someone needs access. Any Unicode text (Japanese, emoji, RTL
/// scripts), 1 to 2000 characters after trimming. Only control characters
/// other than line breaks and tabs are refused, since they can hide text in
/// terminals and logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Justification(String);

pub const JUSTIFICATION_MAX_CHARS: usize = 2000;

impl Justification {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let s = raw.trim();
        let chars = s.chars().count();
        if chars == 0 {
            return Err(DomainError::invalid(
                "reason",
                "a justification is required",
            ));
        }
        if chars > JUSTIFICATION_MAX_CHARS {
            return Err(DomainError::invalid(
                "reason",
                format!(
                    "the justification has {chars} characters; at most {JUSTIFICATION_MAX_CHARS} are allowed"
                ),
            ));
        }
        if s.chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
        {
            return Err(DomainError::invalid(
                "reason",
                "the justification contains control characters",
            ));
        }
        Ok(Justification(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A reference to a change or incident ticket (e.g. `INC-1234`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ticket(String);

impl Ticket {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let s = raw.trim();
        if s.is_empty() || s.chars().count() > 200 || has_control(s) {
            return Err(DomainError::invalid(
                "ticket",
                "a ticket reference must have 1 to 200 printable characters",
            ));
        }
        Ok(Ticket(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a ticket reference must look like for an eligibility
/// (`ticket_pattern`): a regular expression that must match the *whole*
/// reference (it is anchored at both ends, so `CHG-[0-9]+` refuses
/// `xCHG-1` and `CHG-1 please`).
#[derive(Clone)]
pub struct TicketPattern {
    source: String,
    regex: regex_automata::meta::Regex,
}

impl TicketPattern {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        if raw.trim().is_empty() {
            return Err(DomainError::invalid(
                "ticket_pattern",
                "must not be empty (leave it out to accept any ticket)",
            ));
        }
        let regex = regex_automata::meta::Regex::new(&format!("^(?:{raw})$")).map_err(|e| {
            DomainError::invalid(
                "ticket_pattern",
                format!("\"{raw}\" is not a regular expression: {e}"),
            )
        })?;
        Ok(TicketPattern {
            source: raw.to_owned(),
            regex,
        })
    }

    pub fn matches(&self, ticket: &Ticket) -> bool {
        self.regex.is_match(ticket.as_str())
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for TicketPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TicketPattern({:?})", self.source)
    }
}

impl PartialEq for TicketPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for TicketPattern {}

impl Serialize for TicketPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// An approver's or revoker's comment: optional, any language, at most
/// 2000 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Comment(String);

impl Comment {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let s = raw.trim();
        if s.chars().count() > JUSTIFICATION_MAX_CHARS {
            return Err(DomainError::invalid(
                "comment",
                format!("a comment may have at most {JUSTIFICATION_MAX_CHARS} characters"),
            ));
        }
        if s.chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
        {
            return Err(DomainError::invalid(
                "comment",
                "the comment contains control characters",
            ));
        }
        Ok(Comment(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A length of time in whole seconds, written like `90s`, `15m`, `1h30m`,
/// `2d` (or a bare number of seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(u64);

/// The longest span accepted anywhere (a year): keeps arithmetic on
/// timestamps far from overflow whatever a client sends.
const SPAN_MAX_SECS: u64 = 366 * 24 * 3600;

impl Span {
    pub fn from_secs(secs: u64) -> Self {
        Span(secs.min(SPAN_MAX_SECS))
    }
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, DomainError> {
        let bad = || {
            DomainError::invalid(
                field,
                format!("\"{raw}\" is not a duration (examples: 90s, 15m, 1h30m, 2d)"),
            )
        };
        let s = raw.trim();
        if s.is_empty() {
            return Err(bad());
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            let secs: u64 = s.parse().map_err(|_| bad())?;
            return Self::checked(field, secs, raw);
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                'w' => 7 * 86_400,
                _ => return Err(bad()),
            };
            if digits.is_empty() {
                return Err(bad());
            }
            let n: u64 = digits.parse().map_err(|_| bad())?;
            digits.clear();
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(bad)?;
        }
        if !digits.is_empty() {
            return Err(bad());
        }
        Self::checked(field, total, raw)
    }
    fn checked(field: &'static str, secs: u64, raw: &str) -> Result<Self, DomainError> {
        if secs == 0 {
            return Err(DomainError::invalid(
                field,
                format!("\"{raw}\" is zero; a duration must be positive"),
            ));
        }
        if secs > SPAN_MAX_SECS {
            return Err(DomainError::invalid(
                field,
                format!("\"{raw}\" is longer than a year"),
            ));
        }
        Ok(Span(secs))
    }
    pub fn secs(self) -> u64 {
        self.0
    }
    pub fn as_chrono(self) -> chrono::Duration {
        // Bounded by SPAN_MAX_SECS, so the conversion cannot wrap.
        chrono::Duration::seconds(self.0 as i64)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        let d = rest / 86_400;
        rest %= 86_400;
        let h = rest / 3600;
        rest %= 3600;
        let m = rest / 60;
        let s = rest % 60;
        let mut out = String::new();
        for (n, u) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
            if n > 0 {
                out.push_str(&format!("{n}{u}"));
            }
        }
        if out.is_empty() {
            out.push_str("0s");
        }
        f.write_str(&out)
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Span::checked("duration", n, &n.to_string()),
            Raw::Text(t) => Span::parse("duration", &t),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// A request's identifier: `r-` and 12 lowercase base-32 characters, short
/// enough to read aloud and type in a CLI.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RequestId(String);

const ID_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

impl RequestId {
    /// Builds an id from 60 random bits supplied by the caller (the domain
    /// has no randomness of its own).
    pub fn from_random(bits: u64) -> Self {
        let mut s = String::from("r-");
        for i in 0..12 {
            let idx = ((bits >> (i * 5)) & 31) as usize;
            s.push(ID_ALPHABET[idx] as char);
        }
        RequestId(s)
    }
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let s = raw.trim();
        let ok = s.len() == 14
            && s.starts_with("r-")
            && s.bytes().skip(2).all(|b| ID_ALPHABET.contains(&b));
        if !ok {
            return Err(DomainError::invalid(
                "id",
                format!("\"{s}\" is not a request id (like r-abcd2345efgh)"),
            ));
        }
        Ok(RequestId(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RequestId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_and_emails_compare_case_insensitively() {
        assert_eq!(
            UserName::parse("Alice").unwrap(),
            UserName::parse("alice ").unwrap()
        );
        assert_eq!(
            Email::parse("Alice@Example.COM").unwrap(),
            Email::parse("alice@example.com").unwrap()
        );
        assert!(Email::parse("not-an-address").is_err());
        assert!(Email::parse("a@b@c").is_err());
    }

    #[test]
    fn names_that_grow_when_lowercased_are_checked_after_lowercasing() {
        assert!(UserName::parse(&"İ".repeat(129)).is_err());
        let ok = UserName::parse(&"İ".repeat(100)).unwrap();
        assert_eq!(UserName::parse(ok.as_str()).unwrap(), ok);
        assert!(Email::parse(&format!("a@{}", "Ⱥ".repeat(159))).is_err());
        assert!(GroupName::parse(&format!(":{}", "İ".repeat(128))).is_err());
    }

    #[test]
    fn justification_accepts_any_script_and_is_trimmed() {
        let j = Justification::parse("  本番DBの障害対応のため 🚑 שלום  ").unwrap();
        assert_eq!(j.as_str(), "本番DBの障害対応のため 🚑 שלום");
        let two_thousand_kanji: String = "障".repeat(2000);
        assert!(Justification::parse(&two_thousand_kanji).is_ok());
    }

    #[test]
    fn justification_refuses_empty_oversize_and_control_text() {
        assert!(Justification::parse("   ").is_err());
        assert!(Justification::parse(&"x".repeat(2001)).is_err());
        assert!(Justification::parse(&"x".repeat(10_000)).is_err());
        assert!(Justification::parse("hidden\u{1b}[2Jtext").is_err());
        assert!(Justification::parse("two\nlines").is_ok());
    }

    #[test]
    fn spans_parse_human_units_and_refuse_nonsense() {
        assert_eq!(Span::parse("d", "1h30m").unwrap().secs(), 5400);
        assert_eq!(Span::parse("d", "90").unwrap().secs(), 90);
        assert_eq!(Span::parse("d", "2d").unwrap().secs(), 172_800);
        assert_eq!(Span::parse("d", "1h30m").unwrap().to_string(), "1h30m");
        for bad in [
            "",
            "h",
            "1x",
            "0m",
            "-5m",
            "1.5h",
            "99999999999999999999d",
            "400d",
        ] {
            assert!(Span::parse("d", bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn ticket_patterns_match_the_whole_reference() {
        let p = TicketPattern::parse("CHG-[0-9]+").unwrap();
        let t = |s: &str| Ticket::parse(s).unwrap();
        assert!(p.matches(&t("CHG-1234")));
        assert!(!p.matches(&t("xCHG-1234")));
        assert!(!p.matches(&t("CHG-1234 please")));
        assert!(!p.matches(&t("chg-1")));
        // Alternation stays inside the anchors.
        let either = TicketPattern::parse("INC-[0-9]+|CHG-[0-9]+").unwrap();
        assert!(either.matches(&t("INC-7")));
        assert!(!either.matches(&t("INC-7x")));
        let bad = TicketPattern::parse("CHG-[0-9").unwrap_err();
        assert_eq!(bad.code(), "invalid_input");
        assert!(bad.to_string().contains("ticket_pattern"), "{bad}");
        assert!(TicketPattern::parse("  ").is_err());
    }

    #[test]
    fn request_ids_round_trip_and_refuse_garbage() {
        let id = RequestId::from_random(0x0123_4567_89ab_cdef);
        assert_eq!(RequestId::parse(id.as_str()).unwrap(), id);
        assert!(RequestId::parse("r-../../etc").is_err());
        assert!(RequestId::parse("1; DROP TABLE").is_err());
    }
}
