//! Certificates for the TLS tests, made at test time with rcgen (no key material in the
//! repository), in a directory of the test's own that is removed when it ends.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

/// A directory of certificates, removed on drop.
pub(crate) struct Pki {
    pub(crate) dir: PathBuf,
}

/// A certificate authority that issues certificates into a [`Pki`] directory.
pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub(crate) fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("hc-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Pki { dir }
    }

    pub(crate) fn path(&self, file: &str) -> String {
        self.dir.join(file).to_string_lossy().into_owned()
    }

    /// A new CA; its certificate goes to `<name>.pem`.
    pub(crate) fn ca(&self, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("HyperCache test {name}"));
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(self.dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Ca {
    /// A certificate for 127.0.0.1 and localhost, good for servers and clients, written to
    /// `<name>.pem` and `<name>.key` in `pki`.
    pub(crate) fn issue(&self, pki: &Pki, name: &str) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(pki.dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(pki.dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}
