//! The PostgreSQL provider against a real throwaway cluster (see
//! `elevate_testkit::PgCluster`; needs PostgreSQL installed). Every test
//! starts its own cluster, so tests are independent and run in parallel.
//! Effects are checked on PostgreSQL itself: memberships through psql as
//! superuser, and behaviour through a real session of the user `alice`.

use std::collections::BTreeMap;

use elevate_providers::postgres::{PostgresConfig, PostgresProvider};
use elevate_providers::{GrantSpec, Presence, Provider, ProviderError};
use elevate_testkit::PgCluster;
use sqlx::{Connection, PgConnection};

/// A broker set up as the docs ask, one grantable role that alone may
/// write `orders`, and a user `alice` who may log in but not write.
const SETUP: &str = r#"
    CREATE ROLE broker LOGIN PASSWORD 'broker-password' CREATEROLE;
    CREATE ROLE orders_writer NOLOGIN;
    GRANT orders_writer TO broker WITH ADMIN OPTION;
    GRANT pg_signal_backend TO broker;
    CREATE TABLE orders (id int);
    REVOKE ALL ON orders FROM PUBLIC;
    GRANT SELECT, INSERT ON orders TO orders_writer;
    CREATE ROLE alice LOGIN PASSWORD 'a';
"#;

struct Fixture {
    cluster: PgCluster,
    provider: PostgresProvider,
}

/// A fresh cluster with [`SETUP`] and a provider logged in as `broker`
/// that may grant `roles`.
fn start(roles: &[&str]) -> anyhow::Result<Fixture> {
    start_with(roles, BTreeMap::new())
}

fn start_with(roles: &[&str], user_map: BTreeMap<String, String>) -> anyhow::Result<Fixture> {
    let cluster = PgCluster::start()?;
    cluster.psql(SETUP)?;
    let provider = PostgresProvider::new(config(&cluster, "broker", roles, user_map))?;
    Ok(Fixture { cluster, provider })
}

fn config(
    cluster: &PgCluster,
    user: &str,
    roles: &[&str],
    user_map: BTreeMap<String, String>,
) -> PostgresConfig {
    PostgresConfig {
        host: "127.0.0.1".to_owned(),
        port: cluster.port(),
        database: "postgres".to_owned(),
        user: user.to_owned(),
        password: Some("broker-password".to_owned()),
        connect_timeout_secs: 1,
        user_map,
        roles: roles.iter().map(|r| r.to_string()).collect(),
    }
}

fn grant(role: &str, user: &str) -> GrantSpec {
    GrantSpec {
        request_id: "req-1".to_owned(),
        target: "orders-db".to_owned(),
        resource: "postgres".to_owned(),
        role: role.to_owned(),
        user: user.to_owned(),
        email: None,
        account: None,
        window_ends_at: None,
        ended_early: false,
        email_unverified: false,
    }
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// How many direct memberships of `login` in `role` PostgreSQL records.
fn memberships(cluster: &PgCluster, login: &str, role: &str) -> anyhow::Result<u32> {
    let count = cluster.psql(&format!(
        "SELECT count(*) FROM pg_auth_members m
         JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
         WHERE r.rolname = {} AND u.rolname = {}",
        quote_literal(role),
        quote_literal(login)
    ))?;
    Ok(count.parse()?)
}

fn is_member(cluster: &PgCluster, login: &str, role: &str) -> anyhow::Result<bool> {
    Ok(memberships(cluster, login, role)? > 0)
}

async fn connect(cluster: &PgCluster, login: &str, password: &str) -> anyhow::Result<PgConnection> {
    Ok(PgConnection::connect(&cluster.url(login, Some(password), "postgres")).await?)
}

async fn alice(cluster: &PgCluster) -> anyhow::Result<PgConnection> {
    connect(cluster, "alice", "a").await
}

/// Runs `sql` on `connection`; Err carries PostgreSQL's error.
async fn run(connection: &mut PgConnection, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sql).execute(connection).await.map(|_| ())
}

fn order_count(cluster: &PgCluster) -> anyhow::Result<u32> {
    Ok(cluster.psql("SELECT count(*) FROM orders")?.parse()?)
}

fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned())
}

#[tokio::test]
async fn apply_lets_the_user_set_role_and_write() -> anyhow::Result<()> {
    let Fixture { cluster, provider } = start(&["orders_writer"])?;
    let mut before = alice(&cluster).await?;
    let refused = run(&mut before, "SET ROLE orders_writer")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&refused).as_deref(), Some("42501"), "{refused}");

    provider.apply(&grant("orders_writer", "alice")).await?;

    assert!(is_member(&cluster, "alice", "orders_writer")?);
    let mut session = alice(&cluster).await?;
    run(&mut session, "SET ROLE orders_writer").await?;
    run(&mut session, "INSERT INTO orders VALUES (1)").await?;
    assert_eq!(order_count(&cluster)?, 1);
    Ok(())
}

#[tokio::test]
async fn apply_twice_is_success() -> anyhow::Result<()> {
    let Fixture { cluster, provider } = start(&["orders_writer"])?;
    provider.apply(&grant("orders_writer", "alice")).await?;
    provider.apply(&grant("orders_writer", "alice")).await?;
    assert_eq!(memberships(&cluster, "alice", "orders_writer")?, 1);
    Ok(())
}

