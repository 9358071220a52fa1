//! Hosted pages: server-rendered HTML (no JavaScript), escaped by the template engine
//! (minijinja, autoescape on `.html`). Pure rendering: callers pass every value in.
use minijinja::Environment;
use serde::Serialize;
use std::sync::OnceLock;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("mfa.html", include_str!("templates/mfa.html")),
    ("password.html", include_str!("templates/password.html")),
    ("consent.html", include_str!("templates/consent.html")),
    ("error.html", include_str!("templates/error.html")),
    ("logout.html", include_str!("templates/logout.html")),
    ("org.html", include_str!("templates/org.html")),
    ("message.html", include_str!("templates/message.html")),
    ("forgot.html", include_str!("templates/forgot.html")),
    ("reset.html", include_str!("templates/reset.html")),
    ("signup.html", include_str!("templates/signup.html")),
    ("account.html", include_str!("templates/account.html")),
    ("totp.html", include_str!("templates/totp.html")),
    ("recovery.html", include_str!("templates/recovery.html")),
];

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, src) in TEMPLATES {
            if let Err(e) = env.add_template(name, src) {
                tracing::error!(template = name, error = %e, "template does not compile");
            }
        }
        env
    })
}

/// Renders a page; a template failure is a bug, answered with a bare message.
pub fn render(name: &str, ctx: impl Serialize) -> String {
    match env().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => html,
        Err(e) => {
            tracing::error!(template = name, error = %e, "template failed");
            "<!doctype html><title>Error</title><p>Internal error</p>".into()
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct LoginPage<'a> {
    pub csrf: &'a str,
    pub auth: &'a str,
    pub email: &'a str,
    pub client_name: Option<&'a str>,
    pub error: Option<&'a str>,
}

#[derive(Debug, Default, Serialize)]
pub struct StepPage<'a> {
    pub csrf: &'a str,
    pub auth: &'a str,
    pub pending: &'a str,
    pub error: Option<&'a str>,
}

#[derive(Debug, Default, Serialize)]
pub struct ConsentPage<'a> {
    pub csrf: &'a str,
    pub auth: &'a str,
    pub client_name: &'a str,
    pub scopes: Vec<&'a str>,
}

#[derive(Debug, Serialize)]
pub struct OrgOption {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Default, Serialize)]
pub struct OrgPage<'a> {
    pub csrf: &'a str,
    pub auth: &'a str,
    pub client_name: &'a str,
    pub orgs: Vec<OrgOption>,
}

#[derive(Debug, Default, Serialize)]
pub struct LogoutPage<'a> {
    pub csrf: &'a str,
    pub done: bool,
    pub post_logout_redirect_uri: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub state: Option<&'a str>,
}

#[derive(Debug, Default, Serialize)]
pub struct MessagePage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub error: bool,
    pub link: Option<&'a str>,
    pub link_text: Option<&'a str>,
}

#[derive(Debug, Default, Serialize)]
pub struct FormPage<'a> {
    pub csrf: &'a str,
    pub token: &'a str,
    pub invitation: &'a str,
    /// Open sign-up: ask for the email address.
    pub ask_email: bool,
    pub error: Option<&'a str>,
}

#[derive(Debug, Serialize)]
pub struct SessionRow {
    pub id: String,
    pub created_at: String,
    pub user_agent: Option<String>,
    pub current: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct AccountPage<'a> {
    pub csrf: &'a str,
    pub email: &'a str,
    pub mfa_enabled: bool,
    pub sessions: Vec<SessionRow>,
    pub notice: Option<&'a str>,
    pub error: Option<&'a str>,
}

#[derive(Debug, Default, Serialize)]
pub struct TotpPage<'a> {
    pub csrf: &'a str,
    pub device_id: &'a str,
    pub secret: &'a str,
    pub otpauth_uri: &'a str,
    /// The `otpauth://` URI as an inline SVG QR code (rendered here, no external service).
    pub qr_svg: Option<String>,
    pub error: Option<&'a str>,
}

/// An inline SVG QR code of `data` (ISO/IEC 18004), or `None` when it does not fit.
pub fn qr_svg(data: &str) -> Option<String> {
    if data.is_empty() {
        return None;
    }
    let code = qrcode::QrCode::new(data.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build();
    // Drop the XML declaration: the SVG is inlined in HTML.
    Some(match svg.find("<svg") {
        Some(i) => svg[i..].to_string(),
        None => svg,
    })
}

pub fn message_page(title: &str, message: &str, error: bool) -> String {
    render(
        "message.html",
        MessagePage {
            title,
            message,
            error,
            ..Default::default()
        },
    )
}

pub fn error_page(message: &str) -> String {
    render("error.html", minijinja::context! { message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles_and_escapes() {
        for (name, _) in TEMPLATES {
            assert!(env().get_template(name).is_ok(), "{name}");
        }
        let html = render(
            "login.html",
            LoginPage {
                csrf: "c",
                auth: "client_id=a&x=\"><script>",
                email: "<b>",
                client_name: Some("<App>"),
                error: None,
            },
        );
        assert!(html.contains(r#"name="email""#) && html.contains(r#"name="password""#));
        assert!(html.contains(r#"<label for="email">"#));
        assert!(!html.contains("<script>") && !html.contains("<App>") && !html.contains("<b>"));
        assert!(error_page("<x>").contains("&lt;x&gt;"));
        let qr =
            qr_svg("otpauth://totp/Lintel:a%40b.c?secret=JBSWY3DPEHPK3PXP&issuer=Lintel").unwrap();
        assert!(qr.starts_with("<svg") && qr.contains("</svg>"));
    }
}
