//! The one integration test binary: every test runs the real server and/or the real store,
//! on SQLite and (when `LINTEL_TEST_POSTGRES_URL` is set) PostgreSQL.
mod helpers;

mod architecture;
mod cli;
mod config;
mod health;
mod http_errors;
mod identity;
mod login;
mod mfa;
mod migrations;
mod roles;
mod shutdown;
mod store_contract;
mod tokens;
