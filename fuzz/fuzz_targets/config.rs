//! `Config::parse` on arbitrary text must never panic: it either returns a
//! checked config or a list of problems. An accepted config must also give
//! a catalog that answers "what may this user request?" for every user.
#![no_main]

use std::collections::HashMap;

use elevate::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text: &str = &text;
    if reads_a_file(text) {
        return;
    }
    // Lines are counted from 1 and cannot be past the end of the text.
    let lines = text.matches('\n').count() + 1;
    match Config::parse(text, None) {
        Err(problems) => {
            for p in &problems {
                let _ = p.to_string();
                if let Some(line) = p.line {
                    assert!(
                        (1..=lines).contains(&line),
                        "problem at line {line} of a {lines}-line text: {p}"
                    );
                }
            }
        }
        Ok(config) => {
            for p in &config.warnings {
                assert!(p.warning, "an error among the warnings: {p}");
                let _ = p.to_string();
            }
            let now = chrono::Utc::now();
            let _ = config.eligibility_ids();
            let catalog = config.catalog(&HashMap::new(), now);
            for user in &config.users {
                let p = &user.principal;
                let _ = catalog.is_admin(p);
                let _ = catalog.is_auditor(p);
                for role in catalog.eligible_roles(p, now) {
                    // Every role offered must exist where it is offered.
                    let target = catalog
                        .targets
                        .get(&role.target)
                        .expect("an eligible role names a known target");
                    assert!(target.roles.contains(&role.role));
                    assert!(target.resources.contains_key(&role.resource));
                    let _ = catalog.approval_requirement(&role.target, &role.resource, &role.role);
                }
            }
        }
    }
});

/// Whether the config names a `password_file`: `Config::parse` would read
/// it, and a fuzzer that writes `/dev/zero` or a FIFO there finds only
/// that reading a file without bound takes long (the config is trusted).
fn reads_a_file(text: &str) -> bool {
    // The key is spelt out somewhere, or hidden behind an escape in a
    // quoted key.
    if !text.contains("file") && !text.contains('\\') {
        return false;
    }
    fn has_key(v: &toml::Value) -> bool {
        match v {
            toml::Value::Table(t) => t
                .iter()
                .any(|(k, v)| k.contains("password_file") || has_key(v)),
            toml::Value::Array(a) => a.iter().any(has_key),
            _ => false,
        }
    }
    match toml::from_str::<toml::Table>(text) {
        Ok(t) => has_key(&toml::Value::Table(t)),
        Err(_) => false,
    }
}
