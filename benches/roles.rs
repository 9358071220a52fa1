//! Effective-permission resolution (filled in by the roles work).
fn main() {}
