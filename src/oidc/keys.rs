//! Signing keys in use: which key signs now, which are published in the JWKS, rotation.
//!
//! Rotation without downtime: `lintel keys rotate` writes a new key to `keys/` and records it
//! with `active_from = now + oidc.key_activation_delay` — published at once (relying parties
//! pick it up on their next JWKS fetch) but used for signing only from `active_from`. The
//! keys it replaces retire at that moment and stay published until every token they
//! signed has expired (`published_until = retired_at + longest token lifetime`).
use crate::identity::audit::{self, Event};
use crate::identity::{Identity, IdentityError};
use crate::store::signing_keys::SigningKey as KeyRow;
use crate::store::{self, Json};
use chrono::{DateTime, Utc};
use josekit::jwk::Jwk;
use josekit::jws::JwsVerifier;
use josekit::jws::{ES256, EdDSA, JwsSigner, RS256};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// The `alg` key that signs at `now`: among such keys active by then and not yet retired,
/// the one activated last.
pub fn signing_key<'a>(rows: &'a [KeyRow], alg: &str, now: DateTime<Utc>) -> Option<&'a KeyRow> {
    rows.iter()
        .filter(|k| k.alg == alg && k.active_from <= now && k.retired_at.is_none_or(|r| r > now))
        .max_by_key(|k| (k.active_from, k.created_at))
}

/// The keys in the JWKS at `now`: every key not past `published_until` (upcoming keys
/// included, so relying parties know them before they sign).
pub fn published(rows: &[KeyRow], now: DateTime<Utc>) -> Vec<&KeyRow> {
    rows.iter()
        .filter(|k| k.published_until.is_none_or(|p| p > now))
        .collect()
}

/// The JWKS document (RFC 7517 §5) of the published keys.
pub fn jwks(rows: &[KeyRow], now: DateTime<Utc>) -> serde_json::Value {
    let keys: Vec<_> = published(rows, now)
        .into_iter()
        .map(|k| k.public_jwk.0.clone())
        .collect();
    json!({ "keys": keys })
}

/// A key to retire: its id, when it stops signing, when it leaves the JWKS.
pub type Retirement = (String, DateTime<Utc>, DateTime<Utc>);

/// The row a rotation adds, and the retirement it sets on the keys (of the same algorithm)
/// it replaces. The first key of an algorithm signs at once: no token of that algorithm
/// exists yet, and no client can use it before it exists.
pub fn plan_rotation(
    rows: &[KeyRow],
    alg: &str,
    new_kid: &str,
    new_jwk: serde_json::Value,
    now: DateTime<Utc>,
    delay: chrono::Duration,
    longest_token: chrono::Duration,
) -> (KeyRow, Vec<Retirement>) {
    let same: Vec<&KeyRow> = rows
        .iter()
        .filter(|k| k.alg == alg && k.kid != new_kid)
        .collect();
    let active_from = if same.is_empty() { now } else { now + delay };
    let row = KeyRow {
        kid: new_kid.to_string(),
        alg: alg.into(),
        public_jwk: Json(new_jwk),
        created_at: now,
        active_from,
        retired_at: None,
        published_until: None,
    };
    let retire = same
        .into_iter()
        .filter(|k| k.retired_at.is_none())
        .map(|k| (k.kid.clone(), active_from, active_from + longest_token))
        .collect();
    (row, retire)
}

/// Records the keys already in `keys_dir` (generating one when there is none), active now
/// unless already known — what `lintel serve` does at start.
pub async fn record_existing(id: &Identity, keys_dir: &Path) -> Result<(), IdentityError> {
    let (existing, _) =
        crate::keys::ensure(keys_dir).map_err(|e| IdentityError::Internal(e.to_string()))?;
    let now = id.clock.now();
    let mut c = id.db.conn().await?;
    for k in &existing {
        let meta = KeyRow {
            kid: k.kid.clone(),
            alg: k.alg.to_string(),
            public_jwk: Json(serde_json::Value::Object(k.public_jwk.as_ref().clone())),
            created_at: now,
            active_from: now,
            retired_at: None,
            published_until: None,
        };
        store::signing_keys::insert_if_absent(&mut c, &meta).await?;
    }
    Ok(())
}

