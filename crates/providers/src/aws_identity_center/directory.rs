//! Finding people in the Identity Store: the user a grant is for, and
//! readable names of the principals found holding assignments.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use aws_sdk_identitystore::types::User;
use tokio::time::Instant;

use super::api::{AwsError, PrincipalKind};

/// Who an elevate user is in the Identity Store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UserMatch {
    /// The user id.
    One(String),
    None,
    /// Several users match. Their ids and user names, for the log only:
    /// they are other people's, not the requester's to see.
    Several(Vec<String>),
    /// Only a user of the requester's user name, which has other e-mail
    /// addresses than the requester's.
    OtherEmail {
        user_name: String,
    },
    /// Only a user of the requester's user name, which has no e-mail
    /// address to confirm it is the requester.
    NoEmail {
        user_name: String,
    },
}

/// Addresses and user names are compared ignoring ASCII case only
/// (people type addresses with capitals; the Identity Store keeps them
/// as typed). Full Unicode case folding would match more than the
/// Identity Store or a mail server treats as the same: `to_lowercase`
/// turns U+212A KELVIN SIGN into an ASCII `k`.
fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn has_email(user: &User, email: &str) -> bool {
    user.emails()
        .iter()
        .filter_map(|e| e.value())
        .any(|value| same(value, email))
}

fn describe(user: &User) -> String {
    match user.user_name() {
        Some(user_name) => format!("{} ({user_name})", user.user_id()),
        None => user.user_id().to_owned(),
    }
}

/// The Identity Store user of elevate user `name` with `email`.
///
/// With an e-mail, the e-mail decides: the user must have it. A user of
/// the same user name without it is not taken for the requester (user
/// names are easier to come by than addresses), and one besides the
/// user that has the address makes the match ambiguous. Without an
/// e-mail, the user name decides.
pub(crate) fn choose(users: &[User], name: &str, email: Option<&str>) -> UserMatch {
    let by_name: Vec<&User> = users
        .iter()
        .filter(|u| u.user_name().is_some_and(|user_name| same(user_name, name)))
        .collect();
    let Some(email) = email else {
        return match by_name.as_slice() {
            [] => UserMatch::None,
            [one] => UserMatch::One(one.user_id().to_owned()),
            several => UserMatch::Several(several.iter().map(|u| describe(u)).collect()),
        };
    };
    let by_email: Vec<&User> = users.iter().filter(|u| has_email(u, email)).collect();
    let others: Vec<&User> = by_name
        .iter()
        .filter(|u| !has_email(u, email))
        .copied()
        .collect();
    match (by_email.as_slice(), others.as_slice()) {
        ([one], []) => UserMatch::One(one.user_id().to_owned()),
        ([], []) => UserMatch::None,
        ([], [other]) => {
            let user_name = other.user_name().unwrap_or_default().to_owned();
            if other.emails().iter().any(|e| e.value().is_some()) {
                UserMatch::OtherEmail { user_name }
            } else {
                UserMatch::NoEmail { user_name }
            }
        }
        (found, others) => UserMatch::Several(
            found
                .iter()
                .chain(others.iter())
                .map(|u| describe(u))
                .collect(),
        ),
    }
}

/// How old a listing of the Identity Store may be and still answer a
/// lookup (whose single match is then confirmed against the store).
pub(crate) const LISTING_TTL: Duration = Duration::from_secs(300);
/// A lookup the listing cannot answer lists again (someone may have
/// been provisioned since), unless the same lookup found no one less
/// than this ago: someone the store does not know, asking again and
/// again, costs one listing per this period, not one per request.
pub(crate) const RELIST_AFTER: Duration = Duration::from_secs(10);

/// The Identity Store's users as last listed, shared by every lookup.
///
/// A lookup compares here, over a full listing: the Identity Store's own
/// filters and `GetUserId` compare exactly (and differently on AWS and in
/// moto), and only a full look can tell that a name or address matches
/// more than one person. Listing a large store takes a page per hundred
/// users, so the listing is kept ([`LISTING_TTL`]) and a single match is
/// confirmed with one `DescribeUser` (the address may have moved to
/// someone else since); anything else (no match, several, a match that
/// no longer holds) lists again before answering.
#[derive(Default)]
pub(crate) struct Directory {
    /// The last listing, replaced whole; lookups read it without waiting.
    listed: std::sync::RwLock<Option<Arc<Listed>>>,
    /// Held while listing, so lookups that need a new listing wait for
    /// one instead of each making their own.
    listing: tokio::sync::Mutex<()>,
    /// Lookups (user name and e-mail) no listing could answer, and when.
    missed: std::sync::Mutex<HashMap<String, Instant>>,
    listings: AtomicU64,
}

