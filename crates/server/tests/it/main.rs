//! elevate's integration tests, in one binary. Each test starts its own
//! elevate (in-process on a free port, or as a process where it must be
//! killed) and, where it needs one, its own real PostgreSQL cluster.

mod common;
mod oidc_common;
mod web_common;

mod audit;
mod automation;
#[cfg(feature = "aws")]
mod aws_identity_center;
#[cfg(feature = "aws")]
mod aws_sts;
mod bad_input;
mod chaos;
mod config_check;
mod crash;
mod db_copy;
mod decision;
mod dev_mode;
mod escalation;
mod lifecycle;
mod load;
mod notify;
mod oidc_cli;
mod oidc_tokens;
mod oidc_web;
mod openapi;
mod provider_failure;
mod replicas;
mod web_admin;
mod web_audit;
mod web_e2e;
mod web_pages;
