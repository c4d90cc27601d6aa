//! Who is calling. This version knows local users with API tokens; an
//! identity provider (OpenID Connect) slots in as another way to turn a
//! bearer credential into a [`Principal`], behind the same
//! [`Directory::authenticate`].
//!
//! Tokens are random (`elv_` + 43 base62 characters, ~256 bits), so a
//! plain SHA-256 is the right hash for them: no password stretching is
//! needed against guessing a 256-bit secret, and it keeps each API call
//! cheap. Config stores only `sha256:HEX`.
//!
//! Lookup is by digest in a hash map, then the digest is compared again in
//! constant time. The map's own comparison can only leak how much of a
//! *digest* matched, and knowing a prefix of SHA-256(token) does not help
//! anyone find a token; a linear constant-time scan would cost a
//! millisecond per request with 100,000 users.

use std::collections::HashMap;

use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use elevate_core::principal::Principal;
use elevate_core::values::UserName;

use crate::config::LocalUser;

pub const TOKEN_PREFIX: &str = "elv_";

/// A fresh token and the line to put in the user's `token_hashes`.
pub fn new_token() -> (String, String) {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rngs::OsRng;
    let body: String = (0..43)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    let token = format!("{TOKEN_PREFIX}{body}");
    let hash = token_hash(&token);
    (token, hash)
}

pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The config form of a token's hash: `sha256:HEX`.
pub fn token_hash(token: &str) -> String {
    format!("sha256:{}", hex::encode(digest(token)))
}

pub fn parse_token_hash(raw: &str) -> Option<[u8; 32]> {
    let hex_part = raw.trim().strip_prefix("sha256:")?;
    let bytes = hex::decode(hex_part).ok()?;
    bytes.try_into().ok()
}

/// The users elevate knows and how to recognise them.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    users: Vec<LocalUser>,
    /// Token digest → index in `users`.
    by_digest: HashMap<[u8; 32], usize>,
    /// User name → index in `users`.
    by_name: HashMap<UserName, usize>,
}

impl Directory {
    pub fn new(users: Vec<LocalUser>) -> Self {
        let by_digest = users
            .iter()
            .enumerate()
            .flat_map(|(i, u)| u.token_digests.iter().map(move |d| (*d, i)))
            .collect();
        let by_name = users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.principal.name.clone(), i))
            .collect();
        Directory {
            users,
            by_digest,
            by_name,
        }
    }

    pub fn get(&self, name: &UserName) -> Option<&Principal> {
        self.users
            .get(*self.by_name.get(name)?)
            .map(|u| &u.principal)
    }

    /// The user holding `token`, if any.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let presented = digest(token);
        let user = self.users.get(*self.by_digest.get(&presented)?)?;
        user.token_digests
            .iter()
            .any(|stored| bool::from(stored.ct_eq(&presented)))
            .then(|| user.principal.clone())
    }

    pub fn users(&self) -> impl Iterator<Item = &Principal> {
        self.users.iter().map(|u| &u.principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_authenticates_its_user_and_nothing_else() {
        let (token, hash) = new_token();
        assert!(token.starts_with("elv_") && token.len() == 47);
        let user = LocalUser {
            principal: Principal::new(UserName::parse("alice").unwrap()),
            token_digests: vec![parse_token_hash(&hash).unwrap()],
        };
        let dir = Directory::new(vec![user]);
        assert_eq!(dir.authenticate(&token).unwrap().name.as_str(), "alice");
        assert!(dir.authenticate("elv_wrong").is_none());
        assert!(dir.authenticate("").is_none());
        assert!(parse_token_hash("sha256:zz").is_none());
        assert!(parse_token_hash("md5:00").is_none());
    }
}
