"""Seeds and inspects a moto server for the aws-identity-center tests.

Run by crates/testkit/src/aws_org.rs as `python3 -c <this file> COMMAND
MOTO_URL` with a JSON argument on stdin; prints one JSON answer on stdout.

Commands:
  seed               the organization, OUs, accounts, users, groups and
                     permission sets a spec describes (see aws_org.rs)
  list_assignments   {instance_arn, account_id, permission_set_arn}
  create_assignment  {instance_arn, account_id, permission_set_arn,
                      principal_type, principal_id}
  add_account        {parent_id, name, tags}: one more account in an
                     existing organization, placed under parent_id
"""

import json
import sys

import boto3

REGION = "us-east-1"


def client(url, service):
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def instance(url):
    found = client(url, "sso-admin").list_instances()["Instances"][0]
    return found["InstanceArn"], found["IdentityStoreId"]


def make_user(ids, store, user):
    name = user["user_name"]
    fields = {
        "IdentityStoreId": store,
        "UserName": name,
        "DisplayName": user.get("display_name", name),
        "Name": {"GivenName": name, "FamilyName": "Test"},
    }
    emails = user.get("emails") or []
    # A user without an address has no Emails at all: boto3 refuses an
    # empty list.
    if emails:
        fields["Emails"] = [
            {"Value": e, "Type": "work", "Primary": i == 0}
            for i, e in enumerate(emails)
        ]
    return ids.create_user(**fields)["UserId"]


def add_user(url, ask):
    _, store = instance(url)
    return make_user(client(url, "identitystore"), store, ask)


def delete_user(url, ask):
    _, store = instance(url)
    client(url, "identitystore").delete_user(IdentityStoreId=store, UserId=ask["user_id"])
    return None


def seed(url, spec):
    orgs = client(url, "organizations")
    org = orgs.create_organization(FeatureSet="ALL")["Organization"]
    root = orgs.list_roots()["Roots"][0]["Id"]
    answer = {
        "management_account": org["MasterAccountId"],
        "root": root,
        "ous": {},
        "accounts": {},
        "users": {},
        "groups": {},
        "permission_sets": {},
    }

    def tags(mapping):
        return [{"Key": k, "Value": v} for k, v in (mapping or {}).items()]

    def accounts(parent, specs):
        for account in specs or []:
            created = orgs.create_account(
                AccountName=account["name"],
                Email=account.get("email", account["name"] + "@example.com"),
                Tags=tags(account.get("tags")),
            )["CreateAccountStatus"]
            account_id = created["AccountId"]
            if parent != root:
                orgs.move_account(
                    AccountId=account_id,
                    SourceParentId=root,
                    DestinationParentId=parent,
                )
            answer["accounts"][account["name"]] = account_id

    def units(parent, specs):
        for unit in specs or []:
            made = orgs.create_organizational_unit(
                ParentId=parent, Name=unit["name"], Tags=tags(unit.get("tags"))
            )["OrganizationalUnit"]
            answer["ous"][unit["name"]] = made["Id"]
            accounts(made["Id"], unit.get("accounts"))
            units(made["Id"], unit.get("ous"))

    accounts(root, spec.get("accounts"))
    units(root, spec.get("ous"))

    instance_arn, store = instance(url)
    answer["instance_arn"] = instance_arn
    answer["identity_store_id"] = store
    ids = client(url, "identitystore")
    for user in spec.get("users") or []:
        answer["users"][user["user_name"]] = make_user(ids, store, user)
    for group in spec.get("groups") or []:
        made = ids.create_group(
            IdentityStoreId=store, DisplayName=group["name"]
        )
        answer["groups"][group["name"]] = made["GroupId"]
        for member in group.get("members") or []:
            ids.create_group_membership(
                IdentityStoreId=store,
                GroupId=made["GroupId"],
                MemberId={"UserId": answer["users"][member]},
            )
    sso = client(url, "sso-admin")
    for name in spec.get("permission_sets") or []:
        # SessionDuration always: without it moto answers a number where
        # AWS answers an ISO 8601 duration, which the Rust SDK rejects.
        made = sso.create_permission_set(
            InstanceArn=instance_arn, Name=name, SessionDuration="PT1H"
        )["PermissionSet"]
        answer["permission_sets"][name] = made["PermissionSetArn"]
    return answer


def list_assignments(url, ask):
    sso = client(url, "sso-admin")
    found = []
    pages = sso.get_paginator("list_account_assignments").paginate(
        InstanceArn=ask["instance_arn"],
        AccountId=ask["account_id"],
        PermissionSetArn=ask["permission_set_arn"],
    )
    for page in pages:
        for a in page["AccountAssignments"]:
            found.append([a["PrincipalType"], a["PrincipalId"]])
    return found


def create_assignment(url, ask):
    status = client(url, "sso-admin").create_account_assignment(
        InstanceArn=ask["instance_arn"],
        TargetId=ask["account_id"],
        TargetType="AWS_ACCOUNT",
        PermissionSetArn=ask["permission_set_arn"],
        PrincipalType=ask["principal_type"],
        PrincipalId=ask["principal_id"],
    )["AccountAssignmentCreationStatus"]
    return status["Status"]


def add_account(url, ask):
    orgs = client(url, "organizations")
    root = orgs.list_roots()["Roots"][0]["Id"]
    created = orgs.create_account(
        AccountName=ask["name"],
        Email=ask["name"] + "@example.com",
        Tags=[{"Key": k, "Value": v} for k, v in (ask.get("tags") or {}).items()],
    )["CreateAccountStatus"]
    if ask["parent_id"] != root:
        orgs.move_account(
            AccountId=created["AccountId"],
            SourceParentId=root,
            DestinationParentId=ask["parent_id"],
        )
    return created["AccountId"]


COMMANDS = {
    "add_account": add_account,
    "add_user": add_user,
    "delete_user": delete_user,
    "seed": seed,
    "list_assignments": list_assignments,
    "create_assignment": create_assignment,
}

if __name__ == "__main__":
    command, url = sys.argv[1], sys.argv[2]
    print(json.dumps(COMMANDS[command](url, json.load(sys.stdin))))
