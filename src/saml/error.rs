//! One error type for the SAML SP, named after the checks of SAML Core/Profiles.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SamlError {
    #[error("malformed SAML message: {0}")]
    Malformed(String),
    #[error("SAML message too large")]
    TooLarge,
    #[error("DOCTYPE or entity declarations are not accepted")]
    Doctype,
    #[error("signature: {0}")]
    Signature(String),
    #[error("algorithm not accepted: {0}")]
    Algorithm(String),
    #[error("issuer: {0}")]
    Issuer(String),
    #[error("destination: {0}")]
    Destination(String),
    #[error("audience: {0}")]
    Audience(String),
    #[error("recipient: {0}")]
    Recipient(String),
    #[error("timing: {0}")]
    Timing(String),
    #[error("InResponseTo: {0}")]
    InResponseTo(String),
    #[error("unsolicited responses are not allowed for this provider")]
    Unsolicited,
    #[error("status: {0}")]
    Status(String),
    #[error("subject confirmation: {0}")]
    SubjectConfirmation(String),
    #[error("more than one assertion")]
    MultipleAssertions,
    #[error("encryption: {0}")]
    Encryption(String),
    #[error("configuration: {0}")]
    Config(String),
}

impl SamlError {
    /// Short human name of the failed check, for the error page.
    pub fn category(&self) -> &'static str {
        match self {
            SamlError::Malformed(_) => "malformed response",
            SamlError::TooLarge => "response too large",
            SamlError::Doctype => "document type declaration",
            SamlError::Signature(_) => "signature",
            SamlError::Algorithm(_) => "algorithm",
            SamlError::Issuer(_) => "issuer",
            SamlError::Destination(_) => "destination",
            SamlError::Audience(_) => "audience",
            SamlError::Recipient(_) => "recipient",
            SamlError::Timing(_) => "validity period",
            SamlError::InResponseTo(_) => "request correlation",
            SamlError::Unsolicited => "unsolicited response",
            SamlError::Status(_) => "identity provider status",
            SamlError::SubjectConfirmation(_) => "subject confirmation",
            SamlError::MultipleAssertions => "multiple assertions",
            SamlError::Encryption(_) => "encryption",
            SamlError::Config(_) => "configuration",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_distinct_per_check() {
        let all = [
            SamlError::Malformed(String::new()),
            SamlError::TooLarge,
            SamlError::Doctype,
            SamlError::Signature(String::new()),
            SamlError::Algorithm(String::new()),
            SamlError::Issuer(String::new()),
            SamlError::Destination(String::new()),
            SamlError::Audience(String::new()),
            SamlError::Recipient(String::new()),
            SamlError::Timing(String::new()),
            SamlError::InResponseTo(String::new()),
            SamlError::Unsolicited,
            SamlError::Status(String::new()),
            SamlError::SubjectConfirmation(String::new()),
            SamlError::MultipleAssertions,
            SamlError::Encryption(String::new()),
            SamlError::Config(String::new()),
        ];
        let names: std::collections::BTreeSet<_> = all.iter().map(|e| e.category()).collect();
        assert_eq!(names.len(), all.len());
    }
}