/// Generates an `alg` key into `keys_dir` and schedules it (see the module comment).
/// Audited as `signing_key.rotated`.
pub async fn rotate(id: &Identity, keys_dir: &Path, alg: &str) -> Result<KeyRow, IdentityError> {
    if !super::clients::ID_TOKEN_ALGS.contains(&alg) {
        return Err(IdentityError::invalid("alg", "one of ES256, RS256, EdDSA"));
    }
    record_existing(id, keys_dir).await?;
    let now = id.clock.now();
    let cfg = &id.config.oidc;
    let d = |d| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    let longest = d(cfg.access_token_ttl.max(cfg.id_token_ttl)) + chrono::Duration::minutes(5);
    let key =
        crate::keys::generate(keys_dir, alg).map_err(|e| IdentityError::Internal(e.to_string()))?;
    let jwk = serde_json::Value::Object(key.public_jwk.as_ref().clone());
    let mut tx = id.db.begin().await?;
    let rows = store::signing_keys::list(&mut tx).await?;
    let (row, retire) = plan_rotation(
        &rows,
        alg,
        &key.kid,
        jwk,
        now,
        d(cfg.key_activation_delay),
        longest,
    );
    store::signing_keys::insert_if_absent(&mut tx, &row).await?;
    for (kid, at, until) in &retire {
        store::signing_keys::retire(&mut tx, kid, *at, *until).await?;
    }
    let event = Event::new("signing_key.rotated", "signing_key", &row.kid).details(json!({
        "active_from": row.active_from,
        "retired": retire.iter().map(|(k, _, until)| json!({"kid": k, "published_until": until})).collect::<Vec<_>>(),
    }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(row)
}

pub async fn list(id: &Identity) -> Result<Vec<KeyRow>, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::signing_keys::list(&mut c).await?)
}

/// A private key able to sign.
struct Signer {
    alg: &'static str,
    signer: Arc<dyn JwsSigner>,
}

/// The keys this process holds: metadata from the store, private halves from `keys/`,
/// reloaded when older than [`Keyring::REFRESH`] or when a `kid` is unknown.
pub struct Keyring {
    dir: std::path::PathBuf,
    state: RwLock<Loaded>,
}

#[derive(Default)]
struct Loaded {
    rows: Vec<KeyRow>,
    signers: HashMap<String, Arc<Signer>>,
    verifiers: HashMap<String, Arc<dyn JwsVerifier>>,
    loaded_at: Option<DateTime<Utc>>,
}

/// A key chosen to sign: its id, algorithm and signer.
#[derive(Clone)]
pub struct ActiveKey {
    pub kid: String,
    pub alg: &'static str,
    pub signer: Arc<dyn JwsSigner>,
}

impl Keyring {
    pub const REFRESH: chrono::Duration = chrono::Duration::seconds(30);

    pub fn new(dir: &Path) -> Self {
        Keyring {
            dir: dir.to_path_buf(),
            state: RwLock::new(Loaded::default()),
        }
    }

    fn stale(&self, now: DateTime<Utc>) -> bool {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        s.loaded_at
            .is_none_or(|t| now - t >= Self::REFRESH || t > now)
    }

    /// Reloads metadata and any private key not yet loaded.
    pub async fn reload(&self, id: &Identity) -> Result<(), IdentityError> {
        let rows = list(id).await?;
        let files =
            crate::keys::load(&self.dir).map_err(|e| IdentityError::Internal(e.to_string()))?;
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        for f in files {
            if s.signers.contains_key(&f.kid) {
                continue;
            }
            let pem = std::fs::read(&f.path).map_err(|e| IdentityError::Internal(e.to_string()))?;
            let err = |e: josekit::JoseError| IdentityError::Internal(e.to_string());
            let signer: Arc<dyn JwsSigner> = match f.alg {
                "RS256" => Arc::new(RS256.signer_from_pem(&pem).map_err(err)?),
                "EdDSA" => Arc::new(EdDSA.signer_from_pem(&pem).map_err(err)?),
                _ => Arc::new(super::es256::Es256Signer::from_pem(&pem).map_err(err)?),
            };
            s.signers
                .insert(f.kid.clone(), Arc::new(Signer { alg: f.alg, signer }));
        }
        for r in &rows {
            if s.verifiers.contains_key(&r.kid) {
                continue;
            }
            let Ok(jwk) = Jwk::from_map(r.public_jwk.0.as_object().cloned().unwrap_or_default())
            else {
                continue;
            };
            let v: Option<Arc<dyn JwsVerifier>> = match r.alg.as_str() {
                "ES256" => ES256.verifier_from_jwk(&jwk).ok().map(|v| Arc::new(v) as _),
                "RS256" => RS256.verifier_from_jwk(&jwk).ok().map(|v| Arc::new(v) as _),
                "EdDSA" => EdDSA.verifier_from_jwk(&jwk).ok().map(|v| Arc::new(v) as _),
                _ => None,
            };
            if let Some(v) = v {
                s.verifiers.insert(r.kid.clone(), v);
            }
        }
        s.rows = rows;
        s.loaded_at = Some(id.clock.now());
        Ok(())
    }

