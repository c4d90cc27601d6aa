//! Finding people in the Identity Store: the user a grant is for, and
//! readable names of the principals found holding assignments.

use aws_sdk_identitystore::types::User;

use super::api::AwsError;

/// Who an elevate user is in the Identity Store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UserMatch {
    One(String),
    None,
    /// The user ids (and user names) of everyone who matched.
    Several(Vec<String>),
}

/// Whether `user` is the Identity Store user of elevate user `name` with
/// `email`: same user name, or one of its e-mails, ignoring case (people
/// type addresses with capitals; the Identity Store keeps them as
/// typed).
fn matches(user: &User, name: &str, email: Option<&str>) -> bool {
    let same = |a: &str, b: &str| a.to_lowercase() == b.to_lowercase();
    user.user_name()
        .is_some_and(|user_name| same(user_name, name))
        || email.is_some_and(|email| {
            user.emails()
                .iter()
                .filter_map(|e| e.value())
                .any(|value| same(value, email))
        })
}

/// Looks the user up by listing every user and comparing here: the
/// Identity Store's own filters and `GetUserId` compare exactly (and
/// differently on AWS and in moto), and only a full look can tell that a
/// name or address matches more than one person.
pub(crate) async fn find_user(
    client: &aws_sdk_identitystore::Client,
    identity_store_id: &str,
    name: &str,
    email: Option<&str>,
) -> Result<UserMatch, AwsError> {
    let users: Vec<User> = client
        .list_users()
        .identity_store_id(identity_store_id)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<_, _>>()
        .await
        .map_err(|e| AwsError::from_sdk("ListUsers", &e))?;
    let mut found: Vec<&User> = users.iter().filter(|u| matches(u, name, email)).collect();
    Ok(match found.len() {
        0 => UserMatch::None,
        1 => UserMatch::One(found.remove(0).user_id().to_owned()),
        _ => UserMatch::Several(
            found
                .iter()
                .map(|u| match u.user_name() {
                    Some(user_name) => format!("{} ({user_name})", u.user_id()),
                    None => u.user_id().to_owned(),
                })
                .collect(),
        ),
    })
}

/// A user's user name or a group's display name; `None` when the
/// Identity Store does not say (a missing name is not worth failing a
/// reconciliation over).
pub(crate) async fn principal_name(
    client: &aws_sdk_identitystore::Client,
    identity_store_id: &str,
    principal_type: &str,
    principal_id: &str,
) -> Option<String> {
    match principal_type {
        "USER" => client
            .describe_user()
            .identity_store_id(identity_store_id)
            .user_id(principal_id)
            .send()
            .await
            .ok()?
            .user_name()
            .map(str::to_owned),
        "GROUP" => client
            .describe_group()
            .identity_store_id(identity_store_id)
            .group_id(principal_id)
            .send()
            .await
            .ok()?
            .display_name()
            .map(str::to_owned),
        _ => None,
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

    #[test]
    fn user_name_and_email_match_ignoring_case() {
        let alice = user("Alice", &["Alice@Example.COM"]);
        assert!(matches(&alice, "alice", None));
        assert!(matches(&alice, "someone", Some("alice@example.com")));
        assert!(!matches(&alice, "bob", Some("bob@example.com")));
        assert!(!matches(&alice, "bob", None));
    }
}
