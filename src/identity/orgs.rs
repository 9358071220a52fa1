//! Organizations.
use super::{Identity, IdentityError};
use crate::store::{self, Json, orgs::Org};
use uuid::Uuid;

pub const MAX_NAME_LEN: usize = 200;
pub const MAX_SLUG_LEN: usize = 63;

/// `url_safe_org_name` from a display name: lower-case ASCII letters and digits, runs of
/// anything else become one `-`, no leading or trailing `-`, at most 63 characters.
pub fn slugify(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for ch in name.chars() {
        let ch = ch.to_ascii_lowercase();
        if ch.is_ascii_alphanumeric() {
            out.push(ch);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(MAX_SLUG_LEN);
    out.trim_end_matches('-').to_string()
}

/// A valid slug is what [`slugify`] would keep unchanged.
pub fn check_slug(slug: &str) -> Result<(), IdentityError> {
    if slug.is_empty() || slugify(slug) != slug {
        return Err(IdentityError::invalid(
            "url_safe_org_name",
            "use 1 to 63 lower-case letters, digits and single dashes, e.g. acme-corp",
        ));
    }
    Ok(())
}

/// An org is named on the command line and in URLs either by id or by slug.
pub async fn resolve(id: &Identity, id_or_slug: &str) -> Result<Org, IdentityError> {
    let mut c = id.db.conn().await?;
    let found = match Uuid::parse_str(id_or_slug) {
        Ok(uuid) => store::orgs::get(&mut c, uuid).await?,
        Err(_) => store::orgs::get_by_slug(&mut c, id_or_slug).await?,
    };
    found.ok_or(IdentityError::NotFound {
        what: "organization",
    })
}

/// Creates an org. The slug is derived from the name unless given; a taken slug is a
/// conflict naming `url_safe_org_name`.
pub async fn create(id: &Identity, name: &str, slug: Option<&str>) -> Result<Org, IdentityError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
        return Err(IdentityError::invalid(
            "org_name",
            format!("must be 1 to {MAX_NAME_LEN} characters"),
        ));
    }
    let slug = match slug {
        Some(s) => s.to_string(),
        None => slugify(name),
    };
    check_slug(&slug).map_err(|e| match (e, slug.is_empty()) {
        (_, true) => IdentityError::invalid(
            "org_name",
            "needs at least one letter or digit to derive url_safe_org_name",
        ),
        (e, false) => e,
    })?;
    let org = Org {
        org_id: Uuid::now_v7(),
        org_name: name.to_string(),
        url_safe_org_name: slug,
        org_metadata: Json(serde_json::json!({})),
        created_at: id.clock.now(),
        org_role_structure: "single_role".into(),
        mfa_required: false,
    };
    let mut c = id.db.conn().await?;
    store::orgs::insert(&mut c, &org).await.map_err(|e| {
        IdentityError::from_store_conflict(e, |_| {
            format!(
                "an organization with url_safe_org_name `{}` already exists",
                org.url_safe_org_name
            )
        })
    })?;
    Ok(org)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slugify("Acme Corp"), "acme-corp");
        assert_eq!(slugify("  ACME -- Corp!! "), "acme-corp");
        assert_eq!(slugify("Ünïcode Ltd."), "n-code-ltd");
        assert_eq!(slugify("!!!"), "");
        assert_eq!(slugify(&"a".repeat(100)).len(), 63);
        assert_eq!(slugify(&format!("{}-b", "a".repeat(62))), "a".repeat(62));
        assert!(check_slug("acme-corp").is_ok());
        for bad in ["", "Acme", "-acme", "acme-", "a--b", "a b"] {
            assert!(check_slug(bad).is_err(), "{bad}");
        }
    }
}
