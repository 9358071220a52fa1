//! Multi-factor authentication: TOTP devices (RFC 6238 over RFC 4226 HOTP, HMAC-SHA-1,
//! 6 digits, 30 s steps, ±1 step) enrolled through an `otpauth://` URI, single-use recovery
//! codes, and the org policy that requires MFA.
//!
//! Seeds are stored encrypted with the data key; recovery codes as SHA-256. Codes are compared
//! in constant time, and a TOTP step is accepted at most once per device (RFC 6238 §5.2).
//!
//! Enrolment and device changes are audited (`mfa.*`, never a seed or a code); verifying a
//! code or spending a recovery code is authentication and is not.
use super::audit::{self, Event};
use super::{Identity, IdentityError};
use crate::store::{self, mfa::Device, mfa::DeviceSummary};
use chrono::{DateTime, Utc};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// `mfa_devices.type` of a TOTP authenticator.
pub const DEVICE_TYPE_TOTP: &str = "totp";
/// RFC 6238 §5.2: 30 seconds is the recommended step (X).
pub const TOTP_PERIOD_SECS: u64 = 30;
/// Six digits: what authenticator apps show (RFC 4226 §5.3 allows 6 to 8).
pub const TOTP_DIGITS: u8 = 6;
/// RFC 6238 §5.2: accept at most one step of clock drift either way.
pub const TOTP_SKEW_STEPS: u64 = 1;
/// RFC 4226 §4 R6: 160-bit shared secrets.
pub const TOTP_SECRET_BYTES: usize = 20;
/// Recovery codes issued at a time.
pub const RECOVERY_CODE_COUNT: usize = 10;
/// 80 random bits per recovery code (16 base32 characters).
pub const RECOVERY_CODE_BYTES: usize = 10;

const NO_DEVICE: IdentityError = IdentityError::NotFound { what: "MFA device" };
const NO_USER: IdentityError = IdentityError::NotFound { what: "user" };

// ---------------------------------------------------------------------------------------
// Pure functions
// ---------------------------------------------------------------------------------------

/// RFC 6238 §4.2: T = floor((Unix time − T0) / X) with T0 = 0 and X = 30 s. Instants before
/// the epoch count as step 0.
pub fn totp_step(at: DateTime<Utc>) -> u64 {
    u64::try_from(at.timestamp()).unwrap_or(0) / TOTP_PERIOD_SECS
}

/// The first instant of a time step (what `mfa_devices.last_used` records).
pub fn step_start(step: u64) -> Option<DateTime<Utc>> {
    let secs = i64::try_from(step.checked_mul(TOTP_PERIOD_SECS)?).ok()?;
    DateTime::from_timestamp(secs, 0)
}

fn totp(secret: &[u8], digits: u8) -> Result<totp_rs::Totp, IdentityError> {
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(digits)
        .with_step_duration(TOTP_PERIOD_SECS)
        .with_skew(0)
        .with_secret(secret.to_vec())
        .build()
        .map_err(|e| IdentityError::Internal(format!("TOTP parameters: {e}")))
}

fn code_at(t: &totp_rs::Totp, step: u64) -> String {
    t.generate(step.saturating_mul(TOTP_PERIOD_SECS))
        .to_string()
}

/// RFC 6238 §4.2: TOTP = HOTP(K, T), HOTP as in RFC 4226 §5.3 (HMAC-SHA-1, dynamic
/// truncation, `digits` decimal digits). The secret must be at least 128 bits.
pub fn totp_code(secret: &[u8], step: u64, digits: u8) -> Result<String, IdentityError> {
    Ok(code_at(&totp(secret, digits)?, step))
}

/// A code as typed: ASCII whitespace dropped (apps show `123 456`), then exactly
/// [`TOTP_DIGITS`] ASCII digits.
pub fn normalize_totp_input(input: &str) -> Option<String> {
    let code: String = input.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    (code.len() == usize::from(TOTP_DIGITS) && code.bytes().all(|b| b.is_ascii_digit()))
        .then_some(code)
}