    async fn fresh(&self, id: &Identity) -> Result<(), IdentityError> {
        if self.stale(id.clock.now()) {
            self.reload(id).await?;
        }
        Ok(())
    }

    /// The ES256 key to sign with now (access tokens, and ID tokens by default).
    pub async fn active(&self, id: &Identity) -> Result<ActiveKey, IdentityError> {
        self.active_for(id, "ES256").await
    }

    /// The `alg` key to sign with now.
    pub async fn active_for(&self, id: &Identity, alg: &str) -> Result<ActiveKey, IdentityError> {
        self.fresh(id).await?;
        let now = id.clock.now();
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        let row = signing_key(&s.rows, alg, now)
            .ok_or_else(|| IdentityError::Internal(format!("no {alg} signing key is active")))?;
        let signer = s
            .signers
            .get(&row.kid)
            .ok_or_else(|| IdentityError::Internal(format!("private key {} missing", row.kid)))?;
        Ok(ActiveKey {
            kid: row.kid.clone(),
            alg: signer.alg,
            signer: Arc::clone(&signer.signer),
        })
    }

    /// The verifier of a published key.
    pub async fn verifier(
        &self,
        id: &Identity,
        kid: &str,
    ) -> Result<Option<Arc<dyn JwsVerifier>>, IdentityError> {
        self.fresh(id).await?;
        let now = id.clock.now();
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        let published = published(&s.rows, now).iter().any(|k| k.kid == kid);
        Ok(published.then(|| s.verifiers.get(kid).cloned()).flatten())
    }

    /// The JWKS at the clock's now.
    pub async fn jwks(&self, id: &Identity) -> Result<serde_json::Value, IdentityError> {
        self.fresh(id).await?;
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        Ok(jwks(&s.rows, id.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn row(kid: &str, active_from: i64) -> KeyRow {
        KeyRow {
            kid: kid.into(),
            alg: "ES256".into(),
            public_jwk: Json(json!({ "kid": kid })),
            created_at: t(active_from),
            active_from: t(active_from),
            retired_at: None,
            published_until: None,
        }
    }

    #[test]
    fn rotation_publishes_first_signs_later_and_keeps_old_until_tokens_expire() {
        let mut rows = vec![row("old", 0)];
        let delay = chrono::Duration::seconds(3600);
        let longest = chrono::Duration::seconds(600);
        let (new, retire) = plan_rotation(
            &rows,
            "ES256",
            "new",
            json!({"kid": "new"}),
            t(100),
            delay,
            longest,
        );
        assert_eq!(new.active_from, t(3700));
        assert_eq!(retire, vec![("old".to_string(), t(3700), t(4300))]);
        rows[0].retired_at = Some(t(3700));
        rows[0].published_until = Some(t(4300));
        rows.push(new);
        // Before activation: old signs, both published.
        assert_eq!(signing_key(&rows, "ES256", t(200)).unwrap().kid, "old");
        assert_eq!(published(&rows, t(200)).len(), 2);
        // After activation: new signs, old still published for its tokens' lifetime.
        assert_eq!(signing_key(&rows, "ES256", t(3700)).unwrap().kid, "new");
        assert_eq!(published(&rows, t(4299)).len(), 2);
        // Then old leaves the JWKS.
        let p = published(&rows, t(4300));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].kid, "new");
        assert_eq!(jwks(&rows, t(4300))["keys"][0]["kid"], "new");
        // Another algorithm is rotated on its own; its first key signs at once.
        let (ed, retire) = plan_rotation(&rows, "EdDSA", "ed", json!({}), t(5000), delay, longest);
        assert!(retire.is_empty());
        assert_eq!(ed.active_from, t(5000));
        rows.push(ed);
        assert_eq!(signing_key(&rows, "EdDSA", t(5000)).unwrap().kid, "ed");
        assert_eq!(signing_key(&rows, "ES256", t(5000)).unwrap().kid, "new");
    }
}
