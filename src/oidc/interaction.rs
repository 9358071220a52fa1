//! The hosted login's steps, all through the identity core (lockout, login attempts,
//! metrics): password, then a second factor when the user or org needs one, then a new
//! password when `update_password_required`. Between steps the browser carries a sealed
//! "pending" value (encrypted with the data key, ten minutes) naming the user and the
//! factors passed so far.
use super::Provider;
use super::authorize::{self, AuthRequest, PageError, SessionView};
use super::error::OidcError;
use super::jwt;
use crate::config::Secret;
use crate::identity::login::{self, LoginContext, LoginOutcome};
use crate::identity::{Identity, IdentityError, users};
use crate::store::oidc::OidcClient;
use crate::store::sessions::Session;
use crate::store::{self};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use uuid::Uuid;

pub const PENDING_TTL_SECS: i64 = 600;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Pending {
    u: Uuid,
    /// `mfa` or `password`.
    k: String,
    amr: Vec<String>,
    exp: i64,
    org: Option<Uuid>,
}

fn seal(id: &Identity, p: &Pending) -> Result<String, IdentityError> {
    let bytes = serde_json::to_vec(p).map_err(|e| IdentityError::Internal(e.to_string()))?;
    id.data_key
        .encrypt(&bytes)
        .map_err(|e| IdentityError::Internal(e.to_string()))
}

fn open(id: &Identity, sealed: &str, stage: &str) -> Result<Pending, IdentityError> {
    let bytes = id
        .data_key
        .decrypt(sealed)
        .map_err(|_| IdentityError::TokenInvalid)?;
    let p: Pending = serde_json::from_slice(&bytes).map_err(|_| IdentityError::TokenInvalid)?;
    if p.k != stage {
        return Err(IdentityError::TokenInvalid);
    }
    if id.clock.now().timestamp() >= p.exp {
        return Err(IdentityError::TokenExpired);
    }
    Ok(p)
}

/// Where a login step leads.
#[derive(Debug)]
pub enum Step {
    /// Signed in: the browser session and its cookie value.
    Done {
        session: Box<Session>,
        cookie: String,
    },
    /// Ask for a TOTP or recovery code.
    Mfa { pending: String },
    /// Ask for a new password.
    ChangePassword { pending: String },
}

/// Who is signing in from where.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub org_id: Option<Uuid>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl Origin {
    fn ctx(&self) -> LoginContext {
        LoginContext {
            org_id: self.org_id,
            ip: self.ip,
            user_agent: self.user_agent.clone(),
        }
    }
}

fn pending(
    id: &Identity,
    user: Uuid,
    stage: &str,
    amr: Vec<String>,
    org: Option<Uuid>,
) -> Result<String, IdentityError> {
    seal(
        id,
        &Pending {
            u: user,
            k: stage.into(),
            amr,
            exp: id.clock.now().timestamp() + PENDING_TTL_SECS,
            org,
        },
    )
}

async fn done(
    id: &Identity,
    user_id: Uuid,
    amr: Vec<String>,
    origin: &Origin,
) -> Result<Step, IdentityError> {
    let (session, cookie) = super::session::open(
        id,
        user_id,
        origin.org_id,
        amr,
        origin.ip,
        origin.user_agent.clone(),
    )
    .await?;
    Ok(Step::Done {
        session: Box::new(session),
        cookie,
    })
}

/// Email and password.
pub async fn password(
    id: &Identity,
    email: &str,
    password: &Secret<String>,
    origin: &Origin,
) -> Result<Step, IdentityError> {
    match login::authenticate(id, email, password, &origin.ctx()).await {
        Ok(LoginOutcome::Authenticated { user }) => {
            done(id, user.user_id, vec!["pwd".into()], origin).await
        }
        Ok(LoginOutcome::MfaRequired { user }) => Ok(Step::Mfa {
            pending: pending(id, user.user_id, "mfa", vec!["pwd".into()], origin.org_id)?,
        }),
        Err(IdentityError::PasswordChangeRequired) => {
            // Only answered after a correct password, so naming the user is safe here.
            let user = users::find_by_email(id, email).await?;
            Ok(Step::ChangePassword {
                pending: pending(
                    id,
                    user.user_id,
                    "password",
                    vec!["pwd".into()],
                    origin.org_id,
                )?,
            })
        }
        Err(e) => Err(e),
    }
}