struct Listed {
    store: String,
    at: Instant,
    users: Vec<User>,
}

impl Directory {
    /// How many times the Identity Store was listed (tests, diagnostics).
    pub(crate) fn listings(&self) -> u64 {
        self.listings.load(Ordering::Relaxed)
    }

    fn current(&self, store: &str) -> Option<Arc<Listed>> {
        let listed = self.listed.read().unwrap_or_else(PoisonError::into_inner);
        listed.as_ref().filter(|l| l.store == store).map(Arc::clone)
    }

    /// The kept listing if `acceptable` takes it, else a new one.
    async fn users(
        &self,
        client: &aws_sdk_identitystore::Client,
        store: &str,
        acceptable: impl Fn(&Listed) -> bool,
    ) -> Result<Arc<Listed>, AwsError> {
        if let Some(l) = self.current(store).filter(|l| acceptable(l)) {
            return Ok(l);
        }
        let _one_at_a_time = self.listing.lock().await;
        // Another lookup may have listed while this one waited.
        if let Some(l) = self.current(store).filter(|l| acceptable(l)) {
            return Ok(l);
        }
        let users: Vec<User> = client
            .list_users()
            .identity_store_id(store)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(|e| AwsError::from_sdk("ListUsers", &e))?;
        self.listings.fetch_add(1, Ordering::Relaxed);
        let listed = Arc::new(Listed {
            store: store.to_owned(),
            at: Instant::now(),
            users,
        });
        *self.listed.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&listed));
        Ok(listed)
    }

    fn missed_lately(&self, lookup: &str) -> bool {
        let missed = self.missed.lock().unwrap_or_else(PoisonError::into_inner);
        missed
            .get(lookup)
            .is_some_and(|at| at.elapsed() <= RELIST_AFTER)
    }

    fn note_miss(&self, lookup: String) {
        let mut missed = self.missed.lock().unwrap_or_else(PoisonError::into_inner);
        missed.retain(|_, at| at.elapsed() <= RELIST_AFTER);
        missed.insert(lookup, Instant::now());
    }

    /// Who elevate user `name` with `email` is in the Identity Store (see
    /// [`choose`]).
    pub(crate) async fn find_user(
        &self,
        client: &aws_sdk_identitystore::Client,
        store: &str,
        name: &str,
        email: Option<&str>,
    ) -> Result<UserMatch, AwsError> {
        let lookup = format!("{name}\u{1f}{}", email.unwrap_or_default());
        let started = Instant::now();
        let listed = self
            .users(client, store, |l| l.at.elapsed() <= LISTING_TTL)
            .await?;
        // What a listing must be at least as new as to answer for sure,
        // and whether the kept one may answer anyway.
        let (fresh_since, may_reuse) = match choose(&listed.users, name, email) {
            UserMatch::One(id) => {
                if still_matches(client, store, &id, name, email).await? {
                    return Ok(UserMatch::One(id));
                }
                // Gone or changed since that listing: only one read after
                // this moment tells who has the address now.
                (Instant::now(), false)
            }
            // A lookup that found no one a moment ago (someone not
            // provisioned, asking again and again) does not list again
            // yet.
            _ => (started, self.missed_lately(&lookup)),
        };
        let listed = self
            .users(client, store, |l| l.at >= fresh_since || may_reuse)
            .await?;
        let found = choose(&listed.users, name, email);
        if !matches!(found, UserMatch::One(_)) {
            self.note_miss(lookup);
        }
        Ok(found)
    }
}

/// Whether user `id` still has the requester's address (or, without one,
/// user name), as the store says now.
async fn still_matches(
    client: &aws_sdk_identitystore::Client,
    store: &str,
    id: &str,
    name: &str,
    email: Option<&str>,
) -> Result<bool, AwsError> {
    let user = match client
        .describe_user()
        .identity_store_id(store)
        .user_id(id)
        .send()
        .await
    {
        Ok(user) => user,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            return Ok(false)
        }
        Err(e) => return Err(AwsError::from_sdk("DescribeUser", &e)),
    };
    Ok(match email {
        Some(email) => user
            .emails()
            .iter()
            .filter_map(|e| e.value())
            .any(|value| same(value, email)),
        None => user.user_name().is_some_and(|u| same(u, name)),
    })
}