#[tokio::test]
async fn remove_twice_is_success() -> anyhow::Result<()> {
    let Fixture { cluster, provider } = start(&["orders_writer"])?;
    provider.apply(&grant("orders_writer", "alice")).await?;
    assert!(is_member(&cluster, "alice", "orders_writer")?);

    provider.remove(&grant("orders_writer", "alice")).await?;
    provider.remove(&grant("orders_writer", "alice")).await?;

    assert!(!is_member(&cluster, "alice", "orders_writer")?);
    let mut session = alice(&cluster).await?;
    assert!(run(&mut session, "SET ROLE orders_writer").await.is_err());
    Ok(())
}

#[tokio::test]
async fn remove_when_login_or_role_is_missing_is_success() -> anyhow::Result<()> {
    let Fixture { cluster, provider } = start(&["orders_writer"])?;
    provider.remove(&grant("orders_writer", "nobody")).await?;
    provider.remove(&grant("no_such_role", "alice")).await?;
    // Nothing else was touched.
    cluster.psql("GRANT orders_writer TO alice")?;
    provider.remove(&grant("no_such_role", "alice")).await?;
    assert!(is_member(&cluster, "alice", "orders_writer")?);
    Ok(())
}

#[tokio::test]
async fn remove_terminates_a_session_that_already_set_role() -> anyhow::Result<()> {
    let Fixture { cluster, provider } = start(&["orders_writer"])?;
    provider.apply(&grant("orders_writer", "alice")).await?;
    let mut session = alice(&cluster).await?;
    run(&mut session, "SET ROLE orders_writer").await?;
    run(&mut session, "INSERT INTO orders VALUES (1)").await?;
    // A second session of alice that never used the role ends too: we
    // cannot tell them apart.
    let mut idle = alice(&cluster).await?;

    provider.remove(&grant("orders_writer", "alice")).await?;

    assert!(
        run(&mut session, "INSERT INTO orders VALUES (2)")
            .await
            .is_err(),
        "the session that set the role must be gone"
    );
    assert!(run(&mut idle, "SELECT 1").await.is_err());
    assert_eq!(order_count(&cluster)?, 1);
    let mut fresh = alice(&cluster).await?;
    let refused = run(&mut fresh, "SET ROLE orders_writer").await.unwrap_err();
    assert_eq!(sqlstate(&refused).as_deref(), Some("42501"), "{refused}");
    assert_eq!(
        provider.check(&grant("orders_writer", "alice")).await?,
        Presence::Absent
    );
    Ok(())
}

#[tokio::test]
async fn check_reports_presence() -> anyhow::Result<()> {
    let Fixture { cluster, provider } = start(&["orders_writer"])?;
    let alice_writes = grant("orders_writer", "alice");
    assert_eq!(provider.check(&alice_writes).await?, Presence::Absent);

    provider.apply(&alice_writes).await?;
    assert_eq!(provider.check(&alice_writes).await?, Presence::Present);

    // What is on the target counts, not what the provider remembers.
    cluster.psql("REVOKE orders_writer FROM alice")?;
    assert_eq!(provider.check(&alice_writes).await?, Presence::Absent);
    cluster.psql("GRANT orders_writer TO alice")?;
    assert_eq!(provider.check(&alice_writes).await?, Presence::Present);

    provider.remove(&alice_writes).await?;
    assert_eq!(provider.check(&alice_writes).await?, Presence::Absent);
    assert_eq!(
        provider.check(&grant("no_such_role", "nobody")).await?,
        Presence::Absent
    );
    Ok(())
}

#[tokio::test]
async fn validate_is_clean_when_set_up() -> anyhow::Result<()> {
    // Bound, not `..`: the cluster must live until the end of the test.
    let Fixture {
        cluster: _cluster,
        provider,
    } = start(&["orders_writer"])?;
    assert_eq!(provider.validate().await?, Vec::<String>::new());
    Ok(())
}

#[tokio::test]
async fn validate_reports_missing_privileges() -> anyhow::Result<()> {
    let Fixture {
        cluster,
        provider: _,
    } = start(&["orders_writer"])?;
    cluster.psql("CREATE ROLE weak_broker LOGIN PASSWORD 'broker-password'")?;
    let weak = PostgresProvider::new(config(
        &cluster,
        "weak_broker",
        &["orders_writer", "ghost_role"],
        BTreeMap::new(),
    ))?;

    let problems = weak.validate().await?;

    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].contains("pg_signal_backend"), "{problems:#?}");
    assert!(
        problems[1].contains("\"orders_writer\"") && problems[1].contains("CREATEROLE"),
        "{problems:#?}"
    );
    assert!(
        problems[2].contains("\"ghost_role\" does not exist"),
        "{problems:#?}"
    );

    // Fixing them on the target makes validate clean.
    cluster.psql(
        "ALTER ROLE weak_broker CREATEROLE; GRANT pg_signal_backend TO weak_broker;
         CREATE ROLE ghost_role NOLOGIN",
    )?;
    assert_eq!(weak.validate().await?, Vec::<String>::new());
    Ok(())
}

