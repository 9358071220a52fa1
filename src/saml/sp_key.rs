//! Our SP key: RSA 2048 and a self-signed certificate (10 years), as PEM files in
//! `<keys dir>/saml/` (a subfolder, so the JWT key loader never sees them).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509, X509NameBuilder};
use std::io;
use std::path::{Path, PathBuf};

pub struct SpKey {
    key: PKey<Private>,
    cert: X509,
    key_pem: Vec<u8>,
    pub key_path: PathBuf,
    pub cert_path: PathBuf,
}

impl std::fmt::Debug for SpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpKey")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

fn ossl(e: openssl::error::ErrorStack) -> io::Error {
    io::Error::other(e.to_string())
}

impl SpKey {
    /// Loads `dir/saml/sp.key.pem` and `dir/saml/sp.crt.pem`, generating both when absent
    /// (key file mode 0600).
    pub fn load_or_generate(dir: &Path) -> io::Result<SpKey> {
        let sub = dir.join("saml");
        let key_path = sub.join("sp.key.pem");
        let cert_path = sub.join("sp.crt.pem");
        if key_path.exists() && cert_path.exists() {
            let key_pem = std::fs::read(&key_path)?;
            let cert_pem = std::fs::read(&cert_path)?;
            return Self::from_pem(&key_pem, &cert_pem, key_path, cert_path);
        }
        std::fs::create_dir_all(&sub)?;
        let (key_pem, cert_pem) = generate()?;
        write_private(&key_path, &key_pem)?;
        std::fs::write(&cert_path, &cert_pem)?;
        Self::from_pem(&key_pem, &cert_pem, key_path, cert_path)
    }

    pub fn from_pem(
        key_pem: &[u8],
        cert_pem: &[u8],
        key_path: PathBuf,
        cert_path: PathBuf,
    ) -> io::Result<SpKey> {
        let key = PKey::private_key_from_pem(key_pem).map_err(ossl)?;
        let cert = X509::from_pem(cert_pem).map_err(ossl)?;
        let cert_key = cert.public_key().map_err(ossl)?;
        if !key.public_eq(&cert_key) {
            return Err(io::Error::other(
                "SAML SP certificate does not match its key",
            ));
        }
        // PKCS#8 for xml-sec's key inventory.
        let key_pem = key.private_key_to_pem_pkcs8().map_err(ossl)?;
        Ok(SpKey {
            key,
            cert,
            key_pem,
            key_path,
            cert_path,
        })
    }

    /// Base64 DER of the certificate, for `<ds:X509Certificate>` in SP metadata.
    pub fn cert_base64_der(&self) -> String {
        STANDARD.encode(self.cert.to_der().unwrap_or_default())
    }

    /// RSA-SHA256 (PKCS#1 v1.5) signature, for the HTTP-Redirect binding (Bindings §3.4.4.1).
    pub(crate) fn sign_rsa_sha256(
        &self,
        data: &[u8],
    ) -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let mut s = openssl::sign::Signer::new(MessageDigest::sha256(), &self.key)?;
        s.update(data)?;
        s.sign_to_vec()
    }

    pub(crate) fn pkcs8_pem(&self) -> &[u8] {
        &self.key_pem
    }
}

fn generate() -> io::Result<(Vec<u8>, Vec<u8>)> {
    let rsa = Rsa::generate(2048).map_err(ossl)?;
    let key = PKey::from_rsa(rsa).map_err(ossl)?;
    let mut name = X509NameBuilder::new().map_err(ossl)?;
    name.append_entry_by_text("CN", "Lintel SAML SP")
        .map_err(ossl)?;
    let name = name.build();
    let mut b = X509::builder().map_err(ossl)?;
    b.set_version(2).map_err(ossl)?;
    let mut serial = BigNum::new().map_err(ossl)?;
    serial
        .rand(127, MsbOption::MAYBE_ZERO, false)
        .map_err(ossl)?;
    let serial = serial.to_asn1_integer().map_err(ossl)?;
    b.set_serial_number(&serial).map_err(ossl)?;
    b.set_subject_name(&name).map_err(ossl)?;
    b.set_issuer_name(&name).map_err(ossl)?;
    b.set_pubkey(&key).map_err(ossl)?;
    let not_before = Asn1Time::days_from_now(0).map_err(ossl)?;
    let not_after = Asn1Time::days_from_now(3650).map_err(ossl)?;
    b.set_not_before(&not_before).map_err(ossl)?;
    b.set_not_after(&not_after).map_err(ossl)?;
    b.sign(&key, MessageDigest::sha256()).map_err(ossl)?;
    let cert = b.build();
    Ok((
        key.private_key_to_pem_pkcs8().map_err(ossl)?,
        cert.to_pem().map_err(ossl)?,
    ))
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(bytes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn test_sp_key() -> SpKey {
        SpKey::from_pem(
            include_bytes!("testdata/sp.key.pem"),
            include_bytes!("testdata/sp.crt.pem"),
            PathBuf::new(),
            PathBuf::new(),
        )
        .unwrap()
    }

    #[test]
    fn generates_once_then_loads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = SpKey::load_or_generate(dir.path()).unwrap();
        let b = SpKey::load_or_generate(dir.path()).unwrap();
        assert_eq!(a.cert_base64_der(), b.cert_base64_der());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&a.key_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let cert = X509::from_pem(&std::fs::read(&a.cert_path).unwrap()).unwrap();
        let days = Asn1Time::days_from_now(0)
            .unwrap()
            .diff(cert.not_after())
            .unwrap()
            .days;
        assert!((3649..=3650).contains(&days), "{days}");
        // Nothing with a .pem extension directly in keys/ (the JWT key loader reads those).
        assert!(
            std::fs::read_dir(dir.path())
                .unwrap()
                .all(|e| e.unwrap().path().extension().is_none())
        );
    }

    #[test]
    fn mismatched_cert_is_refused() {
        let r = SpKey::from_pem(
            include_bytes!("testdata/sp.key.pem"),
            include_bytes!("testdata/idp.crt.pem"),
            PathBuf::new(),
            PathBuf::new(),
        );
        assert!(r.is_err());
    }

    #[test]
    fn signature_verifies_with_the_certificate() {
        let k = test_sp_key();
        let sig = k.sign_rsa_sha256(b"data").unwrap();
        let pk = k.cert.public_key().unwrap();
        let mut v = openssl::sign::Verifier::new(MessageDigest::sha256(), &pk).unwrap();
        v.update(b"data").unwrap();
        assert!(v.verify(&sig).unwrap());
    }
}