/// A login the federation module completed (SAML or upstream OIDC): a session recording
/// `fed` and the protocol in `amr`, unless the user or org needs Lintel's second factor.
pub async fn federated(
    id: &Identity,
    user_id: Uuid,
    method: &str,
    origin: &Origin,
) -> Result<Step, IdentityError> {
    let amr = vec!["fed".to_string(), method.to_string()];
    match done(id, user_id, amr.clone(), origin).await {
        Err(IdentityError::SecondFactorRequired) => Ok(Step::Mfa {
            pending: pending(id, user_id, "mfa", amr, origin.org_id)?,
        }),
        r => r,
    }
}

/// The second factor after [`password`] answered `Mfa`.
pub async fn second_factor(
    id: &Identity,
    sealed: &str,
    code: &str,
    origin: &Origin,
) -> Result<Step, IdentityError> {
    let p = open(id, sealed, "mfa")?;
    let origin = Origin {
        org_id: p.org,
        ..origin.clone()
    };
    match login::second_factor(id, p.u, code, &origin.ctx()).await {
        // After a federated login the first factor was the IdP's, not a password.
        Ok(amr) if p.amr.iter().any(|m| m == "fed") => {
            let mut all = p.amr.clone();
            all.extend(amr.into_iter().filter(|m| m != "pwd" && !p.amr.contains(m)));
            done(id, p.u, all, &origin).await
        }
        Ok(amr) => done(id, p.u, amr, &origin).await,
        Err(IdentityError::PasswordChangeRequired) => {
            let amr = if crate::identity::mfa::normalize_totp_input(code).is_some() {
                vec!["pwd", "otp", "mfa"]
            } else {
                vec!["pwd", "mfa"]
            };
            Ok(Step::ChangePassword {
                pending: pending(
                    id,
                    p.u,
                    "password",
                    amr.into_iter().map(String::from).collect(),
                    p.org,
                )?,
            })
        }
        Err(e) => Err(e),
    }
}

/// The forced password change after the other factors.
pub async fn change_password(
    id: &Identity,
    sealed: &str,
    new_password: &Secret<String>,
    origin: &Origin,
) -> Result<Step, IdentityError> {
    let p = open(id, sealed, "password")?;
    users::set_password(id, p.u, new_password, false).await?;
    let origin = Origin {
        org_id: p.org,
        ..origin.clone()
    };
    done(id, p.u, p.amr, &origin).await
}

/// What the authorization endpoint answers.
#[derive(Debug)]
pub enum Outcome {
    /// Send the browser to the client (a code or an error).
    Redirect(String),
    /// Show the login page.
    Login {
        client_name: String,
        login_hint: Option<String>,
    },
    /// Show the consent page.
    Consent {
        client_name: String,
        scopes: Vec<String>,
    },
    /// Show the organization picker: (org id, name) of each org the user belongs to.
    SelectOrg {
        client_name: String,
        orgs: Vec<(Uuid, String)>,
    },
    /// Show an error page; never redirect.
    Page(PageError),
}

