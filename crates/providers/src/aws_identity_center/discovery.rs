//! Reading what the target offers: the Organization's tree of OUs and
//! accounts (with names and tags) and the instance's permission sets.
//! Only reads; every list is followed to its last page.

use std::collections::{BTreeMap, VecDeque};

use aws_sdk_organizations::types::{AccountState, AccountStatus};
use futures_util::{stream, StreamExt, TryStreamExt};

use super::api::AwsError;
use super::CONCURRENCY;
use crate::FoundResource;

/// The Organization as discovered.
pub(crate) struct Tree {
    /// The management account's id (`MasterAccountId`).
    pub(crate) management_account: String,
    /// Roots, OUs and active accounts, each parent before its children.
    pub(crate) resources: Vec<FoundResource>,
}

/// What a found resource is; [`FoundResource::kind`] spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResourceKind {
    Root,
    Unit,
    Account,
}

impl ResourceKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Root => "root",
            ResourceKind::Unit => "ou",
            ResourceKind::Account => "account",
        }
    }
}

fn resource(
    id: &str,
    parent: Option<&str>,
    name: Option<&str>,
    kind: ResourceKind,
) -> FoundResource {
    FoundResource {
        id: id.to_owned(),
        parent: parent.map(str::to_owned),
        name: name.map(str::to_owned),
        kind: kind.as_str().to_owned(),
        tags: BTreeMap::new(),
    }
}

/// The Organization's management account (`MasterAccountId`).
pub(crate) async fn management_account(
    client: &aws_sdk_organizations::Client,
) -> Result<String, AwsError> {
    const OPERATION: &str = "DescribeOrganization";
    let answer = client
        .describe_organization()
        .send()
        .await
        .map_err(|e| AwsError::from_sdk(OPERATION, &e))?;
    answer
        .organization()
        .and_then(|o| o.master_account_id())
        .map(str::to_owned)
        .ok_or_else(|| AwsError::malformed(OPERATION, "a management account id"))
}

/// Suspended and closing accounts cannot be used, so they are not
/// offered. `State` replaces the deprecated `Status`; either may be
/// missing depending on the API's vintage (moto sends `Status`).
fn is_active(account: &aws_sdk_organizations::types::Account) -> bool {
    match (account.state(), account.status()) {
        (Some(state), _) => *state == AccountState::Active,
        (None, Some(status)) => *status == AccountStatus::Active,
        (None, None) => true,
    }
}

/// Walks the Organization from its roots down, at any depth.
pub(crate) async fn organization(client: &aws_sdk_organizations::Client) -> Result<Tree, AwsError> {
    let management_account = management_account(client).await?;

    let mut resources = Vec::new();
    let mut parents = VecDeque::new();
    let mut pages = client.list_roots().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AwsError::from_sdk("ListRoots", &e))?;
        for root in page.roots() {
            let id = root
                .id()
                .ok_or_else(|| AwsError::malformed("ListRoots", "a root id"))?;
            resources.push(resource(id, None, root.name(), ResourceKind::Root));
            parents.push_back(id.to_owned());
        }
    }

    while let Some(parent) = parents.pop_front() {
        let mut pages = client
            .list_organizational_units_for_parent()
            .parent_id(&parent)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| AwsError::from_sdk("ListOrganizationalUnitsForParent", &e))?;
            for unit in page.organizational_units() {
                let id = unit.id().ok_or_else(|| {
                    AwsError::malformed("ListOrganizationalUnitsForParent", "an OU id")
                })?;
                resources.push(resource(id, Some(&parent), unit.name(), ResourceKind::Unit));
                parents.push_back(id.to_owned());
            }
        }
        let mut pages = client
            .list_accounts_for_parent()
            .parent_id(&parent)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("ListAccountsForParent", &e))?;
            for account in page.accounts().iter().filter(|a| is_active(a)) {
                let id = account
                    .id()
                    .ok_or_else(|| AwsError::malformed("ListAccountsForParent", "an account id"))?;
                resources.push(resource(
                    id,
                    Some(&parent),
                    account.name(),
                    ResourceKind::Account,
                ));
            }
        }
    }

    // One call per account and OU: run a few at once, not all (AWS
    // Organizations throttles at a few calls per second).
    // Owned ids: a stream of borrowed ones would not be Send for every
    // lifetime, as the async trait needs.
    let ids: Vec<(usize, String)> = resources
        .iter()
        .enumerate()
        .filter(|(_, found)| found.kind != ResourceKind::Root.as_str())
        .map(|(index, found)| (index, found.id.clone()))
        .collect();
    let tagged: Vec<(usize, BTreeMap<String, String>)> = stream::iter(ids)
        .map(|(index, id)| async move { Ok::<_, AwsError>((index, tags(client, &id).await?)) })
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    for (index, tags) in tagged {
        if let Some(found) = resources.get_mut(index) {
            found.tags = tags;
        }
    }
    Ok(Tree {
        management_account,
        resources,
    })
}

async fn tags(
    client: &aws_sdk_organizations::Client,
    id: &str,
) -> Result<BTreeMap<String, String>, AwsError> {
    let mut tags = BTreeMap::new();
    let mut pages = client
        .list_tags_for_resource()
        .resource_id(id)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AwsError::from_sdk("ListTagsForResource", &e))?;
        for tag in page.tags() {
            tags.insert(tag.key().to_owned(), tag.value().to_owned());
        }
    }
    Ok(tags)
}

/// Every permission set of the instance: (name, ARN), in ARN order.
pub(crate) async fn permission_sets(
    client: &aws_sdk_ssoadmin::Client,
    instance_arn: &str,
) -> Result<Vec<(String, String)>, AwsError> {
    let arns: Vec<String> = client
        .list_permission_sets()
        .instance_arn(instance_arn)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<_, _>>()
        .await
        .map_err(|e| AwsError::from_sdk("ListPermissionSets", &e))?;
    stream::iter(arns)
        .map(|arn| async move {
            const OPERATION: &str = "DescribePermissionSet";
            let answer = client
                .describe_permission_set()
                .instance_arn(instance_arn)
                .permission_set_arn(&arn)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk(OPERATION, &e))?;
            let name = answer
                .permission_set()
                .and_then(|set| set.name())
                .ok_or_else(|| AwsError::malformed(OPERATION, "a permission set name"))?
                .to_owned();
            Ok((name, arn))
        })
        .buffered(CONCURRENCY)
        .try_collect()
        .await
}