/// Checks a 6-digit code against the steps `now_step − 1 ..= now_step + 1` (RFC 6238 §5.2
/// skew), comparing every candidate in constant time. Returns the accepted step: the
/// earliest matching step after `last_step`. A code that matches only steps at or before
/// `last_step` is a replay (RFC 6238 §5.2: accept an OTP only once).
pub fn check_totp(
    secret: &[u8],
    input: &str,
    now_step: u64,
    last_step: Option<u64>,
) -> Result<u64, IdentityError> {
    let t = totp(secret, TOTP_DIGITS)?;
    // A malformed input is compared against a dummy so the work done does not depend on it.
    let typed = normalize_totp_input(input);
    let candidate = typed.as_deref().unwrap_or("------");
    let mut matched = Vec::with_capacity(3);
    for step in now_step.saturating_sub(TOTP_SKEW_STEPS)..=now_step.saturating_add(TOTP_SKEW_STEPS)
    {
        let ok = code_at(&t, step).as_bytes().ct_eq(candidate.as_bytes());
        if bool::from(ok) && typed.is_some() {
            matched.push(step);
        }
    }
    match matched.iter().find(|s| last_step.is_none_or(|l| **s > l)) {
        Some(step) => Ok(*step),
        None if !matched.is_empty() => Err(IdentityError::MfaCodeReplayed),
        None => Err(IdentityError::MfaCodeInvalid),
    }
}

/// Percent-encodes for an `otpauth://` label or query value (RFC 3986 §2.1): everything but
/// the unreserved characters (§2.3) and `@` (allowed in paths and queries, §3.3/§3.4) is
/// encoded as UTF-8 octets, so a space is `%20`, never `+`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The Key Uri Format (Google Authenticator wiki) URI for a TOTP seed:
/// `otpauth://totp/{issuer}:{account}?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30`.
pub fn otpauth_uri(issuer: &str, account: &str, secret_base32: &str) -> String {
    let issuer = percent_encode(issuer);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}\
         &algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_PERIOD_SECS}",
        account = percent_encode(account),
        secret = percent_encode(secret_base32),
    )
}

/// RFC 4648 §6 base32 without padding, upper case (what authenticator apps expect).
pub fn base32(bytes: &[u8]) -> String {
    totp_rs::Secret::from(bytes.to_vec()).to_base32()
}

/// `abcd-efgh-ijkl-mnop`: the 80 bits as 16 lower-case base32 characters in groups of four.
pub fn format_recovery_code(bytes: &[u8; RECOVERY_CODE_BYTES]) -> String {
    let b32 = base32(bytes).to_ascii_lowercase();
    let groups: Vec<&str> = (0..b32.len())
        .step_by(4)
        .filter_map(|i| b32.get(i..i + 4))
        .collect();
    groups.join("-")
}

/// The canonical form of a typed recovery code (16 lower-case base32 characters) or `None`:
/// case is ignored, dashes and whitespace are optional.
pub fn normalize_recovery_code(input: &str) -> Option<String> {
    let code: String = input
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (code.len() == 16 && code.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7')))
        .then_some(code)
}

/// SHA-256 (hex) of a code's canonical form: what `mfa_recovery_codes.code_hash` holds.
pub fn hash_recovery_code(canonical: &str) -> String {
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// Fresh recovery codes: (shown to the user, hashes to store). Distinct by construction.
fn new_recovery_codes() -> (Vec<String>, Vec<String>) {
    let mut shown: Vec<String> = Vec::with_capacity(RECOVERY_CODE_COUNT);
    while shown.len() < RECOVERY_CODE_COUNT {
        let code = format_recovery_code(&rand::random());
        if !shown.contains(&code) {
            shown.push(code);
        }
    }
    let hashes = shown
        .iter()
        .filter_map(|c| normalize_recovery_code(c))
        .map(|c| hash_recovery_code(&c))
        .collect();
    (shown, hashes)
}

// ---------------------------------------------------------------------------------------
// Rules over the store
// ---------------------------------------------------------------------------------------

/// What the user needs to add the device to an authenticator app. Shown once.
#[derive(Clone)]
pub struct TotpEnrolment {
    pub device_id: Uuid,
    pub secret_base32: String,
    pub otpauth_uri: String,
}

impl std::fmt::Debug for TotpEnrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpEnrolment")
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

/// Recovery codes in plain text, returned once when issued.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryCodes(pub Vec<String>);

impl std::fmt::Debug for RecoveryCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecoveryCodes({} codes)", self.0.len())
    }
}

fn key_err(e: crate::keys::KeyError) -> IdentityError {
    IdentityError::Internal(format!("data key: {e}"))
}

fn decrypt_seed(id: &Identity, device: &Device) -> Result<Vec<u8>, IdentityError> {
    id.data_key.decrypt(&device.secret).map_err(key_err)
}

