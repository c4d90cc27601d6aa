//! Signed event webhooks: every audit event, POSTed as JSON, in chain
//! order, to each configured URL.
//!
//! Each POST carries:
//!
//! ```text
//! Content-Type: application/json
//! Elevate-Webhook: NAME
//! Elevate-Event: request.created
//! Elevate-Event-Seq: 42
//! Elevate-Signature: t=1764612000,v1=HEX
//! ```
//!
//! `v1` is the lowercase hex HMAC-SHA256, keyed with the webhook's secret,
//! of the ASCII decimal `t`, a `.`, and the exact body bytes. A receiver
//! recomputes it over the body as received, compares in constant time,
//! and refuses a `t` more than a few minutes from its clock (a replayed
//! old delivery). The body is the audit record (`seq`, `at`, `actor`,
//! `action`, `request`, `details`, `prev_hash`, `hash`): `seq` rises by
//! one from event to event and `prev_hash` is the previous event's
//! `hash`, so a receiver can see it missed nothing and dedupe a repeat
//! (a delivery whose answer was lost is sent again).
//!
//! Any 2xx answer accepts the event. Anything else, a redirect included,
//! is retried with backoff; the events after it wait, so they never
//! arrive out of order or with a gap.

use std::time::Duration;

use elevate_store::audit::AuditRecord;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::WebhookSettings;

/// `t=…,v1=…` for `body` sent at Unix time `t`.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", hex::encode(mac(secret, t, body)))
}

fn mac(secret: &[u8], t: i64, body: &[u8]) -> Vec<u8> {
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(secret) else {
        // HMAC takes keys of any length; unreachable.
        return Vec::new();
    };
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

/// Checks a signature header the way a receiver should: returns the
/// timestamp when `header` is a valid signature of `body` under `secret`.
/// Used by elevate's tests as a consumer would, and documented as the
/// reference.
pub fn verify(secret: &[u8], header: &str, body: &[u8]) -> Option<i64> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.push(hex::decode(v).ok()?),
            _ => {}
        }
    }
    let t = t?;
    sigs.iter()
        .any(|s| {
            let Ok(mut m) = Hmac::<Sha256>::new_from_slice(secret) else {
                return false;
            };
            m.update(t.to_string().as_bytes());
            m.update(b".");
            m.update(body);
            // verify_slice compares in constant time.
            m.verify_slice(s).is_ok()
        })
        .then_some(t)
}

/// POSTs one event. `Err` says why it was not accepted, without the
/// secret.
pub async fn post(
    http: &reqwest::Client,
    hook: &WebhookSettings,
    rec: &AuditRecord,
) -> Result<(), String> {
    let body = serde_json::to_vec(rec).map_err(|e| format!("cannot encode event: {e}"))?;
    let t = chrono::Utc::now().timestamp();
    let resp = http
        .post(&hook.url)
        .timeout(hook.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Elevate-Webhook", &hook.name)
        .header("Elevate-Event", &rec.action)
        .header("Elevate-Event-Seq", rec.seq.to_string())
        .header(
            "Elevate-Signature",
            signature(hook.secret.as_bytes(), t, &body),
        )
        .body(body)
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {status}"))
    }
}

/// A transport error in a few words, without the URL (which may carry a
/// token).
pub fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        // Without the URL, which may carry a token.
        let text = e.to_string();
        match e.url() {
            Some(u) => text.replace(u.as_str(), "(url)"),
            None => text,
        }
    }
}

/// The client webhooks and chat posts use: no redirects (a signed event
/// goes where it was configured to, or nowhere).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("elevate/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_body_and_secret() {
        let secret = b"0123456789abcdef-secret";
        let body = br#"{"seq":1,"action":"request.created"}"#;
        let header = signature(secret, 1_764_612_000, body);
        assert!(header.starts_with("t=1764612000,v1="));
        assert_eq!(verify(secret, &header, body), Some(1_764_612_000));
        assert_eq!(
            verify(secret, &header, br#"{"seq":2,"action":"request.created"}"#),
            None
        );
        assert_eq!(verify(b"another secret..........", &header, body), None);
        // Another timestamp with the same tag.
        let moved = header.replace("t=1764612000", "t=1764612999");
        assert_eq!(verify(secret, &moved, body), None);
        for bad in ["", "t=1", "v1=00", "t=x,v1=zz"] {
            assert_eq!(verify(secret, bad, body), None, "{bad}");
        }
    }
}
