//! The command line. `lintel` (or `lintel serve`) serves; admin subcommands print one JSON
//! object on stdout. Exit status: 0 success, 1 the command failed (message on stderr),
//! 2 bad usage, bad configuration or unreachable database.
use crate::app::{self, App, StartupError};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, ConfigFile, Secret};
use crate::identity::{self, IdentityError};
use crate::telemetry;
use clap::{Parser, Subcommand};
use serde_json::json;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(name = "lintel", version, about = "Lintel identity server")]
pub struct Cli {
    /// Configuration file (default: ./config.toml when present).
    #[arg(long, global = true, env = "LINTEL_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Organizations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Users.
    #[command(subcommand)]
    User(UserCommand),
    /// Roles and permissions of an organization.
    #[command(subcommand)]
    Role(RoleCommand),
    /// API keys for the management API.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// SCIM clients (one per IdP connection of an organization).
    #[command(subcommand, name = "scim-client")]
    ScimClient(ScimClientCommand),
    /// OpenID Connect clients (relying parties).
    #[command(subcommand, name = "oidc-client")]
    OidcClient(OidcClientCommand),
    /// Token-signing keys (`keys/`, published at the JWKS URI).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Enterprise identity providers (SAML 2.0 or OpenID Connect) of an organization.
    #[command(subcommand)]
    Idp(IdpCommand),
}