#[tokio::test]
async fn unreachable_target_is_retryable() -> anyhow::Result<()> {
    let Fixture { cluster, provider } = start(&["orders_writer"])?;
    // The pool holds a live connection when the server goes away.
    provider.apply(&grant("orders_writer", "alice")).await?;
    cluster.stop()?;

    let bob = grant("orders_writer", "bob");
    // Concurrently: each waits out the 1 s connect timeout.
    let (apply, remove, check, validate) = tokio::join!(
        provider.apply(&bob),
        provider.remove(&bob),
        provider.check(&bob),
        provider.validate(),
    );
    let errors = [
        apply.unwrap_err(),
        remove.unwrap_err(),
        check.unwrap_err(),
        validate.unwrap_err(),
    ];
    for error in &errors {
        assert!(error.is_retryable(), "{error}");
        assert!(
            error
                .to_string()
                .contains(&format!("127.0.0.1:{}", cluster.port())),
            "{error}"
        );
        assert!(!error.to_string().contains("broker-password"), "{error}");
    }
    assert!(
        errors[3]
            .to_string()
            .starts_with("cannot connect to PostgreSQL at"),
        "{}",
        errors[3]
    );

    cluster.start_again()?;
    cluster.psql("CREATE ROLE bob LOGIN")?;
    provider.apply(&bob).await?;
    assert!(is_member(&cluster, "bob", "orders_writer")?);
    Ok(())
}

#[tokio::test]
async fn unknown_role_is_permanent_on_apply() -> anyhow::Result<()> {
    let Fixture { cluster, provider } = start(&["orders_writer", "ghost_role"])?;

    let error = provider
        .apply(&grant("ghost_role", "alice"))
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::Permanent(_)), "{error}");
    let message = error.to_string();
    assert!(message.contains("SQLSTATE 42704"), "{message}");
    assert!(message.contains("ghost_role"), "{message}");

    let error = provider
        .apply(&grant("orders_writer", "nobody"))
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::Permanent(_)), "{error}");
    assert!(error.to_string().contains("nobody"), "{error}");
    assert!(!is_member(&cluster, "alice", "orders_writer")?);
    Ok(())
}

#[tokio::test]
async fn apply_refuses_a_role_that_is_not_configured() -> anyhow::Result<()> {
    // With CREATEROLE on PostgreSQL 15 the broker could grant this one.
    let Fixture { cluster, provider } = start(&["orders_writer"])?;
    let error = provider
        .apply(&grant("pg_read_all_data", "alice"))
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::Permanent(_)), "{error}");
    assert!(!is_member(&cluster, "alice", "pg_read_all_data")?);
    Ok(())
}

#[tokio::test]
async fn names_postgres_would_truncate_are_refused() -> anyhow::Result<()> {
    // PostgreSQL truncates identifiers to 63 bytes, so a 64-byte name would
    // silently grant the role named by its first 63.
    let existing = "w".repeat(63);
    let longer = format!("{existing}x");
    let Fixture { cluster, provider } = start(&[&longer])?;
    cluster.psql(&format!(
        "CREATE ROLE {existing} NOLOGIN; GRANT {existing} TO broker WITH ADMIN OPTION"
    ))?;

    let error = provider.apply(&grant(&longer, "alice")).await.unwrap_err();
    assert!(matches!(error, ProviderError::Permanent(_)), "{error}");
    assert!(!is_member(&cluster, "alice", &existing)?);
    Ok(())
}

#[tokio::test]
async fn identifiers_are_quoted() -> anyhow::Result<()> {
    let role = r#"ops "admin"; DROP TABLE orders; --"#;
    let login = r#"Bob "the" Builder'); DROP TABLE orders; --"#;
    let user_map = BTreeMap::from([("bob".to_owned(), login.to_owned())]);
    let Fixture { cluster, provider } = start_with(&[role], user_map)?;
    cluster.psql(&format!(
        "CREATE ROLE {role} NOLOGIN;
         GRANT {role} TO broker WITH ADMIN OPTION;
         GRANT SELECT, INSERT ON orders TO {role};
         CREATE ROLE {login} LOGIN PASSWORD 'b'",
        role = quote_identifier(role),
        login = quote_identifier(login)
    ))?;
    let bob = grant(role, "bob");

    provider.apply(&bob).await?;

    assert!(is_member(&cluster, login, role)?);
    assert_eq!(provider.check(&bob).await?, Presence::Present);
    let mut session = connect(&cluster, login, "b").await?;
    run(
        &mut session,
        &format!("SET ROLE {}", quote_identifier(role)),
    )
    .await?;
    run(&mut session, "INSERT INTO orders VALUES (1)").await?;
    assert_eq!(order_count(&cluster)?, 1, "orders survived and was written");

    provider.remove(&bob).await?;
    assert!(!is_member(&cluster, login, role)?);
    assert!(run(&mut session, "SELECT 1").await.is_err());
    assert_eq!(order_count(&cluster)?, 1);
    Ok(())
}
