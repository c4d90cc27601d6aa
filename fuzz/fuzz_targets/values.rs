//! The value parsers of `elevate_core::values` on arbitrary text: none may
//! panic, and what they accept must keep the promises the rest of elevate
//! relies on (bounded, trimmed, stable when stored and parsed again).
#![no_main]

use elevate_core::values::{
    Comment, Email, GroupName, Justification, Name, RequestId, Span, Ticket, UserName,
    JUSTIFICATION_MAX_CHARS,
};
use libfuzzer_sys::fuzz_target;

/// A year, the longest span elevate accepts.
const SPAN_MAX_SECS: u64 = 366 * 24 * 3600;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let s: &str = &text;

    span(s);
    justification(s);
    ticket(s);
    comment(s);
    user_name(s);
    group_name(s);
    email(s);
    name(s);
    request_id(s, data);
});

fn span(s: &str) {
    let Ok(span) = Span::parse("duration", s) else {
        return;
    };
    assert!(
        (1..=SPAN_MAX_SECS).contains(&span.secs()),
        "{s:?} parsed to {} seconds",
        span.secs()
    );
    // The displayed form (what the API and `check-config` print) reads back
    // as the same span, as text and through serde.
    let shown = span.to_string();
    assert_eq!(
        Span::parse("duration", &shown).ok(),
        Some(span),
        "{s:?} shown as {shown:?}"
    );
    let json = serde_json::to_string(&span).expect("a span serializes");
    assert_eq!(
        serde_json::from_str::<Span>(&json).ok(),
        Some(span),
        "{s:?} as JSON {json}"
    );
    assert_eq!(span.as_chrono().num_seconds(), span.secs() as i64);
}

/// Text without control characters other than line breaks and tabs.
fn no_hidden_control(s: &str) -> bool {
    !s.chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
}

fn justification(s: &str) {
    let Ok(j) = Justification::parse(s) else {
        return;
    };
    let v = j.as_str();
    let chars = v.chars().count();
    assert!(
        (1..=JUSTIFICATION_MAX_CHARS).contains(&chars),
        "justification of {chars} characters from {s:?}"
    );
    assert_eq!(v, v.trim(), "justification not trimmed: {v:?}");
    assert_eq!(v, s.trim(), "justification changed beyond trimming");
    assert!(no_hidden_control(v), "control characters kept: {v:?}");
    assert_eq!(Justification::parse(v).ok(), Some(j));
}

fn ticket(s: &str) {
    let Ok(t) = Ticket::parse(s) else {
        return;
    };
    let v = t.as_str();
    let chars = v.chars().count();
    assert!((1..=200).contains(&chars), "ticket of {chars} characters");
    assert_eq!(v, v.trim(), "ticket not trimmed: {v:?}");
    assert!(!v.chars().any(char::is_control), "control in ticket {v:?}");
    assert_eq!(Ticket::parse(v).ok(), Some(t));
}

fn comment(s: &str) {
    let Ok(c) = Comment::parse(s) else {
        return;
    };
    let v = c.as_str();
    assert!(v.chars().count() <= JUSTIFICATION_MAX_CHARS);
    assert_eq!(v, v.trim(), "comment not trimmed: {v:?}");
    assert_eq!(c.is_empty(), v.is_empty());
    assert!(no_hidden_control(v), "control characters kept: {v:?}");
    assert_eq!(Comment::parse(v).ok(), Some(c));
}

fn user_name(s: &str) {
    let parsed = UserName::parse(s);
    if let Ok(u) = &parsed {
        let v = u.as_str();
        assert!(!v.is_empty() && !v.contains(':'), "bad user name {v:?}");
        assert!(!v.chars().any(char::is_control), "control in {v:?}");
        // Stored names are read back through the same parser (audit
        // actors, requesters): the stored form must parse to itself.
        assert_eq!(
            UserName::parse(v).as_ref().ok(),
            Some(u),
            "user name {s:?} is stored as {v:?}, which does not parse back to itself"
        );
    }
    if s.is_ascii() {
        let upper = UserName::parse(&s.to_ascii_uppercase());
        if let (Ok(a), Ok(b)) = (&parsed, &upper) {
            assert_eq!(a, b, "user names differ only by case: {s:?}");
        }
    }
}

fn group_name(s: &str) {
    let parsed = GroupName::parse(s);
    if let Ok(g) = &parsed {
        let v = g.as_str();
        assert!(!v.is_empty(), "empty group name from {s:?}");
        assert!(!v.chars().any(char::is_control), "control in {v:?}");
        assert_eq!(
            GroupName::parse(v).as_ref().ok(),
            Some(g),
            "group name {s:?} is stored as {v:?}, which does not parse back to itself"
        );
    }
    if s.is_ascii() {
        let upper = GroupName::parse(&s.to_ascii_uppercase());
        if let (Ok(a), Ok(b)) = (&parsed, &upper) {
            assert_eq!(a, b, "group names differ only by case: {s:?}");
        }
    }
}

fn email(s: &str) {
    let parsed = Email::parse(s);
    if let Ok(e) = &parsed {
        let v = e.as_str();
        let (local, domain) = v.split_once('@').expect("an e-mail has an @");
        assert!(!local.is_empty() && !domain.is_empty() && !domain.contains('@'));
        assert!(!v.contains(char::is_whitespace), "whitespace in {v:?}");
        assert_eq!(
            Email::parse(v).as_ref().ok(),
            Some(e),
            "e-mail {s:?} is stored as {v:?}, which does not parse back to itself"
        );
    }
    if s.is_ascii() {
        let upper = Email::parse(&s.to_ascii_uppercase());
        if let (Ok(a), Ok(b)) = (&parsed, &upper) {
            assert_eq!(a, b, "e-mails differ only by case: {s:?}");
        }
    }
}

fn name(s: &str) {
    let Ok(n) = Name::parse("id", s) else {
        return;
    };
    // Names keep their case and are never altered.
    assert_eq!(n.as_str(), s);
    assert_eq!(n.to_string(), s);
    let chars = s.chars().count();
    assert!((1..=200).contains(&chars), "name of {chars} characters");
    assert_eq!(Name::parse("id", n.as_str()).ok(), Some(n));
}

fn request_id(s: &str, data: &[u8]) {
    if let Ok(id) = RequestId::parse(s) {
        let v = id.as_str();
        assert_eq!(v.len(), 14, "request id {v:?}");
        assert!(v.starts_with("r-"));
        assert!(v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        assert_eq!(id.to_string(), v);
        assert_eq!(RequestId::parse(v).ok(), Some(id.clone()));
        let json = serde_json::to_string(&id).expect("an id serializes");
        assert_eq!(serde_json::from_str::<RequestId>(&json).ok(), Some(id));
    }
    // Ids made from random bits always parse back.
    let mut bits = [0u8; 8];
    let n = data.len().min(8);
    bits[..n].copy_from_slice(&data[..n]);
    let made = RequestId::from_random(u64::from_le_bytes(bits));
    assert_eq!(RequestId::parse(made.as_str()).ok(), Some(made));
}