/// Runs an authorization request against the browser's session. `fresh`: the user has just
/// authenticated for this request; `consent`: `Some(true/false)` when answering the consent
/// page. Returns the outcome and the client (for the login context).
pub async fn authorize(
    id: &Identity,
    p: &Provider,
    params: &[(String, String)],
    session: Option<&Session>,
    fresh: bool,
    consent: Option<bool>,
) -> Result<(Outcome, Option<OidcClient>), OidcError> {
    let (client_id, redirect_uri, state) = match authorize::front(params) {
        Ok(x) => x,
        Err(e) => return Ok((Outcome::Page(e), None)),
    };
    let mut c = id.db.conn().await.map_err(IdentityError::from)?;
    let client = store::oidc::get_client(&mut c, &client_id).await?;
    if let Err(e) = authorize::check_client(client.as_ref(), &redirect_uri) {
        return Ok((Outcome::Page(e), None));
    }
    let Some(client) = client else {
        return Ok((Outcome::Page(PageError("unknown client".into())), None));
    };
    let redirect_err = |e: &OidcError| {
        Outcome::Redirect(authorize::error_redirect(
            &redirect_uri,
            e,
            state.as_deref(),
            &p.issuer,
        ))
    };
    let req: AuthRequest = match authorize::parse(params, &client) {
        Ok(r) => r,
        Err(e) => return Ok((redirect_err(&e), Some(client))),
    };
    // An org that requires MFA needs a second factor even from an SSO session opened
    // elsewhere (step-up: the user signs in again, through the org's rules).
    let org_needs_mfa = match client.org_id {
        Some(o) => store::orgs::get(&mut c, o)
            .await?
            .is_some_and(|o| o.mfa_required),
        None => false,
    };
    let session = session.filter(|s| {
        !org_needs_mfa
            || s.auth_methods
                .0
                .iter()
                .any(|m| m == "mfa" || m == "otp" || m == "hwk")
    });
    let view = match session {
        Some(s) => store::users::get(&mut c, s.user_id)
            .await?
            .map(|u| SessionView {
                session_id: s.session_id,
                user_id: s.user_id,
                email: u.email,
                auth_time: s.auth_time,
            }),
        None => None,
    };
    drop(c);
    let hint_sub = match &req.id_token_hint {
        None => None,
        Some(t) => {
            let v = jwt::verify(id, &p.keyring, t, &p.issuer, false).await;
            let aud_ok = |c: &serde_json::Map<String, serde_json::Value>| match c.get("aud") {
                Some(serde_json::Value::String(a)) => a == &client.client_id,
                Some(serde_json::Value::Array(a)) => a.iter().any(|x| x == &client.client_id),
                _ => false,
            };
            match v {
                Ok(v) if aud_ok(&v.claims) => v
                    .claims
                    .get("sub")
                    .and_then(|s| s.as_str())
                    .and_then(|s| Uuid::parse_str(s).ok()),
                _ => {
                    let e = OidcError::invalid_request(
                        "id_token_hint is not a valid ID token for this client",
                    );
                    return Ok((redirect_err(&e), Some(client)));
                }
            }
        }
    };
    // An org-bound client admits only that org's members.
    if let (Some(org_id), Some(v)) = (client.org_id, &view) {
        let mut c = id.db.conn().await.map_err(IdentityError::from)?;
        if store::memberships::get(&mut c, v.user_id, org_id)
            .await?
            .is_none()
        {
            let e = OidcError::AccessDenied(
                "the user is not a member of this client's organization".into(),
            );
            return Ok((redirect_err(&e), Some(client)));
        }
    }
    if consent == Some(false) {
        let e = OidcError::AccessDenied("the user denied access".into());
        return Ok((redirect_err(&e), Some(client)));
    }
    let next = authorize::decide(
        &req,
        view.as_ref(),
        hint_sub,
        fresh,
        !client.first_party,
        consent == Some(true),
        id.clock.now(),
    );
    let outcome = match (next, session) {
        (Err(e), _) => redirect_err(&e),
        (Ok(authorize::Next::Login), _) | (Ok(_), None) => Outcome::Login {
            client_name: client.name.clone(),
            login_hint: req.login_hint.clone(),
        },
        (Ok(authorize::Next::Consent), Some(_)) => Outcome::Consent {
            client_name: client.name.clone(),
            scopes: req.scope.clone(),
        },
        (Ok(authorize::Next::Issue), Some(s)) => {
            match pick_org(id, &client, &req, params, s).await? {
                // An org that requires its SSO takes no other session: an org-bound
                // client's user signs in again (the hosted login hands off to the org's
                // IdP); elsewhere the request is refused.
                OrgChoice::Use(Some(org)) if !session_allowed_in(id, s, org).await? => {
                    if client.org_id == Some(org) && !req.prompt.iter().any(|x| x == "none") {
                        Outcome::Login {
                            client_name: client.name.clone(),
                            login_hint: req.login_hint.clone(),
                        }
                    } else {
                        redirect_err(&OidcError::AccessDenied(
                            "the organization requires single sign-on".into(),
                        ))
                    }
                }
                OrgChoice::Use(org) => Outcome::Redirect(
                    authorize::issue_code(id, &p.issuer, &client, &req, s, org).await?,
                ),
                OrgChoice::Ask(_) if req.prompt.iter().any(|x| x == "none") => redirect_err(
                    &OidcError::InteractionRequired("the user must choose an organization".into()),
                ),
                OrgChoice::Ask(orgs) => Outcome::SelectOrg {
                    client_name: client.name.clone(),
                    orgs,
                },
            }
        }
    };
    Ok((outcome, Some(client)))
}

