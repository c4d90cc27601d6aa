//! Who is acting: a user with groups. Where the user comes from (local
//! config now, an identity provider later) does not matter past this point.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::values::{Email, GroupName, UserName};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub name: UserName,
    pub email: Option<Email>,
    pub display_name: Option<String>,
    pub groups: BTreeSet<GroupName>,
}

impl Principal {
    pub fn new(name: UserName) -> Self {
        Principal {
            name,
            email: None,
            display_name: None,
            groups: BTreeSet::new(),
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
