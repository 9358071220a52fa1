//! Outgoing mail: SMTP (lettre) when `mail.smtp_url` is set, otherwise a development outbox
//! of one file per message under `<data_dir>/outbox/`, each path logged.
use crate::config::Config;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

/// A plain-text message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub to: String,
    pub subject: String,
    pub text: String,
}

#[derive(Debug, thiserror::Error)]
#[error("mail: {0}")]
pub struct MailError(pub String);

pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), MailError>> + Send + 'a>>;

pub trait Mailer: Send + Sync {
    fn send(&self, email: Email) -> SendFuture<'_>;
}

/// The mailer the configuration asks for.
pub fn from_config(config: &Config) -> Result<Arc<dyn Mailer>, MailError> {
    let from: Mailbox = config
        .mail
        .from
        .parse()
        .map_err(|e| MailError(format!("`mail.from`: {e}")))?;
    Ok(match &config.mail.smtp_url {
        Some(url) => {
            // The URL may hold credentials: never include it in the error.
            let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                .map_err(|_| MailError("`mail.smtp_url`: not a usable SMTP URL".into()))?
                .build();
            Arc::new(Smtp { transport, from })
        }
        None => Arc::new(Outbox {
            dir: config.data_dir.join("outbox"),
            from,
        }),
    })
}

fn build(from: &Mailbox, email: &Email) -> Result<Message, MailError> {
    let to: Mailbox = email
        .to
        .parse()
        .map_err(|e| MailError(format!("recipient: {e}")))?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(email.subject.clone())
        .body(email.text.clone())
        .map_err(|e| MailError(e.to_string()))
}

/// Delivers over SMTP.
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer for Smtp {
    fn send(&self, email: Email) -> SendFuture<'_> {
        Box::pin(async move {
            let message = build(&self.from, &email)?;
            self.transport
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| MailError(format!("SMTP delivery failed: {e}")))
        })
    }
}

/// Writes each message as an RFC 5322 file (`.eml`) for development.
pub struct Outbox {
    pub dir: PathBuf,
    from: Mailbox,
}

impl Mailer for Outbox {
    fn send(&self, email: Email) -> SendFuture<'_> {
        Box::pin(async move {
            let message = build(&self.from, &email)?;
            tokio::fs::create_dir_all(&self.dir)
                .await
                .map_err(|e| MailError(format!("{}: {e}", self.dir.display())))?;
            let path = self.dir.join(format!("{}.eml", uuid::Uuid::now_v7()));
            tokio::fs::write(&path, message.formatted())
                .await
                .map_err(|e| MailError(format!("{}: {e}", path.display())))?;
            // The subject only: bodies carry single-use links.
            tracing::info!(path = %path.display(), subject = %email.subject, "mail written to the dev outbox");
            Ok(())
        })
    }
}
