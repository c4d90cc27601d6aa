//! Who is acting: a user with groups and attributes, and how they proved
//! it. Where the user comes from (a local API token, an OpenID Connect
//! sign-in) does not matter past this point, except for step-up checks,
//! which read [`Authn`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::values::{Email, GroupName, UserName};
use crate::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub name: UserName,
    pub email: Option<Email>,
    pub display_name: Option<String>,
    pub groups: BTreeSet<GroupName>,
    /// Claims from the identity provider that eligibilities may test
    /// (`department = "sre"`). Empty for local users.
    pub attributes: BTreeMap<String, String>,
    /// How this caller authenticated, for step-up checks. `None` when the
    /// principal was looked up rather than presented (a deadline re-check).
    #[serde(skip)]
    pub auth: Option<Authn>,
    /// The identity provider gave an address it says it has not verified
    /// (`email_verified: false`): `email` is then empty, and nothing that
    /// would have used the address may fall back to weaker evidence.
    #[serde(skip)]
    pub email_unverified: bool,
}

impl Principal {
    pub fn new(name: UserName) -> Self {
        Principal {
            name,
            email: None,
            display_name: None,
            groups: BTreeSet::new(),
            attributes: BTreeMap::new(),
            auth: None,
            email_unverified: false,
        }
    }

    pub fn matches(&self, subject: &Subject) -> bool {
        match subject {
            Subject::User(u) => *u == self.name,
            Subject::Group(g) => self.groups.contains(g),
        }
    }

    pub fn matches_any(&self, subjects: &[Subject]) -> bool {
        subjects.iter().any(|s| self.matches(s))
    }
}

/// How a caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A local API token from the config (`elv_...`).
    Token,
    /// A bearer token (ID or access token) from the identity provider.
    Oidc,
    /// A browser session created by signing in through the provider.
    Session,
}

/// The authentication behind one call: which method, and what the identity
/// provider asserted about it (RFC 8176 `amr`, `acr`, `auth_time`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Authn {
    pub method: AuthMethod,
    pub issuer: Option<String>,
    pub acr: Option<String>,
    pub amr: Vec<String>,
    pub auth_time: Option<Timestamp>,
    /// When the credential stops being accepted.
    pub expires_at: Option<Timestamp>,
}

impl Authn {
    pub fn token() -> Self {
        Authn {
            method: AuthMethod::Token,
            issuer: None,
            acr: None,
            amr: Vec::new(),
            auth_time: None,
            expires_at: None,
        }
    }
}

/// A user or a group, written `user:alice` or `group:sre` in config.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    User(UserName),
    Group(GroupName),
}

impl Subject {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        match raw.trim().split_once(':') {
            Some(("user", name)) => Ok(Subject::User(UserName::parse(name)?)),
            Some(("group", name)) => Ok(Subject::Group(GroupName::parse(name)?)),
            _ => Err(DomainError::invalid(
                "subject",
                format!("\"{raw}\" must be written user:NAME or group:NAME"),
            )),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::User(u) => write!(f, "user:{u}"),
            Subject::Group(g) => write!(f, "group:{g}"),
        }
    }
}

impl Serialize for Subject {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Subject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Subject::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Who caused a change: a person, or elevate itself (deadlines, provider
/// results).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User(UserName),
    System,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User(u) => write!(f, "{u}"),
            Actor::System => f.write_str("elevate"),
        }
    }
}

impl Actor {
    /// Stored form: `user:NAME` or `system`, so that a user called "system"
    /// can never be confused with elevate itself.
    pub fn to_stored(&self) -> String {
        match self {
            Actor::User(u) => format!("user:{u}"),
            Actor::System => "system".to_owned(),
        }
    }
    pub fn from_stored(raw: &str) -> Result<Self, DomainError> {
        match raw.split_once(':') {
            Some(("user", name)) => Ok(Actor::User(UserName::parse(name)?)),
            _ if raw == "system" => Ok(Actor::System),
            _ => Err(DomainError::invalid("actor", format!("bad actor {raw}"))),
        }
    }
}

impl Serialize for Actor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_stored())
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Actor::from_stored(&s).map_err(serde::de::Error::custom)
    }
}
