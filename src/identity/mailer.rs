//! Outgoing mail: SMTP (lettre) when `mail.smtp_url` is set, otherwise a development outbox
//! of one file per message under `<data_dir>/outbox/`, each path logged.
use crate::config::Config;
use lettre::message::{Mailbox, SinglePart};
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

/// A MIME message with one `text/plain; charset=utf-8` part (without a declared charset a
/// reader would assume US-ASCII, RFC 2045 §5.2). lettre picks 7bit, quoted-printable or base64.
fn build(from: &Mailbox, email: &Email) -> Result<Message, MailError> {
    let to: Mailbox = email
        .to
        .parse()
        .map_err(|e| MailError(format!("recipient: {e}")))?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(email.subject.clone())
        .singlepart(SinglePart::plain(email.text.clone()))
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
            // UUIDv7 names sort in sending order. Written under a temporary name and renamed,
            // so a reader of `*.eml` never sees half a message.
            let name = uuid::Uuid::now_v7();
            let tmp = self.dir.join(format!("{name}.eml.tmp"));
            let path = self.dir.join(format!("{name}.eml"));
            tokio::fs::write(&tmp, message.formatted())
                .await
                .map_err(|e| MailError(format!("{}: {e}", tmp.display())))?;
            tokio::fs::rename(&tmp, &path)
                .await
                .map_err(|e| MailError(format!("{}: {e}", path.display())))?;
            // The subject only: bodies carry single-use links.
            tracing::info!(path = %path.display(), subject = %email.subject, "mail written to the dev outbox");
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(env: &[(&str, &str)]) -> Config {
        Config::from_sources(
            None,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap()
    }

    fn email(to: &str) -> Email {
        Email {
            to: to.into(),
            subject: "Grüße".into(),
            text: "Hello Zoë,\n\nhttps://lintel.example/verify-email?token=abc\n".into(),
        }
    }

    #[test]
    fn messages_are_utf8_plain_text_mime() {
        let from: Mailbox = "Lintel <no-reply@localhost>".parse().unwrap();
        let m = build(&from, &email("ada@example.com")).unwrap();
        let text = String::from_utf8(m.formatted()).unwrap();
        let (head, _) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("MIME-Version: 1.0"), "{head}");
        assert!(
            head.contains("Content-Type: text/plain; charset=utf-8"),
            "{head}"
        );
        assert!(head.contains("To: ada@example.com"), "{head}");
        // A non-ASCII subject is RFC 2047-encoded, never raw 8-bit in a header.
        assert!(head.is_ascii(), "{head}");
        assert!(build(&from, &email("not an address")).is_err());
    }

    #[tokio::test]
    async fn outbox_writes_one_file_per_message() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(&[("LINTEL_DATA_DIR", dir.path().to_str().unwrap())]);
        let mailer = from_config(&c).unwrap();
        mailer.send(email("ada@example.com")).await.unwrap();
        mailer.send(email("bob@example.com")).await.unwrap();
        let mut files: Vec<_> = std::fs::read_dir(dir.path().join("outbox"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(files.iter().all(|f| f.extension().unwrap() == "eml"));
        // Names sort in sending order.
        let second = std::fs::read_to_string(&files[1]).unwrap();
        assert!(second.contains("To: bob@example.com"), "{second}");
        // A bad recipient writes nothing.
        assert!(mailer.send(email("nope")).await.is_err());
        assert_eq!(
            std::fs::read_dir(dir.path().join("outbox"))
                .unwrap()
                .count(),
            2
        );
    }

    // Building an SMTP transport starts its connection pool, so it needs a runtime.
    #[tokio::test]
    async fn smtp_url_errors_never_echo_the_url() {
        // Accepted by the config check (a valid smtp URL) but not by lettre.
        let c = config(&[(
            "LINTEL_MAIL_SMTP_URL",
            "smtp://u:hunter2@mail.example?tls=bogus",
        )]);
        let e = from_config(&c).err().unwrap().to_string();
        assert!(e.contains("mail.smtp_url"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        // A usable URL builds an SMTP mailer without connecting.
        assert!(
            from_config(&config(&[(
                "LINTEL_MAIL_SMTP_URL",
                "smtp://127.0.0.1:2525"
            )]))
            .is_ok()
        );
    }

    #[test]
    fn bad_sender_is_rejected() {
        let mut c = config(&[]);
        c.mail.from = "no-reply@".into();
        let e = from_config(&c).err().unwrap().to_string();
        assert!(e.contains("mail.from"), "{e}");
    }
}