/// Whether the session's way of signing in is one the org accepts: a federated session
/// opened for this org (through its own IdP) always; any other session only where the org
/// allows passwords (`org_login_methods`) — an org that turned passwords off requires its
/// own SSO, not another org's.
async fn session_allowed_in(id: &Identity, s: &Session, org_id: Uuid) -> Result<bool, OidcError> {
    if s.org_id == Some(org_id) && s.auth_methods.0.iter().any(|m| m == "fed") {
        return Ok(true);
    }
    match crate::identity::orgs::login_method_allowed(
        id,
        org_id,
        crate::identity::orgs::LoginMethod::Password,
    )
    .await
    {
        Ok(allowed) => Ok(allowed),
        Err(IdentityError::NotFound { .. }) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// The parameter the organization picker adds to the authorization request (an RP may send
/// it too, as a hint; it is honoured only for an org the user belongs to).
pub const ORG_PARAM: &str = "lintel_org";

enum OrgChoice {
    Use(Option<Uuid>),
    Ask(Vec<(Uuid, String)>),
}

/// The org a code is for: the client's; else, under the `org` scope, the one chosen (or the
/// only one the user belongs to); else the session's.
async fn pick_org(
    id: &Identity,
    client: &OidcClient,
    req: &AuthRequest,
    params: &[(String, String)],
    session: &Session,
) -> Result<OrgChoice, OidcError> {
    if client.org_id.is_some() || !super::claims::has_scope(&req.scope, "org") {
        return Ok(OrgChoice::Use(client.org_id.or(session.org_id)));
    }
    let mut c = id.db.conn().await.map_err(IdentityError::from)?;
    let ms = store::memberships::list_for_user(&mut c, session.user_id).await?;
    let chosen = params
        .iter()
        .find(|(k, _)| k == ORG_PARAM)
        .and_then(|(_, v)| Uuid::parse_str(v).ok())
        .filter(|o| ms.iter().any(|m| m.org_id == *o));
    if let Some(o) = chosen {
        return Ok(OrgChoice::Use(Some(o)));
    }
    match ms.len() {
        0 => Ok(OrgChoice::Use(None)),
        1 => Ok(OrgChoice::Use(Some(ms[0].org_id))),
        _ => {
            let mut orgs = Vec::with_capacity(ms.len());
            for m in &ms {
                if let Some(o) = store::orgs::get(&mut c, m.org_id).await? {
                    orgs.push((o.org_id, o.org_name));
                }
            }
            Ok(OrgChoice::Ask(orgs))
        }
    }
}

/// The client an authorization request names (for the login context), if it is valid.
pub async fn client_of(
    id: &Identity,
    params: &[(String, String)],
) -> Result<Option<OidcClient>, OidcError> {
    let Ok((client_id, _, _)) = authorize::front(params) else {
        return Ok(None);
    };
    let mut c = id.db.conn().await.map_err(IdentityError::from)?;
    Ok(store::oidc::get_client(&mut c, &client_id).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_round_trips_only_for_its_stage() {
        let p = Pending {
            u: Uuid::from_u128(1),
            k: "mfa".into(),
            amr: vec!["pwd".into()],
            exp: 10,
            org: None,
        };
        let text = serde_json::to_string(&p).unwrap();
        let back: Pending = serde_json::from_str(&text).unwrap();
        assert_eq!(back, p);
    }
}
