//! The one integration test binary: every test runs the real server and/or the real store,
//! on SQLite and (when `LINTEL_TEST_POSTGRES_URL` is set) PostgreSQL.
mod helpers;

mod architecture;
mod audit;
mod cli;
mod config;
mod federation_admin;
mod federation_oidc;
mod folded_names;
mod health;
mod http_errors;
mod identity;
mod impersonation;
mod login;
mod management;
mod management_platform;
mod metrics;
mod mfa;
mod migrations;
mod oidc;
mod oidc_account;
mod oidc_backchannel;
mod oidc_clients;
mod oidc_upstream;
mod rate_limits;
mod roles;
mod saml;
mod scim;
mod scim_admin;
mod scim_replays;
mod shutdown;
mod store_contract;
mod tokens;
mod waitlist;