fn device_conflict(e: store::StoreError) -> IdentityError {
    IdentityError::from_store_conflict(e, |field| match field {
        "mfa_device" => "the user already has an enabled authenticator; remove it first".into(),
        other => format!("an MFA record with this {other} already exists"),
    })
}

/// Starts TOTP enrolment: a new 160-bit seed, stored encrypted in a disabled device, and the
/// `otpauth://` URI for it. Replaces an earlier unconfirmed enrolment; refused with a
/// conflict on `mfa_device` while the user has an enabled TOTP device.
pub async fn begin_totp_enrolment(
    id: &Identity,
    user_id: Uuid,
) -> Result<TotpEnrolment, IdentityError> {
    let seed: [u8; TOTP_SECRET_BYTES] = rand::random();
    let secret_base32 = base32(&seed);
    let device = Device {
        device_id: Uuid::now_v7(),
        user_id,
        device_type: DEVICE_TYPE_TOTP.into(),
        secret: id.data_key.encrypt(&seed).map_err(key_err)?,
        created_at: id.clock.now(),
        enabled: false,
        last_used: None,
    };
    let mut tx = id.db.begin().await?;
    // A write first, so SQLite takes the write lock at the start of the transaction.
    store::mfa::delete_pending_devices(&mut tx, user_id, DEVICE_TYPE_TOTP).await?;
    let user = store::users::get_for_update(&mut tx, user_id)
        .await?
        .ok_or(NO_USER)?;
    if store::mfa::enabled_device(&mut tx, user_id, DEVICE_TYPE_TOTP)
        .await?
        .is_some()
    {
        return Err(IdentityError::Conflict {
            field: "mfa_device".into(),
            message: "the user already has an enabled authenticator; remove it first".into(),
        });
    }
    store::mfa::insert_device(&mut tx, &device)
        .await
        .map_err(device_conflict)?;
    let event = Event::new("mfa.enrolment_started", "mfa_device", device.device_id)
        .details(json!({ "user_id": user_id, "type": DEVICE_TYPE_TOTP }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(TotpEnrolment {
        device_id: device.device_id,
        otpauth_uri: otpauth_uri(&id.config.mfa.totp_issuer, &user.email, &secret_base32),
        secret_base32,
    })
}

/// Confirms an enrolment with a first valid code: enables the device, records the code's
/// step as used, sets `users.mfa_enabled` and issues fresh recovery codes (replacing any
/// older set), all in one transaction.
pub async fn confirm_totp(
    id: &Identity,
    user_id: Uuid,
    device_id: Uuid,
    code: &str,
) -> Result<RecoveryCodes, IdentityError> {
    let device = {
        let mut c = id.db.conn().await?;
        store::mfa::get_device(&mut c, device_id).await?
    }
    .filter(|d| d.user_id == user_id && d.device_type == DEVICE_TYPE_TOTP)
    .ok_or(NO_DEVICE)?;
    if device.enabled {
        return Err(IdentityError::invalid("device_id", "is already confirmed"));
    }
    let seed = decrypt_seed(id, &device)?;
    let now = id.clock.now();
    let step = check_totp(&seed, code, totp_step(now), None)?;
    let used = step_start(step).ok_or_else(|| IdentityError::Internal("TOTP step".into()))?;
    let (shown, hashes) = new_recovery_codes();

    let mut tx = id.db.begin().await?;
    let enabled = store::mfa::enable_device(&mut tx, device_id, used)
        .await
        .map_err(device_conflict)?;
    if !enabled {
        // Confirmed or replaced concurrently.
        return match store::mfa::get_device(&mut tx, device_id).await? {
            Some(_) => Err(IdentityError::MfaCodeReplayed),
            None => Err(NO_DEVICE),
        };
    }
    if !store::mfa::set_user_mfa_enabled(&mut tx, user_id, true).await? {
        return Err(NO_USER);
    }
    store::mfa::delete_recovery_codes(&mut tx, user_id).await?;
    store::mfa::insert_recovery_codes(&mut tx, user_id, &hashes, now)
        .await
        .map_err(device_conflict)?;
    let event = Event::new("mfa.enrolled", "mfa_device", device_id).details(json!({
        "user_id": user_id,
        "type": DEVICE_TYPE_TOTP,
        "recovery_codes_issued": hashes.len(),
    }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(RecoveryCodes(shown))
}

/// Verifies a TOTP code from the user's enabled device at `id.clock.now()`, ±1 step.
/// Each step is accepted once: a code for a step at or before the last accepted one is
/// `MfaCodeReplayed`, and of two concurrent submissions of one code exactly one succeeds
/// (conditional update of `last_used`).
pub async fn verify_totp(id: &Identity, user_id: Uuid, code: &str) -> Result<(), IdentityError> {
    let mut c = id.db.conn().await?;
    let device = store::mfa::enabled_device(&mut c, user_id, DEVICE_TYPE_TOTP)
        .await?
        .ok_or(IdentityError::MfaNotEnrolled)?;
    let seed = decrypt_seed(id, &device)?;
    let last_step = device.last_used.map(totp_step);
    let step = check_totp(&seed, code, totp_step(id.clock.now()), last_step)?;
    let used = step_start(step).ok_or_else(|| IdentityError::Internal("TOTP step".into()))?;
    if store::mfa::advance_last_used(&mut c, device.device_id, used).await? {
        Ok(())
    } else {
        // Another submission recorded this step (or a later one) first.
        Err(IdentityError::MfaCodeReplayed)
    }
}

/// Spends a recovery code. Unknown or malformed → `MfaCodeInvalid`; already spent →
/// `MfaCodeReplayed` (only someone holding the code can learn that).
pub async fn use_recovery_code(
    id: &Identity,
    user_id: Uuid,
    code: &str,
) -> Result<(), IdentityError> {
    let canonical = normalize_recovery_code(code).ok_or(IdentityError::MfaCodeInvalid)?;
    let hash = hash_recovery_code(&canonical);
    let mut c = id.db.conn().await?;
    if store::mfa::consume_recovery_code(&mut c, user_id, &hash, id.clock.now()).await? {
        return Ok(());
    }
    if store::mfa::recovery_code_exists(&mut c, user_id, &hash).await? {
        Err(IdentityError::MfaCodeReplayed)
    } else {
        Err(IdentityError::MfaCodeInvalid)
    }
}

/// How many unused recovery codes the user has.
pub async fn remaining_recovery_codes(
    id: &Identity,
    user_id: Uuid,
) -> Result<usize, IdentityError> {
    let mut c = id.db.conn().await?;
    let n = store::mfa::count_unused_recovery_codes(&mut c, user_id).await?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Replaces the user's recovery codes with ten fresh ones, returned once in plain text.
/// Requires an enabled device (`MfaNotEnrolled` otherwise).
pub async fn regenerate_recovery_codes(
    id: &Identity,
    user_id: Uuid,
) -> Result<Vec<String>, IdentityError> {
    let (shown, hashes) = new_recovery_codes();
    let mut tx = id.db.begin().await?;
    store::mfa::delete_recovery_codes(&mut tx, user_id).await?;
    if store::mfa::count_enabled_devices(&mut tx, user_id).await? == 0 {
        return Err(IdentityError::MfaNotEnrolled);
    }
    store::mfa::insert_recovery_codes(&mut tx, user_id, &hashes, id.clock.now())
        .await
        .map_err(device_conflict)?;
    let event = Event::new("mfa.recovery_codes_regenerated", "user", user_id)
        .details(json!({ "recovery_codes_issued": hashes.len() }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(shown)
}

/// The user's devices (enabled and pending), oldest first; never their secrets.
pub async fn list_devices(
    id: &Identity,
    user_id: Uuid,
) -> Result<Vec<DeviceSummary>, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::mfa::list_devices(&mut c, user_id).await?)
}

/// Removes one of the user's devices (another user's device is `NotFound`). Removing the
/// last enabled device turns MFA off: `users.mfa_enabled = false` and the recovery codes go.
pub async fn remove_device(
    id: &Identity,
    user_id: Uuid,
    device_id: Uuid,
) -> Result<(), IdentityError> {
    let mut tx = id.db.begin().await?;
    if !store::mfa::delete_device(&mut tx, user_id, device_id).await? {
        return Err(NO_DEVICE);
    }
    let mfa_off = store::mfa::count_enabled_devices(&mut tx, user_id).await? == 0;
    if mfa_off {
        store::mfa::set_user_mfa_enabled(&mut tx, user_id, false).await?;
        store::mfa::delete_recovery_codes(&mut tx, user_id).await?;
    }
    let event = Event::new("mfa.device_removed", "mfa_device", device_id)
        .details(json!({ "user_id": user_id, "mfa_disabled": mfa_off }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(())
}

/// Turns MFA off for the user: every device and recovery code removed, `mfa_enabled` false.
pub async fn disable_mfa(id: &Identity, user_id: Uuid) -> Result<(), IdentityError> {
    let mut tx = id.db.begin().await?;
    if !store::mfa::set_user_mfa_enabled(&mut tx, user_id, false).await? {
        return Err(NO_USER);
    }
    let devices = store::mfa::delete_devices_for_user(&mut tx, user_id).await?;
    store::mfa::delete_recovery_codes(&mut tx, user_id).await?;
    let event =
        Event::new("mfa.disabled", "user", user_id).details(json!({ "devices_removed": devices }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(())
}

/// Whether signing in must pass an MFA check: the user has MFA on, or the org (when given)
/// requires it. A user in such an org without a device has to enrol first.
pub async fn mfa_required(
    id: &Identity,
    user_id: Uuid,
    org_id: Option<Uuid>,
) -> Result<bool, IdentityError> {
    let mut c = id.db.conn().await?;
    let user = store::users::get(&mut c, user_id).await?.ok_or(NO_USER)?;
    let org_requires = match org_id {
        Some(org_id) => {
            store::orgs::get(&mut c, org_id)
                .await?
                .ok_or(IdentityError::NotFound {
                    what: "organization",
                })?
                .mfa_required
        }
        None => false,
    };
    Ok(user.mfa_enabled || org_requires)
}

/// Sets whether the org requires its members to use MFA.
pub async fn set_org_mfa_required(
    id: &Identity,
    org_id: Uuid,
    required: bool,
) -> Result<(), IdentityError> {
    let mut tx = id.db.begin().await?;
    let before = store::orgs::get(&mut tx, org_id)
        .await?
        .ok_or(IdentityError::NotFound {
            what: "organization",
        })?;
    if !store::mfa::set_org_mfa_required(&mut tx, org_id, required).await? {
        return Err(IdentityError::NotFound {
            what: "organization",
        });
    }
    let after = crate::store::orgs::Org {
        mfa_required: required,
        ..before.clone()
    };
    audit::record(&mut tx, id, super::orgs::org_updated(&before, &after)).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 rows: the 20-byte ASCII seed "1234567890…", 8 digits.
    const RFC_SEED: &[u8] = b"12345678901234567890";
    const RFC_VECTORS: &[(i64, u64, &str)] = &[
        (59, 0x1, "94287082"),
        (1_111_111_109, 0x0235_23EC, "07081804"),
        (1_111_111_111, 0x0235_23ED, "14050471"),
        (1_234_567_890, 0x0273_EF07, "89005924"),
        (2_000_000_000, 0x03F9_40AA, "69279037"),
        (20_000_000_000, 0x27BC_86AA, "65353130"),
    ];

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn rfc6238_appendix_b_sha1() {
        for (time, step, code) in RFC_VECTORS {
            assert_eq!(totp_step(at(*time)), *step, "T at {time}");
            assert_eq!(totp_code(RFC_SEED, *step, 8).unwrap(), *code, "at {time}");
            // Six digits are the low six of the same truncated value (RFC 4226 §5.3).
            assert_eq!(
                totp_code(RFC_SEED, *step, 6).unwrap(),
                code[2..],
                "at {time}"
            );
        }
    }

    #[test]
    fn steps_and_their_starts() {
        assert_eq!(totp_step(at(0)), 0);
        assert_eq!(totp_step(at(29)), 0);
        assert_eq!(totp_step(at(30)), 1);
        assert_eq!(totp_step(at(-5)), 0);
        assert_eq!(step_start(1).unwrap(), at(30));
        assert_eq!(totp_step(step_start(37_000_000).unwrap()), 37_000_000);
        assert!(step_start(u64::MAX).is_none());
    }

    #[test]
    fn totp_input_shapes() {
        assert_eq!(normalize_totp_input(" 123 456 ").as_deref(), Some("123456"));
        for bad in [
            "",
            "12345",
            "1234567",
            "12345a",
            "+12345",
            "１２３４５６",
            "123-456",
        ] {
            assert_eq!(normalize_totp_input(bad), None, "{bad}");
        }
    }

    #[test]
    fn check_window_and_replay() {
        let now = 1_000_000u64;
        let code = |s: u64| totp_code(RFC_SEED, s, 6).unwrap();
        // ±1 step is accepted; ±2 is not.
        for s in [now - 1, now, now + 1] {
            assert_eq!(check_totp(RFC_SEED, &code(s), now, None).unwrap(), s);
        }
        for s in [now - 2, now + 2] {
            assert!(matches!(
                check_totp(RFC_SEED, &code(s), now, None),
                Err(IdentityError::MfaCodeInvalid)
            ));
        }
        // At or before the last accepted step: replayed.
        for s in [now - 1, now] {
            assert!(matches!(
                check_totp(RFC_SEED, &code(s), now, Some(now)),
                Err(IdentityError::MfaCodeReplayed)
            ));
        }
        assert_eq!(
            check_totp(RFC_SEED, &code(now + 1), now, Some(now)).unwrap(),
            now + 1
        );
        // Spaces are fine; malformed input is simply invalid.
        let spaced = format!("{} {}", &code(now)[..3], &code(now)[3..]);
        assert_eq!(check_totp(RFC_SEED, &spaced, now, None).unwrap(), now);
        for bad in ["", "abcdef", "1234567"] {
            assert!(matches!(
                check_totp(RFC_SEED, bad, now, None),
                Err(IdentityError::MfaCodeInvalid)
            ));
        }
    }

    #[test]
    fn otpauth_uri_is_percent_encoded() {
        assert_eq!(
            otpauth_uri("Acme Corp & Co", "a+b@example.com", "JBSWY3DPEHPK3PXP"),
            "otpauth://totp/Acme%20Corp%20%26%20Co:a%2Bb@example.com?secret=JBSWY3DPEHPK3PXP\
             &issuer=Acme%20Corp%20%26%20Co&algorithm=SHA1&digits=6&period=30"
        );
        assert_eq!(percent_encode("Zürich/?#=:"), "Z%C3%BCrich%2F%3F%23%3D%3A");
        assert_eq!(percent_encode("a-b.c_d~e"), "a-b.c_d~e");
    }

    #[test]
    fn base32_rfc4648_vectors() {
        // RFC 4648 §10, without padding.
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"fooba"), "MZXW6YTB");
        assert_eq!(base32(&[0u8; TOTP_SECRET_BYTES]).len(), 32);
    }

    #[test]
    fn recovery_code_format_and_normalization() {
        let code = format_recovery_code(b"fooba\x00\x00\x00\x00\x00");
        assert_eq!(code, "mzxw-6ytb-aaaa-aaaa");
        let canonical = "mzxw6ytbaaaaaaaa";
        for typed in [
            "mzxw-6ytb-aaaa-aaaa",
            "MZXW6YTBAAAAAAAA",
            " mzxw 6ytb aaaa aaaa ",
            "Mzxw-6YTB aaaa-AAAA",
        ] {
            assert_eq!(
                normalize_recovery_code(typed).as_deref(),
                Some(canonical),
                "{typed}"
            );
        }
        for bad in [
            "",
            "mzxw-6ytb-aaaa-aaa",
            "mzxw-6ytb-aaaa-aaaaa",
            "mzxw-6ytb-aaaa-aaa1",
            "mzxw-6ytb-aaaa-aaa0",
            "mzxw_6ytb_aaaa_aaaa",
            "mzxw-6ytb-aaaa-aaaä",
        ] {
            assert_eq!(normalize_recovery_code(bad), None, "{bad}");
        }
        let h = hash_recovery_code(canonical);
        assert_eq!(h.len(), 64);
        assert_eq!(h, hex::encode(Sha256::digest(canonical)));
    }

    #[test]
    fn fresh_recovery_codes_are_distinct_and_round_trip() {
        let (shown, hashes) = new_recovery_codes();
        assert_eq!(shown.len(), RECOVERY_CODE_COUNT);
        assert_eq!(hashes.len(), RECOVERY_CODE_COUNT);
        let mut sorted = shown.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), RECOVERY_CODE_COUNT);
        for (code, hash) in shown.iter().zip(&hashes) {
            assert_eq!(code.len(), 19);
            assert_eq!(code.matches('-').count(), 3);
            let canonical = normalize_recovery_code(code).unwrap();
            assert_eq!(&hash_recovery_code(&canonical), hash);
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let e = TotpEnrolment {
            device_id: Uuid::nil(),
            secret_base32: "JBSWY3DPEHPK3PXP".into(),
            otpauth_uri: "otpauth://totp/x:y?secret=JBSWY3DPEHPK3PXP".into(),
        };
        assert!(!format!("{e:?}").contains("JBSWY3DPEHPK3PXP"));
        let r = RecoveryCodes(vec!["mzxw-6ytb-aaaa-aaaa".into()]);
        assert!(!format!("{r:?}").contains("mzxw"));
    }
}
