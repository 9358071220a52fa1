//! Federation: organizations' upstream identity providers.
pub mod oidc_upstream;
