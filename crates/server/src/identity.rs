//! People known through the identity provider: turning verified claims
//! into a [`Principal`], and finding a person by name when no call is in
//! flight (eligibility re-checks, provider jobs).
//!
//! The stable subject (`iss` + `sub`) identifies a person. The first
//! sign-in binds it to a user name (from the configured claim, by default
//! `preferred_username`); later sign-ins keep that name even if the
//! provider's username or e-mail changes, and a different subject claiming
//! a bound name is refused (`identity_conflict`) rather than inheriting the
//! other person's eligibilities and grants.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use elevate_core::principal::{AuthMethod, Authn, Principal};
use elevate_core::values::{Email, GroupName, UserName};
use elevate_core::Timestamp;
use elevate_store::Binding;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::Broker;
use crate::error::ApiError;
use crate::oidc::{Oidc, Verified};

/// What elevate remembers of a person between sign-ins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub email: Option<String>,
    /// The provider said the address it gave is not verified.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub email_unverified: bool,
    pub display_name: Option<String>,
    pub groups: Vec<String>,
    pub attributes: BTreeMap<String, String>,
}

impl Profile {
    pub fn principal(&self, name: UserName) -> Principal {
        let mut p = Principal::new(name);
        p.email = self.email.as_deref().and_then(|e| Email::parse(e).ok());
        p.email_unverified = self.email_unverified;
        p.display_name = self.display_name.clone();
        p.groups = self
            .groups
            .iter()
            .filter_map(|g| GroupName::parse(g).ok())
            .collect();
        p.attributes = self.attributes.clone();
        p
    }

    pub(crate) fn of(p: &Principal) -> Profile {
        Profile {
            email: p.email.as_ref().map(|e| e.as_str().to_owned()),
            email_unverified: p.email_unverified,
            display_name: p.display_name.clone(),
            groups: p.groups.iter().map(|g| g.as_str().to_owned()).collect(),
            attributes: p.attributes.clone(),
        }
    }
}

/// A claim as text: strings as they are, numbers and booleans written out.
fn claim_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Groups from a claim holding a list of names or a single name. Names
/// elevate cannot use are skipped (and logged), not fatal: a provider may
/// send groups that matter only elsewhere.
fn groups_of(v: &Value) -> BTreeSet<GroupName> {
    let names: Vec<&str> = match v {
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        Value::String(s) => vec![s.as_str()],
        _ => Vec::new(),
    };
    names
        .into_iter()
        .filter_map(|g| match GroupName::parse(g) {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::debug!(group = g, error = %e, "ignoring a group elevate cannot name");
                None
            }
        })
        .collect()
}

