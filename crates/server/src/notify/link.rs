//! One-time approval links for e-mails to approvers.
//!
//! A link is `/links/TOKEN` with `TOKEN = base64url(claims) "." base64url(mac)`,
//! the MAC being HMAC-SHA256 under a key generated once and kept in the
//! store (every replica signs and checks with the same one). The claims
//! name the request, the approver the mail was sent to, the decision the
//! link offers, when it expires, and a random nonce.
//!
//! A link never acts by itself: opening it (a GET, which mail scanners
//! and link previews do) shows a confirmation page, and only a POST from
//! the signed-in approver named in it, with the session's CSRF token,
//! decides. The nonce is spent by that POST, so a link works once; the
//! approve and reject links of one mail share their nonce, so using one
//! spends both.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{TimeZone, Utc};
use elevate_core::Timestamp;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Where the signing key is kept in the store's shared settings.
pub const KEY_SETTING: &str = "approval_link_key";

/// The decision a link offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }
}

/// What a link says, once its signature checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Request id.
    pub r: String,
    /// The approver's user name.
    pub u: String,
    /// The decision offered.
    pub d: Decision,
    /// Expiry, in Unix seconds.
    pub e: i64,
    /// Nonce, spent on use.
    pub n: String,
}

impl Claims {
    pub fn expires_at(&self) -> Timestamp {
        Utc.timestamp_opt(self.e, 0).single().unwrap_or_default()
    }
}

/// Why a link is refused. The messages are shown to the person who
/// opened it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// Malformed or not signed by this elevate.
    Invalid,
    Expired,
    Used,
}

impl LinkError {
    pub fn code(&self) -> &'static str {
        match self {
            LinkError::Invalid => "link_invalid",
            LinkError::Expired => "link_expired",
            LinkError::Used => "link_used",
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            LinkError::Invalid => {
                "This link is not valid: it is incomplete or was not issued by this elevate. \
                 Open the request from elevate instead."
            }
            LinkError::Expired => {
                "This link has expired. Open the request from elevate to decide on it."
            }
            LinkError::Used => {
                "This link was used already: each approval link works once. \
                 Open the request from elevate to see where it stands."
            }
        }
    }
}

/// A fresh random key (hex), for [`KEY_SETTING`].
pub fn new_key() -> String {
    let mut key = [0_u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    hex::encode(key)
}

/// A fresh nonce shared by the links of one message.
pub fn new_nonce() -> String {
    let mut n = [0_u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut n);
    URL_SAFE_NO_PAD.encode(n)
}

fn mac(key: &[u8]) -> Result<Hmac<Sha256>, LinkError> {
    // HMAC takes keys of any length: this fails for no key.
    Hmac::<Sha256>::new_from_slice(key).map_err(|_| LinkError::Invalid)
}

/// The token for `claims`.
pub fn sign(key: &[u8], claims: &Claims) -> Result<String, LinkError> {
    let json = serde_json::to_vec(claims).map_err(|_| LinkError::Invalid)?;
    let body = URL_SAFE_NO_PAD.encode(json);
    let mut m = mac(key)?;
    m.update(body.as_bytes());
    let tag = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    Ok(format!("{body}.{tag}"))
}

/// Checks a token's signature (in constant time) and expiry. Whether it
/// was spent is the store's to say.
pub fn verify(key: &[u8], token: &str, now: Timestamp) -> Result<Claims, LinkError> {
    // Tokens are short; anything long is not one of ours.
    if token.len() > 1024 {
        return Err(LinkError::Invalid);
    }
    let (body, tag) = token.split_once('.').ok_or(LinkError::Invalid)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| LinkError::Invalid)?;
    let mut m = mac(key)?;
    m.update(body.as_bytes());
    m.verify_slice(&tag).map_err(|_| LinkError::Invalid)?;
    let raw = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| LinkError::Invalid)?;
    let claims: Claims = serde_json::from_slice(&raw).map_err(|_| LinkError::Invalid)?;
    if now.timestamp() >= claims.e {
        return Err(LinkError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(e: i64) -> Claims {
        Claims {
            r: "req-1".into(),
            u: "bob".into(),
            d: Decision::Approve,
            e,
            n: new_nonce(),
        }
    }

    #[test]
    fn a_signed_link_verifies_until_it_expires() {
        let key = b"0123456789abcdef0123456789abcdef";
        let now = Utc::now();
        let c = claims(now.timestamp() + 60);
        let token = sign(key, &c).unwrap_or_default();
        assert_eq!(verify(key, &token, now), Ok(c.clone()));
        let later = now + chrono::Duration::seconds(61);
        assert_eq!(verify(key, &token, later), Err(LinkError::Expired));
    }

    #[test]
    fn altered_or_foreign_links_are_invalid() {
        let key = b"0123456789abcdef0123456789abcdef";
        let now = Utc::now();
        let token = sign(key, &claims(now.timestamp() + 60)).unwrap_or_default();
        // Another key.
        assert_eq!(
            verify(b"another key, another elevate....", &token, now),
            Err(LinkError::Invalid)
        );
        // Claims changed (another approver) with the old tag.
        let (_, tag) = token.split_once('.').unwrap_or_default();
        let mut forged = claims(now.timestamp() + 60);
        forged.u = "mallory".into();
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap_or_default());
        assert_eq!(
            verify(key, &format!("{body}.{tag}"), now),
            Err(LinkError::Invalid)
        );
        // Garbage, truncation, an expiry pushed forward.
        for bad in ["", ".", "abc", "a.b", &token[..token.len() - 2]] {
            assert_eq!(verify(key, bad, now), Err(LinkError::Invalid), "{bad}");
        }
        assert_eq!(verify(key, &"x".repeat(5000), now), Err(LinkError::Invalid));
    }
}