#[derive(Debug, Subcommand)]
pub enum IdpCommand {
    /// Add a provider; prints it with the URLs to give the IdP (SAML: our metadata, entity
    /// ID and ACS; OIDC: the redirect URI). SAML from the IdP's metadata
    /// (`--saml-metadata FILE`) and/or fields (`--settings JSON`, laid over the metadata);
    /// OIDC with `--type oidc --settings '{"issuer": …, "client_id": …}' --client-secret S`.
    Create {
        /// Organization id or url_safe_org_name.
        #[arg(long)]
        org: String,
        #[arg(long, default_value = "saml", value_parser = ["saml", "oidc"])]
        r#type: String,
        #[arg(long, default_value = "Single sign-on")]
        name: String,
        #[arg(long, value_name = "FILE")]
        saml_metadata: Option<PathBuf>,
        /// Settings as a JSON object (see the README's federation section).
        #[arg(long, value_name = "JSON")]
        settings: Option<String>,
        /// The upstream OIDC client secret (or env LINTEL_IDP_CLIENT_SECRET).
        #[arg(long, env = "LINTEL_IDP_CLIENT_SECRET", hide_env_values = true)]
        client_secret: Option<String>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// List an organization's providers.
    List {
        #[arg(long)]
        org: String,
    },
    /// Replace a provider's settings (`--settings`, the whole object) or name.
    Update {
        #[arg(long)]
        org: String,
        #[arg(long)]
        id: uuid::Uuid,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_name = "JSON")]
        settings: Option<String>,
        #[arg(long, value_name = "FILE")]
        saml_metadata: Option<PathBuf>,
        #[arg(long, env = "LINTEL_IDP_CLIENT_SECRET", hide_env_values = true)]
        client_secret: Option<String>,
    },
    Enable {
        #[arg(long)]
        org: String,
        #[arg(long)]
        id: uuid::Uuid,
    },
    Disable {
        #[arg(long)]
        org: String,
        #[arg(long)]
        id: uuid::Uuid,
    },
    /// Delete a provider (its users stay; their links to it go).
    Delete {
        #[arg(long)]
        org: String,
        #[arg(long)]
        id: uuid::Uuid,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScimClientCommand {
    /// Create a client and its first token; prints `client_id`, `token` (once) and `base_url`.
    Create {
        /// Organization id or url_safe_org_name.
        #[arg(long)]
        org: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// Issue a new token; older tokens stay valid for `scim.token_overlap_secs`.
    RotateToken {
        #[arg(long)]
        id: uuid::Uuid,
    },
    /// Revoke one token at once.
    RevokeToken {
        #[arg(long)]
        id: uuid::Uuid,
        #[arg(long)]
        token_id: uuid::Uuid,
    },
    /// Replace the client's attribute mapping: `--map SCIM_ATTRIBUTE=LOCAL` (repeatable),
    /// e.g. `--map title=properties.title`; none restores the defaults.
    SetMapping {
        #[arg(long)]
        id: uuid::Uuid,
        #[arg(long = "map", value_name = "SCIM=LOCAL")]
        maps: Vec<String>,
    },
    /// Replace the client's group → role rules: `--rule "GROUP NAME=ROLE"` (repeatable).
    SetGroupRoles {
        #[arg(long)]
        id: uuid::Uuid,
        #[arg(long = "rule", value_name = "GROUP=ROLE")]
        rules: Vec<String>,
    },
    /// Disable (tokens stop working) or enable a client.
    Disable {
        #[arg(long)]
        id: uuid::Uuid,
    },
    Enable {
        #[arg(long)]
        id: uuid::Uuid,
    },
    /// Delete a client with its tokens and mappings (provisioned users stay).
    Delete {
        #[arg(long)]
        id: uuid::Uuid,
    },
}

#[derive(Debug, Subcommand)]
pub enum OidcClientCommand {
    /// Register a client; prints it with its secret (`client_secret`, shown once).
    Create(Box<CreateClientArgs>),
    /// List clients (of one org with --org).
    List {
        #[arg(long)]
        org: Option<String>,
    },
    /// Replace a confidential client's secret; prints the new one once.
    RotateSecret {
        #[arg(long)]
        id: String,
    },
    /// Disable (or with --enable, enable) a client.
    Disable {
        #[arg(long)]
        id: String,
        #[arg(long)]
        enable: bool,
    },
    /// Delete a client.
    Delete {
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct CreateClientArgs {
    #[arg(long)]
    name: String,
    /// Exact redirect URI (repeatable).
    #[arg(long = "redirect-uri")]
    redirect_uris: Vec<String>,
    /// Post-logout redirect URI (repeatable).
    #[arg(long = "post-logout-redirect-uri")]
    post_logout_redirect_uris: Vec<String>,
    /// A public client (native or browser app): no secret, PKCE required.
    #[arg(long)]
    public: bool,
    /// Bind the client to an organization (id or url_safe_org_name).
    #[arg(long)]
    org: Option<String>,
    /// Allowed grant type (repeatable; default authorization_code and refresh_token).
    #[arg(long = "grant-type")]
    grant_types: Vec<String>,
    /// Allowed scope (repeatable; default openid profile email offline_access).
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// client_secret_basic (default), client_secret_post, or none (public).
    #[arg(long)]
    auth_method: Option<String>,
    /// A first-party client: no consent page.
    #[arg(long)]
    first_party: bool,
    /// ID token signing algorithm: ES256 (default), RS256 or EdDSA (a key of it must
    /// exist: `lintel keys rotate --alg RS256`).
    #[arg(long)]
    id_token_alg: Option<String>,
    /// OIDC Back-Channel Logout endpoint of the client.
    #[arg(long)]
    backchannel_logout_uri: Option<String>,
    /// A JWK Set file with the client's public keys (with --auth-method private_key_jwt).
    #[arg(long)]
    jwks_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new ES256 key: published at once, used for signing after
    /// `oidc.key_activation_delay_secs`; the current key then retires and stays published
    /// until every token it signed has expired.
    Rotate {
        /// ES256 (default), RS256 or EdDSA (the first key of an algorithm signs at once).
        #[arg(long, default_value = "ES256")]
        alg: String,
    },
    /// List the keys and their state.
    List,
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key; prints it once (`key`), never stored in clear.
    #[command(group(clap::ArgGroup::new("kind").required(true).args(["admin", "user"])))]
    Create {
        /// A super-admin key (every org, every operation), e.g. on first setup.
        #[arg(long)]
        admin: bool,
        /// The owner (id or email); the key acts with at most the owner's permissions.
        #[arg(long)]
        user: Option<String>,
        /// Limit the key to this organization (id or url_safe_org_name).
        #[arg(long)]
        org: Option<String>,
        /// A permission the key carries (repeatable), e.g. members:read.
        #[arg(long = "permission")]
        permissions: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        /// Expire after this many days.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// Revoke a key by id.
    Revoke {
        #[arg(long)]
        id: uuid::Uuid,
    },
}

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Create a role in an organization.
    Create {
        /// Organization id or url_safe_org_name.
        #[arg(long)]
        org: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// Give a role to a member (--user), or a permission to a role (--permission; created
    /// in the org when it does not exist yet).
    #[command(group(clap::ArgGroup::new("target").required(true).args(["user", "permission"])))]
    Grant {
        #[arg(long)]
        org: String,
        /// Role id or name.
        #[arg(long)]
        role: String,
        /// User id or email (must be a member).
        #[arg(long)]
        user: Option<String>,
        /// Permission name.
        #[arg(long)]
        permission: Option<String>,
    },
    /// Make ROLE include PARENT: members with ROLE get PARENT's roles and permissions.
    Inherit {
        #[arg(long)]
        org: String,
        #[arg(long)]
        role: String,
        /// The role to include (id or name).
        #[arg(long)]
        from: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization.
    Create {
        #[arg(long)]
        name: String,
        /// url_safe_org_name (default: derived from the name).
        #[arg(long)]
        slug: Option<String>,
    },
    /// Add an existing user to an organization.
    AddMember {
        /// Organization id or url_safe_org_name.
        #[arg(long)]
        org: String,
        /// User id or email.
        #[arg(long)]
        user: String,
        /// Role name (default: member).
        #[arg(long, default_value = "member")]
        role: String,
    },
    /// Claim an email domain for the organization (home-realm discovery, account linking).
    AddDomain {
        #[arg(long)]
        org: String,
        #[arg(long)]
        domain: String,
        /// Mark it verified at once (the operator vouches that the org controls it).
        #[arg(long)]
        verified: bool,
    },
    /// Mark a claimed domain verified (or, with --unverified, not).
    VerifyDomain {
        #[arg(long)]
        org: String,
        #[arg(long)]
        domain: String,
        #[arg(long)]
        unverified: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Create {
        #[arg(long)]
        email: String,
        /// Add the user to this organization (id or url_safe_org_name) as a member.
        #[arg(long)]
        org: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        first_name: Option<String>,
        #[arg(long)]
        last_name: Option<String>,
        /// Mark the email confirmed (the operator vouches for it, e.g. on import).
        #[arg(long)]
        email_confirmed: bool,
    },
    /// Set a user's password (read from stdin); ends the user's sessions.
    SetPassword {
        /// User id or email.
        #[arg(long)]
        user: String,
        /// Read the password from the first line of standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Make the user choose a new password at next sign-in.
        #[arg(long)]
        require_change: bool,
    },
    /// Disable a user (cannot sign in; sessions end).
    Disable {
        #[arg(long)]
        user: String,
    },
    /// Re-enable a disabled user.
    Enable {
        #[arg(long)]
        user: String,
    },
    /// Lock a user (admin lock; sessions end).
    Lock {
        #[arg(long)]
        user: String,
    },
    /// Lift an admin lock and any temporary lockout after failed logins.
    Unlock {
        #[arg(long)]
        user: String,
    },
    /// Import users from JSON lines (FILE, or - for stdin): {"email", "legacy_user_id",
    /// "password_hash" (bcrypt or argon2), "first_name", "last_name", "username",
    /// "email_confirmed", "properties"}. Each line is imported on its own.
    Import { file: PathBuf },
}

/// A failure of a CLI command and the exit status it maps to.
#[derive(Debug)]
enum Failure {
    /// Configuration, database reachability: exit 2.
    Startup(StartupError),
    /// The command itself failed: exit 1.
    Command(String),
}

impl From<StartupError> for Failure {
    fn from(e: StartupError) -> Self {
        Failure::Startup(e)
    }
}

impl From<IdentityError> for Failure {
    fn from(e: IdentityError) -> Self {
        Failure::Command(match e {
            IdentityError::Conflict { field, message } => format!("{message} (conflict: {field})"),
            IdentityError::Invalid { field, message } => format!("invalid {field}: {message}"),
            IdentityError::NotFound { what } => format!("{what} not found"),
            other => other.to_string(),
        })
    }
}

/// Parses arguments and runs; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = match &cli.config {
        Some(p) => ConfigFile::Explicit(p.clone()),
        None => ConfigFile::Default,
    };
    let config = match Config::load(&file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lintel: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config.log_level, config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lintel: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli.command.unwrap_or(Command::Serve), config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Startup(e)) => {
            eprintln!("lintel: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Command(m)) => {
            eprintln!("lintel: {m}");
            ExitCode::from(1)
        }
    }
}

fn print(v: serde_json::Value) {
    println!("{v}");
}

async fn run(command: Command, config: Config) -> Result<(), Failure> {
    let clock: SharedClock = Arc::new(SystemClock);
    match command {
        Command::Serve => {
            let app = App::build(config).await?;
            let addr = app
                .local_addr()
                .map_err(|e| Failure::Command(e.to_string()))?;
            tracing::info!("listening on http://{addr}");
            app.serve(app::shutdown_signal())
                .await
                .map_err(|e| Failure::Command(format!("server: {e}")))?;
            tracing::info!("stopped");
            Ok(())
        }
        Command::Migrate => {
            let db = app::open_store(&config).await?;
            // open_store applied anything pending; report the state.
            let versions = db
                .applied_migrations()
                .await
                .map_err(|e| Failure::Command(e.to_string()))?;
            print(json!({ "database": db.backend(), "migrations": versions }));
            Ok(())
        }
        Command::Org(OrgCommand::Create { name, slug }) => {
            let db = app::open_store(&config).await?;
            let id = app::identity(&config, db, clock)?;
            let org = identity::orgs::create(&id, &name, slug.as_deref()).await?;
            print(json!({
                "org_id": org.org_id,
                "org_name": org.org_name,
                "url_safe_org_name": org.url_safe_org_name,
                "created_at": org.created_at,
            }));
            Ok(())
        }
        Command::Org(OrgCommand::AddDomain {
            org,
            domain,
            verified,
        }) => {
            let db = app::open_store(&config).await?;
            let id = app::identity(&config, db, clock)?;
            let org_id = identity::orgs::resolve(&id, &org).await?.org_id;
            let mut d = identity::orgs::add_domain(&id, org_id, &domain).await?;
            if verified {
                identity::orgs::set_domain_verified(&id, org_id, &d.domain, true).await?;
                d.verified = true;
            }
            print(serde_json::to_value(&d).unwrap_or_default());
            Ok(())
        }
        Command::Org(OrgCommand::VerifyDomain {
            org,
            domain,
            unverified,
        }) => {
            let db = app::open_store(&config).await?;
            let id = app::identity(&config, db, clock)?;
            let org_id = identity::orgs::resolve(&id, &org).await?.org_id;
            identity::orgs::set_domain_verified(&id, org_id, &domain, !unverified).await?;
            print(json!({ "org_id": org_id, "domain": domain, "verified": !unverified }));
            Ok(())
        }
        Command::Org(OrgCommand::AddMember { org, user, role }) => {
            let db = app::open_store(&config).await?;
            let id = app::identity(&config, db, clock)?;
            let org_id = identity::orgs::resolve(&id, &org).await?.org_id;
            let user_id = resolve_user(&id, &user).await?;
            let m = identity::memberships::add(&id, org_id, user_id, &role).await?;
            print(membership_json(&m));
            Ok(())
        }
        Command::ApiKey(cmd) => {
            let db = app::open_store(&config).await?;
            let id = app::identity(&config, db, clock)?;
            api_key_admin(&id, cmd).await
        }
        Command::Idp(cmd) => {
            let db = app::open_store(&config).await?;
            let id = app::identity(&config, db, clock)?;
            idp_admin(&id, &config, cmd).await
        }
        Command::ScimClient(cmd) => {
            let db = app::open_store(&config).await?;
            let id = app::identity(&config, db, clock)?;
            scim_client_admin(&id, cmd).await
        }
        Command::Role(cmd) => {
            let db = app::open_store(&config).await?;
            let id = app::identity(&config, db, clock)?;
            role_admin(&id, cmd).await
        }
        Command::User(cmd) => {
            let db = app::open_store(&config).await?;
            let id = app::identity(&config, db, clock)?;
            user_admin(&id, cmd).await
        }
        Command::OidcClient(cmd) => {
            let db = app::open_store(&config).await?;
            let id = app::identity(&config, db, clock)?;
            oidc_client_admin(&id, cmd).await
        }
        Command::Keys(cmd) => {
            let db = app::open_store(&config).await?;
            let id = app::identity(&config, db, clock)?;
            keys_admin(&id, cmd).await
        }
    }
}

fn oidc_client_json(c: &crate::store::oidc::OidcClient) -> serde_json::Value {
    serde_json::to_value(c).unwrap_or_default()
}

async fn oidc_client_admin(id: &identity::Identity, cmd: OidcClientCommand) -> Result<(), Failure> {
    use crate::oidc::clients;
    let non_empty = |v: Vec<String>| (!v.is_empty()).then_some(v);
    match cmd {
        OidcClientCommand::Create(args) => {
            let CreateClientArgs {
                name,
                redirect_uris,
                post_logout_redirect_uris,
                public,
                org,
                grant_types,
                scopes,
                auth_method,
                first_party,
                id_token_alg,
                backchannel_logout_uri,
                jwks_file,
            } = *args;
            let jwks = match jwks_file {
                Some(p) => {
                    let text = std::fs::read_to_string(&p)
                        .map_err(|e| Failure::Command(format!("{}: {e}", p.display())))?;
                    Some(serde_json::from_str(&text).map_err(|e| {
                        Failure::Command(format!("{}: not JSON ({e})", p.display()))
                    })?)
                }
                None => None,
            };
            let org_id = match org {
                Some(o) => Some(identity::orgs::resolve(id, &o).await?.org_id),
                None => None,
            };
            let new = clients::NewClient {
                name,
                org_id,
                redirect_uris,
                post_logout_redirect_uris,
                grant_types: non_empty(grant_types),
                scopes: non_empty(scopes),
                token_endpoint_auth_method: auth_method,
                public,
                first_party,
                id_token_signed_response_alg: id_token_alg,
                backchannel_logout_uri,
                jwks,
            };
            let (client, secret) = clients::create(id, new).await?;
            let mut out = oidc_client_json(&client);
            out["client_secret"] = json!(secret.as_ref().map(|s| s.expose()));
            print(out);
        }
        OidcClientCommand::List { org } => {
            let org_id = match org {
                Some(o) => Some(identity::orgs::resolve(id, &o).await?.org_id),
                None => None,
            };
            let mut all = Vec::new();
            let mut after = None;
            loop {
                let page = clients::list(id, org_id, after, 200).await?;
                let Some(last) = page.last() else { break };
                after = uuid::Uuid::parse_str(&last.client_id).ok();
                let done = page.len() < 200 || after.is_none();
                all.extend(page.iter().map(oidc_client_json));
                if done {
                    break;
                }
            }
            print(json!({ "clients": all }));
        }
        OidcClientCommand::RotateSecret { id: client_id } => {
            let (client, secret) = clients::rotate_secret(id, &client_id).await?;
            let mut out = oidc_client_json(&client);
            out["client_secret"] = json!(secret.expose());
            print(out);
        }
        OidcClientCommand::Disable {
            id: client_id,
            enable,
        } => {
            let patch = clients::ClientPatch {
                enabled: Some(enable),
                ..Default::default()
            };
            print(oidc_client_json(
                &clients::update(id, &client_id, patch).await?,
            ));
        }
        OidcClientCommand::Delete { id: client_id } => {
            clients::delete(id, &client_id).await?;
            print(json!({ "deleted": client_id }));
        }
    }
    Ok(())
}

/// A user as the CLI prints it (never a secret).
fn user_json(u: &crate::store::users::User) -> serde_json::Value {
    json!({
        "user_id": u.user_id,
        "email": u.email,
        "username": u.username,
        "first_name": u.first_name,
        "last_name": u.last_name,
        "legacy_user_id": u.legacy_user_id,
        "email_confirmed": u.email_confirmed,
        "has_password": u.has_password,
        "update_password_required": u.update_password_required,
        "enabled": u.enabled,
        "locked": u.locked,
        "mfa_enabled": u.mfa_enabled,
        "created_at": u.created_at,
    })
}

fn membership_json(m: &crate::store::memberships::Membership) -> serde_json::Value {
    json!({
        "user_id": m.user_id,
        "org_id": m.org_id,
        "user_role": m.user_role,
        "org_role_structure": m.org_role_structure,
        "inherited_user_roles_plus_current_role": m.inherited_user_roles_plus_current_role,
        "user_permissions": m.user_permissions,
        "additional_roles": m.additional_roles,
    })
}

/// A role of the org named by id or (case-insensitively) by name.
async fn resolve_role(
    id: &identity::Identity,
    org_id: uuid::Uuid,
    who: &str,
) -> Result<crate::store::roles::Role, IdentityError> {
    let roles = identity::roles::list_roles(id, org_id).await?;
    let by_id = uuid::Uuid::parse_str(who).ok();
    roles
        .into_iter()
        .find(|r| Some(r.role_id) == by_id || r.name.eq_ignore_ascii_case(who))
        .ok_or(IdentityError::NotFound { what: "role" })
}

async fn role_admin(id: &identity::Identity, cmd: RoleCommand) -> Result<(), Failure> {
    use identity::roles;
    match cmd {
        RoleCommand::Create {
            org,
            name,
            description,
        } => {
            let org_id = identity::orgs::resolve(id, &org).await?.org_id;
            let role = roles::create_role(id, org_id, &name, description.as_deref()).await?;
            print(json!({
                "role_id": role.role_id,
                "org_id": role.org_id,
                "name": role.name,
                "description": role.description,
                "created_at": role.created_at,
            }));
        }
        RoleCommand::Grant {
            org,
            role,
            user,
            permission,
        } => {
            let org_id = identity::orgs::resolve(id, &org).await?.org_id;
            let role = resolve_role(id, org_id, &role).await?;
            match (user, permission) {
                (Some(user), _) => {
                    let user_id = resolve_user(id, &user).await?;
                    let m = roles::assign_role(id, org_id, user_id, role.role_id).await?;
                    print(membership_json(&m));
                }
                (None, Some(name)) => {
                    let existing = roles::list_permissions(id, org_id)
                        .await?
                        .into_iter()
                        .find(|p| p.name.eq_ignore_ascii_case(&name));
                    let permission = match existing {
                        Some(p) => p,
                        None => roles::create_permission(id, org_id, &name, None).await?,
                    };
                    roles::grant_permission(id, org_id, role.role_id, permission.permission_id)
                        .await?;
                    print(json!({
                        "org_id": org_id,
                        "role_id": role.role_id,
                        "role": role.name,
                        "permission_id": permission.permission_id,
                        "permission": permission.name,
                    }));
                }
                (None, None) => {
                    return Err(Failure::Command("give --user or --permission".into()));
                }
            }
        }
        RoleCommand::Inherit { org, role, from } => {
            let org_id = identity::orgs::resolve(id, &org).await?.org_id;
            let child = resolve_role(id, org_id, &role).await?;
            let parent = resolve_role(id, org_id, &from).await?;
            roles::add_inheritance(id, org_id, child.role_id, parent.role_id).await?;
            print(json!({
                "org_id": org_id,
                "role_id": child.role_id,
                "role": child.name,
                "parent_role_id": parent.role_id,
                "parent_role": parent.name,
            }));
        }
    }
    Ok(())
}

async fn api_key_admin(id: &identity::Identity, cmd: ApiKeyCommand) -> Result<(), Failure> {
    let key = match cmd {
        ApiKeyCommand::Create {
            admin,
            user,
            org,
            permissions,
            description,
            expires_in_days,
        } => {
            let user_id = match user {
                Some(u) => Some(resolve_user(id, &u).await?),
                None => None,
            };
            let org_id = match org {
                Some(o) => Some(identity::orgs::resolve(id, &o).await?.org_id),
                None => None,
            };
            let expires_at =
                expires_in_days.map(|d| id.clock.now() + chrono::Duration::days(i64::from(d)));
            let new = identity::api_keys::NewApiKey {
                user_id,
                org_id,
                permissions,
                description,
                expires_at,
                is_admin: admin,
            };
            let (key, secret) = identity::api_keys::create(id, new).await?;
            let mut out = api_key_json(&key);
            out["key"] = json!(secret.expose());
            print(out);
            return Ok(());
        }
        ApiKeyCommand::Revoke { id: key_id } => identity::api_keys::revoke(id, key_id).await?,
    };
    print(api_key_json(&key));
    Ok(())
}

fn pairs(items: &[String], what: &str) -> Result<Vec<(String, String)>, Failure> {
    items
        .iter()
        .map(|m| {
            m.split_once('=')
                .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
                .ok_or_else(|| Failure::Command(format!("{what} `{m}`: expected A=B")))
        })
        .collect()
}

fn json_arg(raw: Option<&str>) -> Result<serde_json::Value, Failure> {
    match raw {
        None => Ok(json!({})),
        Some(r) => serde_json::from_str(r)
            .map_err(|e| Failure::Command(format!("invalid --settings: {e}"))),
    }
}

fn read_file(path: &std::path::Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::Command(format!("cannot read {}: {e}", path.display())))
}

async fn idp_admin(
    id: &identity::Identity,
    config: &Config,
    cmd: IdpCommand,
) -> Result<(), Failure> {
    use crate::federation::providers::{self, NewProvider, ProviderPatch};
    use crate::store::federation::IdentityProvider;
    let base = config.issuer.as_str().trim_end_matches('/').to_string();
    let now = id.clock.now();
    let view = |p: &IdentityProvider| {
        let warnings = providers::certificate_warnings(p, now);
        for w in &warnings {
            tracing::warn!(provider_id = %p.provider_id, certificate = %w.certificate,
                not_after = %w.not_after, "IdP certificate expires soon");
        }
        let mut v = serde_json::to_value(p).unwrap_or_default();
        v["endpoints"] = json!(providers::endpoints(&base, p));
        v["certificate_warnings"] = json!(warnings);
        v
    };
    let config_of = |kind: &str, metadata: Option<&PathBuf>, raw: Option<&str>| {
        let extra = json_arg(raw)?;
        match metadata {
            Some(path) if kind == "saml" => {
                Ok::<_, Failure>(providers::config_from_metadata(&read_file(path)?, &extra)?)
            }
            Some(_) => Err(Failure::Command(
                "--saml-metadata is for SAML providers".into(),
            )),
            None => Ok(extra),
        }
    };
    match cmd {
        IdpCommand::Create {
            org,
            r#type,
            name,
            saml_metadata,
            settings,
            client_secret,
            disabled,
        } => {
            let org_id = identity::orgs::resolve(id, &org).await?.org_id;
            let cfg = config_of(&r#type, saml_metadata.as_ref(), settings.as_deref())?;
            let p = providers::create(
                id,
                org_id,
                NewProvider {
                    kind: r#type,
                    name,
                    config: cfg,
                    client_secret: client_secret.map(Secret::new),
                    enabled: !disabled,
                },
            )
            .await?;
            print(view(&p));
        }
        IdpCommand::List { org } => {
            let org_id = identity::orgs::resolve(id, &org).await?.org_id;
            let rows = providers::list(id, org_id, None, 1000).await?;
            print(json!(rows.iter().map(view).collect::<Vec<_>>()));
        }
        IdpCommand::Update {
            org,
            id: provider_id,
            name,
            settings,
            saml_metadata,
            client_secret,
        } => {
            let org_id = identity::orgs::resolve(id, &org).await?.org_id;
            let current = providers::get(id, org_id, provider_id).await?;
            let cfg = if settings.is_some() || saml_metadata.is_some() {
                Some(config_of(
                    &current.kind,
                    saml_metadata.as_ref(),
                    settings.as_deref(),
                )?)
            } else {
                None
            };
            let p = providers::update(
                id,
                org_id,
                provider_id,
                ProviderPatch {
                    name,
                    config: cfg,
                    client_secret: client_secret.map(|s| Some(Secret::new(s))),
                    enabled: None,
                },
            )
            .await?;
            print(view(&p));
        }
        IdpCommand::Enable {
            ref org,
            id: provider_id,
        }
        | IdpCommand::Disable {
            ref org,
            id: provider_id,
        } => {
            let enabled = matches!(cmd, IdpCommand::Enable { .. });
            let org_id = identity::orgs::resolve(id, org).await?.org_id;
            let p = providers::update(
                id,
                org_id,
                provider_id,
                ProviderPatch {
                    enabled: Some(enabled),
                    ..Default::default()
                },
            )
            .await?;
            print(view(&p));
        }
        IdpCommand::Delete {
            org,
            id: provider_id,
        } => {
            let org_id = identity::orgs::resolve(id, &org).await?.org_id;
            providers::delete(id, org_id, provider_id).await?;
            print(json!({ "provider_id": provider_id, "deleted": true }));
        }
    }
    Ok(())
}

async fn scim_client_admin(id: &identity::Identity, cmd: ScimClientCommand) -> Result<(), Failure> {
    use crate::scim::clients;
    let client_json = |c: &crate::store::scim::ScimClient| {
        json!({
            "client_id": c.client_id,
            "org_id": c.org_id,
            "name": c.name,
            "enabled": c.enabled,
            "created_at": c.created_at,
        })
    };
    match cmd {
        ScimClientCommand::Create { org, name } => {
            let org_id = identity::orgs::resolve(id, &org).await?.org_id;
            let (client, token, secret) = clients::create(id, org_id, name).await?;
            let mut out = client_json(&client);
            out["token"] = json!(secret.expose());
            out["token_id"] = json!(token.token_id);
            out["token_expires_at"] = json!(token.expires_at);
            out["base_url"] = json!(crate::scim::base_url(&id.config));
            print(out);
        }
        ScimClientCommand::RotateToken { id: client_id } => {
            let (token, secret) = clients::rotate_token(id, client_id).await?;
            print(json!({
                "client_id": client_id,
                "token_id": token.token_id,
                "token": secret.expose(),
                "token_expires_at": token.expires_at,
            }));
        }
        ScimClientCommand::RevokeToken {
            id: client_id,
            token_id,
        } => {
            clients::revoke_token(id, client_id, token_id).await?;
            print(json!({ "client_id": client_id, "token_id": token_id, "revoked": true }));
        }
        ScimClientCommand::SetMapping {
            id: client_id,
            maps,
        } => {
            let rows = clients::set_mappings(id, client_id, pairs(&maps, "mapping")?).await?;
            print(json!({ "client_id": client_id, "mappings": rows }));
        }
        ScimClientCommand::SetGroupRoles {
            id: client_id,
            rules,
        } => {
            let rows = clients::set_group_roles(id, client_id, pairs(&rules, "rule")?).await?;
            print(json!({ "client_id": client_id, "group_roles": rows }));
        }
        ScimClientCommand::Disable { id: client_id }
        | ScimClientCommand::Enable { id: client_id } => {
            let enabled = matches!(cmd, ScimClientCommand::Enable { .. });
            let c = clients::update(id, client_id, None, Some(enabled)).await?;
            print(client_json(&c));
        }
        ScimClientCommand::Delete { id: client_id } => {
            clients::delete(id, client_id).await?;
            print(json!({ "client_id": client_id, "deleted": true }));
        }
    }
    Ok(())
}

fn api_key_json(k: &crate::store::api_keys::ApiKey) -> serde_json::Value {
    json!({
        "api_key_id": k.api_key_id,
        "key_prefix": k.key_prefix,
        "user_id": k.user_id,
        "org_id": k.org_id,
        "permissions": k.permissions,
        "is_admin": k.is_admin,
        "expires_at": k.expires_at,
        "revoked": k.revoked,
    })
}

/// A user named on the command line by id or email.
async fn resolve_user(id: &identity::Identity, who: &str) -> Result<uuid::Uuid, IdentityError> {
    match uuid::Uuid::parse_str(who) {
        Ok(user_id) => identity::users::get(id, user_id).await.map(|u| u.user_id),
        Err(_) => identity::users::find_by_email(id, who)
            .await
            .map(|u| u.user_id),
    }
}

async fn user_admin(id: &identity::Identity, cmd: UserCommand) -> Result<(), Failure> {
    use identity::users;
    let user = match cmd {
        UserCommand::Create {
            email,
            org,
            password_stdin,
            first_name,
            last_name,
            email_confirmed,
        } => {
            let password = if password_stdin {
                Some(read_password().map_err(Failure::Command)?)
            } else {
                None
            };
            let org_id = match org {
                Some(o) => Some(identity::orgs::resolve(id, &o).await?.org_id),
                None => None,
            };
            let new = users::NewUser {
                email,
                password,
                first_name,
                last_name,
                org_id,
            };
            let (mut user, membership) = users::create(id, new).await?;
            if email_confirmed {
                user = users::update(
                    id,
                    user.user_id,
                    users::UserPatch {
                        email_confirmed: Some(true),
                        ..Default::default()
                    },
                )
                .await?;
            }
            let mut out = user_json(&user);
            out["org_id"] = json!(membership.as_ref().map(|m| m.org_id));
            out["user_role"] = json!(membership.as_ref().map(|m| m.user_role.clone()));
            print(out);
            return Ok(());
        }
        UserCommand::SetPassword {
            user,
            require_change,
            ..
        } => {
            let password = read_password().map_err(Failure::Command)?;
            let user_id = resolve_user(id, &user).await?;
            users::set_password(id, user_id, &password, require_change).await?
        }
        UserCommand::Disable { user } => {
            users::set_enabled(id, resolve_user(id, &user).await?, false).await?
        }
        UserCommand::Enable { user } => {
            users::set_enabled(id, resolve_user(id, &user).await?, true).await?
        }
        UserCommand::Lock { user } => users::lock(id, resolve_user(id, &user).await?).await?,
        UserCommand::Unlock { user } => users::unlock(id, resolve_user(id, &user).await?).await?,
        UserCommand::Import { file } => return import(id, &file).await,
    };
    print(user_json(&user));
    Ok(())
}

/// `lintel user import`: prints {"imported": N, "failed": [{"line": L, "error": E}]}; exit 1
/// when any line failed (the others are imported).
async fn import(id: &identity::Identity, file: &std::path::Path) -> Result<(), Failure> {
    let text = if file.as_os_str() == "-" {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .map_err(|e| Failure::Command(format!("stdin: {e}")))?;
        buf
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| Failure::Command(format!("{}: {e}", file.display())))?
    };
    let (mut imported, mut failed) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let result = match serde_json::from_str::<identity::users::ImportRecord>(line) {
            Ok(record) => {
                identity::users::import(id, record)
                    .await
                    .map_err(|e| match Failure::from(e) {
                        Failure::Command(m) => m,
                        Failure::Startup(e) => e.to_string(),
                    })
            }
            Err(e) => Err(format!("not a valid record: {e}")),
        };
        match result {
            Ok(u) => imported.push(json!({"line": n + 1, "user_id": u.user_id, "email": u.email})),
            Err(error) => failed.push(json!({"line": n + 1, "error": error})),
        }
    }
    let ok = failed.is_empty();
    print(json!({ "imported": imported.len(), "users": imported, "failed": failed }));
    if ok {
        Ok(())
    } else {
        Err(Failure::Command(
            "some lines were not imported (see \"failed\")".into(),
        ))
    }
}

/// The first line of stdin, without its line ending.
fn read_password() -> Result<Secret<String>, String> {
    let mut buf = String::new();
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut buf)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let line = buf.lines().next().unwrap_or_default().to_string();
    if line.is_empty() {
        return Err("--password-stdin: no password on standard input".into());
    }
    Ok(Secret::new(line))
}

async fn keys_admin(id: &identity::Identity, cmd: KeysCommand) -> Result<(), Failure> {
    let now = id.clock.now();
    let key_json = |k: &crate::store::signing_keys::SigningKey| {
        let state = if k.published_until.is_some_and(|p| p <= now) {
            "unpublished"
        } else if k.retired_at.is_some_and(|r| r <= now) {
            "retired"
        } else if k.active_from > now {
            "upcoming"
        } else {
            "active"
        };
        json!({
            "kid": k.kid,
            "alg": k.alg,
            "state": state,
            "created_at": k.created_at,
            "active_from": k.active_from,
            "retired_at": k.retired_at,
            "published_until": k.published_until,
        })
    };
    match cmd {
        KeysCommand::Rotate { alg } => {
            let row = crate::oidc::keys::rotate(id, &id.config.keys_dir, &alg).await?;
            print(key_json(&row));
        }
        KeysCommand::List => {
            let rows = crate::oidc::keys::list(id).await?;
            print(json!({ "keys": rows.iter().map(key_json).collect::<Vec<_>>() }));
        }
    }
    Ok(())
}