impl Broker {
    /// The person a verified token speaks for, bound by subject.
    pub async fn principal_from_claims(
        &self,
        oidc: &Oidc,
        v: &Verified,
        method: AuthMethod,
        now: Timestamp,
    ) -> Result<Principal, ApiError> {
        let s = &oidc.settings;
        let issuer = v.str("iss").unwrap_or_default().trim_end_matches('/');
        let subject = v.str("sub").unwrap_or_default();
        let known = self.store.identity_by_subject(issuer, subject).await?;
        let stored: Option<Profile> = known
            .as_ref()
            .and_then(|k| serde_json::from_str(&k.profile).ok());
        // The name: the one bound to this subject, else the claim.
        let claimed = v.claims.get(&s.username_claim).and_then(claim_text);
        let name_text = match (&known, &claimed) {
            (Some(k), _) => k.user_name.clone(),
            (None, Some(c)) => c.clone(),
            (None, None) => {
                return Err(ApiError::client(
                    StatusCode::UNAUTHORIZED,
                    "token_no_user",
                    format!(
                        "the token has no \"{}\" claim and its subject has never signed in to elevate; sign in through the browser or the CLI first",
                        s.username_claim
                    ),
                ))
            }
        };
        let name = UserName::parse(&name_text).map_err(|e| {
            ApiError::client(
                StatusCode::UNAUTHORIZED,
                "token_no_user",
                format!("the token's user name cannot be used in elevate: {e}"),
            )
        })?;
        let conflict = |name: &UserName| {
            ApiError::client(
                StatusCode::FORBIDDEN,
                "identity_conflict",
                format!(
                    "the user name \"{name}\" already belongs to another account at the identity provider or in elevate's configuration; an administrator must resolve this"
                ),
            )
        };
        // A configured local user (API token) owns its name as surely as a
        // bound subject does: sharing it would give this account the local
        // user's requests and grants, and make later eligibility re-checks
        // use the local user's groups. Checked on every sign-in, not only
        // the first, because the local user may have been added since.
        if self.directory.get(&name).is_some() {
            tracing::warn!(user = %name, issuer, subject, "an identity claims the name of a configured local user");
            return Err(conflict(&name));
        }
        // Each part of the profile comes from the token when it says it,
        // else from what an earlier sign-in said (an access token may
        // carry no groups).
        let mut p = stored.clone().unwrap_or_default().principal(name.clone());
        if let Some(e) = v.claims.get(&s.email_claim).and_then(Value::as_str) {
            // An address the provider says it has not verified is anyone's
            // to type: it must not become this person's (mail about their
            // access, the AWS Identity Store user they are matched with).
            // A provider that does not say is taken at its word.
            // `email_verified` speaks of the standard `email` claim only.
            let verified = v
                .claims
                .get("email_verified")
                .filter(|_| s.email_claim == "email");
            let unverified = matches!(verified, Some(Value::Bool(false)))
                || verified.and_then(Value::as_str) == Some("false");
            p.email = if unverified {
                tracing::info!(user = %name, "the identity provider marks this user's e-mail address unverified; it is not used");
                None
            } else {
                Email::parse(e).ok()
            };
            p.email_unverified = unverified;
        }
        if let Some(n) = v.str("name") {
            p.display_name = Some(n.to_owned());
        }
        if let Some(g) = v.claims.get(&s.groups_claim) {
            p.groups = groups_of(g);
        }
        for claim in &s.attribute_claims {
            if let Some(value) = v.claims.get(claim).and_then(claim_text) {
                p.attributes.insert(claim.clone(), value);
            }
        }
        let profile = Profile::of(&p);
        let profile_json = serde_json::to_string(&profile)
            .map_err(|e| ApiError::Store(elevate_store::StoreError::Corrupt(e.to_string())))?;
        match self
            .store
            .bind_identity(issuer, subject, name.as_str(), &profile_json, now)
            .await?
        {
            Binding::Bound { user_name } if user_name == name.as_str() => {}
            Binding::Bound { .. } | Binding::NameTaken { .. } => {
                tracing::warn!(user = %name, issuer, subject, "a second identity claims a user name that is already bound");
                return Err(conflict(&name));
            }
        }
        p.auth = Some(Authn {
            method,
            issuer: Some(issuer.to_owned()),
            acr: v.str("acr").map(str::to_owned),
            amr: match v.claims.get("amr") {
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                _ => Vec::new(),
            },
            auth_time: v.time("auth_time"),
            expires_at: Some(v.expires_at),
        });
        Ok(p)
    }

    /// A person by name, as last known: a configured user, or someone who
    /// signed in through the identity provider.
    pub async fn person(&self, name: &UserName) -> Result<Option<Principal>, ApiError> {
        if let Some(p) = self.directory.get(name) {
            return Ok(Some(p.clone()));
        }
        let Some(identity) = self.store.identity_by_user(name.as_str()).await? else {
            return Ok(None);
        };
        let profile: Profile = serde_json::from_str(&identity.profile).map_err(|e| {
            ApiError::Store(elevate_store::StoreError::Corrupt(format!(
                "profile of {name}: {e}"
            )))
        })?;
        Ok(Some(profile.principal(name.clone())))
    }
}
