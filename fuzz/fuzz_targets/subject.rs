//! `user:NAME` / `group:NAME` subjects and stored actors on arbitrary text:
//! no panics, and the written form of a subject reads back as itself.
#![no_main]

use elevate_core::principal::{Actor, Principal, Subject};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let s: &str = &text;

    if let Ok(subject) = Subject::parse(s) {
        let shown = subject.to_string();
        assert_eq!(
            Subject::parse(&shown).as_ref().ok(),
            Some(&subject),
            "subject {s:?} is written {shown:?}, which does not parse back to itself"
        );
        let json = serde_json::to_string(&subject).expect("a subject serializes");
        assert_eq!(
            serde_json::from_str::<Subject>(&json).ok().as_ref(),
            Some(&subject)
        );
        // A user subject matches exactly that user.
        if let Subject::User(u) = &subject {
            let p = Principal::new(u.clone());
            assert!(p.matches(&subject));
            assert!(p.matches_any(std::slice::from_ref(&subject)));
        }
    }

    if let Ok(actor) = Actor::from_stored(s) {
        let stored = actor.to_stored();
        assert_eq!(
            Actor::from_stored(&stored).ok(),
            Some(actor.clone()),
            "actor {s:?} is stored as {stored:?}, which does not read back as itself"
        );
        let _ = actor.to_string();
    }
});
