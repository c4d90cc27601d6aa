//! `elevate serve --dev`: a complete demo on a fresh machine. Four demo
//! users with fixed tokens, a dry-run target (nothing real is touched),
//! eligibilities and approval policies that show approval, quorum,
//! tickets and break-glass. The config is ordinary TOML, so what the demo
//! does is exactly what the same file would do in production.

use crate::auth::token_hash;

/// The demo users: name, groups, token. The tokens are fixed so the README
/// can use them; dev mode only listens on loopback.
pub const USERS: [(&str, &str, &str); 4] = [
    ("alice", "developers", "dev-alice"),
    ("bob", "dba", "dev-bob"),
    ("carol", "dba", "dev-carol"),
    ("dave", "security", "dev-dave"),
];

pub fn config_text(database: &str, listen: &str) -> String {
    let mut users = String::new();
    for (name, group, token) in USERS {
        users.push_str(&format!(
            "[[users]]\nname = \"{name}\"\nemail = \"{name}@example.com\"\ngroups = [\"{group}\"]\ntoken_hashes = [\"{}\"]\n\n",
            token_hash(token)
        ));
    }
    format!(
        r#"# elevate --dev: demo configuration (dry-run target, demo users).
admins = ["group:security"]
auditors = ["group:security"]

[server]
listen = "{listen}"
database = "{database}"
retry_max_backoff = "10s"

[limits]
min_duration = "1m"

{users}
[[targets]]
id = "demo-db"
kind = "dry-run"
roles = ["orders_reader", "orders_writer", "db_admin"]

[[targets.resources]]
id = "prod"
description = "production databases"

[[targets.resources]]
id = "orders"
parent = "prod"
tags = {{ env = "prod", team = "orders" }}

[[targets.resources]]
id = "billing"
parent = "prod"
tags = {{ env = "prod", team = "billing" }}

[[targets.resources]]
id = "staging"
description = "staging databases"

[[targets.resources]]
id = "orders-staging"
parent = "staging"
tags = {{ env = "staging", team = "orders" }}

# Developers use staging freely, no approval.
[[eligibilities]]
id = "developers-staging"
subjects = ["group:developers"]
target = "demo-db"
resources = {{ under = ["staging"] }}
roles = ["orders_reader", "orders_writer"]
max_duration = "8h"
approval_required = false

# Production needs a DBA's approval; break-glass allowed for incidents.
[[eligibilities]]
id = "developers-prod"
subjects = ["group:developers"]
target = "demo-db"
resources = {{ under = ["prod"] }}
roles = ["orders_reader", "orders_writer"]
max_duration = "2h"
break_glass = true

# Admin on production: a ticket and two approvals.
[[eligibilities]]
id = "developers-prod-admin"
subjects = ["group:developers"]
target = "demo-db"
resources = {{ tags = {{ env = "prod" }} }}
roles = ["db_admin"]
max_duration = "1h"
ticket_required = true

[[approval_policies]]
id = "prod-dba"
target = "demo-db"
resources = {{ under = ["prod"] }}
approvers = ["group:dba"]
quorum = 1
pending_timeout = "3h"

[[approval_policies]]
id = "prod-admin-two-person"
target = "demo-db"
resources = {{ tags = {{ env = "prod" }} }}
roles = ["db_admin"]
approvers = ["group:dba", "group:security"]
quorum = 2
pending_timeout = "1h"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_dev_config_is_valid_and_has_no_warnings() {
        let c = Config::parse(&config_text("sqlite::memory:", "127.0.0.1:7070"), None).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.users.len(), 4);
    }
}