/// A user's user name or a group's display name; `None` when the
/// Identity Store does not say (a missing name is not worth failing a
/// reconciliation over).
pub(crate) async fn principal_name(
    client: &aws_sdk_identitystore::Client,
    identity_store_id: &str,
    principal_type: PrincipalKind,
    principal_id: &str,
) -> Option<String> {
    match principal_type {
        PrincipalKind::User => client
            .describe_user()
            .identity_store_id(identity_store_id)
            .user_id(principal_id)
            .send()
            .await
            .ok()?
            .user_name()
            .map(str::to_owned),
        PrincipalKind::Group => client
            .describe_group()
            .identity_store_id(identity_store_id)
            .group_id(principal_id)
            .send()
            .await
            .ok()?
            .display_name()
            .map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_identitystore::types::Email;

    fn user(name: &str, emails: &[&str]) -> User {
        let mut builder = User::builder()
            .identity_store_id("d-1")
            .user_id(format!("id-{name}"))
            .user_arn(format!("arn:aws:identitystore::1:user/id-{name}"))
            .revision("1")
            .user_name(name);
        for email in emails {
            builder = builder.emails(Email::builder().value(*email).build());
        }
        builder.build().expect("the required fields are set")
    }

    fn id(name: &str) -> UserMatch {
        UserMatch::One(format!("id-{name}"))
    }

    #[test]
    fn the_email_finds_the_user_in_any_ascii_case() {
        let users = [user("asmith", &["Alice@Example.COM"]), user("bob", &[])];
        assert_eq!(
            choose(&users, "alice", Some("alice@example.com")),
            id("asmith")
        );
        assert_eq!(
            choose(&users, "ALICE", Some("ALICE@example.com")),
            id("asmith")
        );
        assert_eq!(
            choose(&users, "dave", Some("dave@example.com")),
            UserMatch::None
        );
    }

    #[test]
    fn without_an_email_the_user_name_finds_the_user_in_any_ascii_case() {
        let users = [user("Bob", &["bob@example.com"]), user("carol", &[])];
        assert_eq!(choose(&users, "bob", None), id("Bob"));
        assert_eq!(choose(&users, "CAROL", None), id("carol"));
        assert_eq!(choose(&users, "dave", None), UserMatch::None);
    }

    #[test]
    fn a_user_name_match_with_another_email_or_none_is_not_the_requester() {
        let users = [user("bob", &["bob@example.com"]), user("carol", &[])];
        assert_eq!(
            choose(&users, "bob", Some("bob@evil.example")),
            UserMatch::OtherEmail {
                user_name: "bob".to_owned()
            }
        );
        assert_eq!(
            choose(&users, "Carol", Some("carol@example.com")),
            UserMatch::NoEmail {
                user_name: "carol".to_owned()
            }
        );
    }

    #[test]
    fn a_user_name_of_one_user_and_the_email_of_another_are_ambiguous() {
        let users = [
            user("bob", &["bob@example.com"]),
            user("carol", &["carol@example.com"]),
        ];
        assert!(matches!(
            choose(&users, "bob", Some("carol@example.com")),
            UserMatch::Several(found) if found.len() == 2
        ));
        let twins = [
            user("a", &["same@example.com"]),
            user("b", &["SAME@example.com"]),
        ];
        assert!(matches!(
            choose(&twins, "x", Some("same@example.com")),
            UserMatch::Several(found) if found.len() == 2
        ));
    }

    /// `to_lowercase` folds U+212A KELVIN SIGN to `k`; AWS and mail
    /// servers do not take them for the same letter.
    #[test]
    fn non_ascii_letters_are_not_folded_to_ascii() {
        let kelvin = [user("\u{212A}im", &["\u{212A}im@example.com"])];
        assert_eq!(
            choose(&kelvin, "kim", Some("kim@example.com")),
            UserMatch::None
        );
        assert_eq!(choose(&kelvin, "kim", None), UserMatch::None);
    }
}
