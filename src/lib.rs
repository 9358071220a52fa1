//! Lintel: a self-hosted, multi-tenant identity server.
//!
//! Layers (dependencies point down): `http` → protocol modules → `identity` → `store`.
//! axum appears only under `http`, sqlx only under `store`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod federation;
pub mod http;
pub mod identity;
pub mod keys;
pub mod oidc;
pub mod saml;
pub mod scim;
pub mod store;
pub mod telemetry;
pub mod web;
