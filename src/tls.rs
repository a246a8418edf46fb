//! TLS on the client port (`tls-port`) and between nodes (`tls-cluster`), with rustls.
//!
//! [`Tls`] holds the node's current TLS configurations: the client port's acceptor, and for
//! `tls-cluster` the cluster port's acceptor and the dialer's connector. [`Tls::configure`]
//! builds all of them from the settings and swaps them in together, or changes nothing and says
//! why. It runs at start (a failure stops the start), on `CONFIG SET tls-*` (a failure is the
//! command's error, as Redis's "Unable to update TLS configuration") and on SIGHUP. A new
//! configuration applies to connections accepted or dialed after it; open ones keep theirs.
//!
//! - **Client port:** the node's certificate (`tls-cert-file`, `tls-key-file`); client
//!   certificates per `tls-auth-clients`, checked against `tls-ca-cert-file`/`-dir`.
//! - **Between nodes:** mutual TLS. Both sides present a certificate that must chain to the CA;
//!   the dialer presents `tls-client-cert-file` (else `tls-cert-file`). As Redis does for its
//!   cluster bus, the dialer does not check the peer's certificate against the address it
//!   dialed: peers are often reached by IP, and membership is proven by the CA (and by
//!   `cluster-secret` inside the link).
//! - **Versions and ciphers:** `tls-protocols` (TLS 1.2 and 1.3: rustls has nothing older),
//!   `tls-ciphersuites` (TLS 1.3) and `tls-ciphers` (TLS 1.2), by their OpenSSL names.
//!
//! Departures from Redis: no CA is needed when nothing is to be verified (`tls-auth-clients no`
//! without `tls-cluster`); `tls-ciphers` takes a list of names (or `DEFAULT`), not OpenSSL's
//! cipher-string language; encrypted keys (`tls-key-file-pass`) and DH parameters are not
//! supported (rustls offers only ECDHE key exchange).

use std::path::Path;
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{NoServerSessionStorage, ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{
    CipherSuite, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    SupportedCipherSuite, SupportedProtocolVersion,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{Config, TlsAuthClients};

/// OpenSSL's names of the suites rustls implements, and rustls's identifiers.
const SUITES: &[(&str, CipherSuite)] = &[
    (
        "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_128_GCM_SHA256,
    ),
    (
        "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_AES_256_GCM_SHA384,
    ),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// The node's TLS configurations (each `None` while not wanted).
#[derive(Default)]
pub struct Tls {
    current: RwLock<Configs>,
}

#[derive(Default, Clone)]
struct Configs {
    client_port: Option<Arc<ServerConfig>>,
    cluster_accept: Option<Arc<ServerConfig>>,
    cluster_dial: Option<Arc<ClientConfig>>,
}

/// Whether these settings use TLS anywhere (then the certificate settings must load).
pub fn wanted(c: &Config) -> bool {
    c.tls_port != 0 || c.tls_cluster
}

impl Tls {
    /// Builds every configuration `c` needs and swaps them in together; on an error nothing
    /// changes and the text says which setting or file is wrong (it names files, never their
    /// contents).
    pub fn configure(&self, c: &Config) -> Result<(), String> {
        let next = build(c)?;
        *self.current.write() = next;
        Ok(())
    }

    /// The client port's acceptor (`None`: no `tls-port`).
    pub fn acceptor(&self) -> Option<TlsAcceptor> {
        self.current
            .read()
            .client_port
            .clone()
            .map(TlsAcceptor::from)
    }

    /// The cluster port's acceptor (`None`: no `tls-cluster`).
    pub fn cluster_acceptor(&self) -> Option<TlsAcceptor> {
        self.current
            .read()
            .cluster_accept
            .clone()
            .map(TlsAcceptor::from)
    }

    /// The connector for dialing peers (`None`: no `tls-cluster`).
    pub fn cluster_connector(&self) -> Option<TlsConnector> {
        self.current
            .read()
            .cluster_dial
            .clone()
            .map(TlsConnector::from)
    }
}

fn build(c: &Config) -> Result<Configs, String> {
    if !wanted(c) {
        return Ok(Configs::default());
    }
    let provider = Arc::new(provider(c)?);
    let versions = versions(&c.tls_protocols)?;
    // The suites left must include one of each version allowed, or no handshake could succeed.
    for v in &versions {
        if !provider.cipher_suites.iter().any(|s| s.version() == *v) {
            return Err(format!(
                "no cipher of {:?} is left by tls-ciphersuites/tls-ciphers",
                v.version
            ));
        }
    }
    let chain = certs(&c.tls_cert_file, "tls-cert-file")?;
    let key = key(&c.tls_key_file, "tls-key-file")?;
    let need_ca = c.tls_cluster || c.tls_auth_clients != TlsAuthClients::No;
    let roots = if need_ca {
        Some(Arc::new(roots(c)?))
    } else {
        None
    };
    let mut out = Configs::default();
    if c.tls_port != 0 {
        let verifier = match (c.tls_auth_clients, &roots) {
            (TlsAuthClients::No, _) | (_, None) => WebPkiClientVerifier::no_client_auth(),
            (TlsAuthClients::Optional, Some(r)) => {
                WebPkiClientVerifier::builder_with_provider(r.clone(), provider.clone())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| format!("tls-ca-cert-file: {e}"))?
            }
            (TlsAuthClients::Yes, Some(r)) => {
                WebPkiClientVerifier::builder_with_provider(r.clone(), provider.clone())
                    .build()
                    .map_err(|e| format!("tls-ca-cert-file: {e}"))?
            }
        };
        out.client_port = Some(server_config(
            c, &provider, &versions, verifier, &chain, &key,
        )?);
    }
    if c.tls_cluster {
        let roots = roots.expect("tls-cluster needs the CA");
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| format!("tls-ca-cert-file: {e}"))?;
        out.cluster_accept = Some(server_config(
            c, &provider, &versions, verifier, &chain, &key,
        )?);
        let (dial_chain, dial_key) = if c.tls_client_cert_file.is_empty() {
            (chain, key)
        } else {
            (
                certs(&c.tls_client_cert_file, "tls-client-cert-file")?,
                self::key(&c.tls_client_key_file, "tls-client-key-file")?,
            )
        };
        let inner =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| format!("tls-ca-cert-file: {e}"))?;
        let cc = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| format!("tls-protocols: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PeerVerifier(inner)))
            .with_client_auth_cert(dial_chain, dial_key)
            .map_err(|e| format!("tls-client-cert-file/tls-client-key-file: {e}"))?;
        out.cluster_dial = Some(Arc::new(cc));
    }
    Ok(out)
}

/// An acceptor's configuration: the node's certificate, client certificates checked by
/// `verifier`, and session resumption per the settings.
fn server_config(
    c: &Config,
    provider: &Arc<CryptoProvider>,
    versions: &[&'static SupportedProtocolVersion],
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, String> {
    let mut sc = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls-protocols: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.to_vec(), key.clone_key())
        .map_err(|e| format!("tls-cert-file/tls-key-file: {e}"))?;
    sessions(c, &mut sc)?;
    Ok(Arc::new(sc))
}

/// Session resumption per `tls-session-caching` and `tls-session-cache-size`.
fn sessions(c: &Config, sc: &mut ServerConfig) -> Result<(), String> {
    sc.ignore_client_order = c.tls_prefer_server_ciphers;
    if c.tls_session_caching && c.tls_session_cache_size > 0 {
        sc.session_storage = ServerSessionMemoryCache::new(c.tls_session_cache_size as usize);
        sc.ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| format!("tls-session-caching: {e}"))?;
    } else {
        sc.session_storage = Arc::new(NoServerSessionStorage {});
        sc.send_tls13_tickets = 0;
    }
    Ok(())
}

/// The ring provider, its suites narrowed by `tls-ciphersuites` (TLS 1.3) and `tls-ciphers`
/// (TLS 1.2).
fn provider(c: &Config) -> Result<CryptoProvider, String> {
    let mut p = rustls::crypto::ring::default_provider();
    let keep13 = suite_list(&c.tls_ciphersuites, "tls-ciphersuites", true)?;
    let keep12 = suite_list(&c.tls_ciphers, "tls-ciphers", false)?;
    p.cipher_suites.retain(|s| {
        let keep = match s {
            SupportedCipherSuite::Tls13(_) => &keep13,
            SupportedCipherSuite::Tls12(_) => &keep12,
        };
        keep.as_ref().is_none_or(|k| k.contains(&s.suite()))
    });
    Ok(p)
}

/// The suites a colon-separated list names (`None`: all). Unknown names are skipped, as
/// OpenSSL skips them; a list that names none of ours is an error.
fn suite_list(list: &str, setting: &str, tls13: bool) -> Result<Option<Vec<CipherSuite>>, String> {
    let list = list.trim();
    if list.is_empty() || list.eq_ignore_ascii_case("DEFAULT") {
        return Ok(None);
    }
    let kept: Vec<CipherSuite> = list
        .split([':', ',', ' '])
        .filter_map(|name| SUITES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s))
        .filter(|s| format!("{s:?}").starts_with("TLS13_") == tls13)
        .collect();
    if kept.is_empty() {
        let known: Vec<&str> = SUITES
            .iter()
            .filter(|(_, s)| format!("{s:?}").starts_with("TLS13_") == tls13)
            .map(|(n, _)| *n)
            .collect();
        return Err(format!(
            "{setting} names no supported cipher (supported: {})",
            known.join(":")
        ));
    }
    Ok(Some(kept))
}

/// The versions `tls-protocols` allows (empty: TLS 1.2 and 1.3).
fn versions(list: &str) -> Result<Vec<&'static SupportedProtocolVersion>, String> {
    if list.trim().is_empty() {
        return Ok(vec![&rustls::version::TLS13, &rustls::version::TLS12]);
    }
    let mut out = Vec::new();
    for word in list.split_whitespace() {
        match word.to_ascii_lowercase().as_str() {
            "tlsv1.3" => out.push(&rustls::version::TLS13),
            "tlsv1.2" => out.push(&rustls::version::TLS12),
            "tlsv1" | "tlsv1.1" => {
                return Err(format!(
                    "tls-protocols: {word} is not supported (TLSv1.2 and TLSv1.3 are)"
                ))
            }
            _ => return Err(format!("tls-protocols: unknown protocol {word}")),
        }
    }
    Ok(out)
}

fn certs(path: &str, setting: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    if path.is_empty() {
        return Err(format!("{setting} is not set"));
    }
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{setting} {path}: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{setting} {path}: no certificate in the file"));
    }
    Ok(chain)
}

fn key(path: &str, setting: &str) -> Result<PrivateKeyDer<'static>, String> {
    if path.is_empty() {
        return Err(format!("{setting} is not set"));
    }
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{setting} {path}: {e}"))
}

/// The CA certificates of `tls-ca-cert-file` and every file of `tls-ca-cert-dir`.
fn roots(c: &Config) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let mut add = |path: &Path, setting: &str| -> Result<(), String> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{setting} {}: {e}", path.display()))?;
        for cert in certs {
            store
                .add(cert)
                .map_err(|e| format!("{setting} {}: {e}", path.display()))?;
        }
        Ok(())
    };
    if !c.tls_ca_cert_file.is_empty() {
        add(Path::new(&c.tls_ca_cert_file), "tls-ca-cert-file")?;
    }
    if !c.tls_ca_cert_dir.is_empty() {
        let dir = std::fs::read_dir(&c.tls_ca_cert_dir)
            .map_err(|e| format!("tls-ca-cert-dir {}: {e}", c.tls_ca_cert_dir))?;
        for entry in dir.flatten() {
            let path = entry.path();
            if path.is_file() {
                // A file that is not PEM (an index, a README) holds no certificate: skipped.
                let _ = add(&path, "tls-ca-cert-dir");
            }
        }
    }
    if store.is_empty() {
        return Err(
            "either tls-ca-cert-file or tls-ca-cert-dir must name CA certificates \
             (needed by tls-auth-clients yes/optional and by tls-cluster)"
                .into(),
        );
    }
    Ok(store)
}

/// Checks a peer's certificate chain against the CA, not against the name it was dialed by.
#[derive(Debug)]
struct PeerVerifier(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The name a dialer puts in its TLS hello for `addr` (`host:port`): the host, as an IP
/// address or a DNS name.
pub fn server_name(addr: &str) -> ServerName<'static> {
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::try_from("hypercache-peer").expect("a valid DNS name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_lists_take_openssl_names_and_refuse_lists_of_nothing_known() {
        assert_eq!(suite_list("", "x", true), Ok(None));
        assert_eq!(suite_list("DEFAULT", "x", false), Ok(None));
        assert_eq!(
            suite_list("TLS_AES_256_GCM_SHA384:NOPE", "tls-ciphersuites", true),
            Ok(Some(vec![CipherSuite::TLS13_AES_256_GCM_SHA384]))
        );
        // A TLS 1.2 name in the TLS 1.3 list does not count.
        assert!(suite_list("ECDHE-RSA-AES128-GCM-SHA256", "tls-ciphersuites", true).is_err());
        assert_eq!(
            suite_list("ECDHE-RSA-AES128-GCM-SHA256", "tls-ciphers", false),
            Ok(Some(vec![
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            ]))
        );
    }

    #[test]
    fn protocols_are_tls12_and_tls13_only() {
        assert_eq!(versions("").unwrap().len(), 2);
        assert_eq!(
            versions("TLSv1.3").unwrap()[0].version,
            rustls::ProtocolVersion::TLSv1_3
        );
        assert!(versions("TLSv1.1 TLSv1.2")
            .unwrap_err()
            .contains("not supported"));
        assert!(versions("SSLv3").is_err());
    }

    #[test]
    fn a_missing_file_names_the_setting_and_changes_nothing() {
        let tls = Tls::default();
        let c = Config {
            tls_port: 6380,
            tls_cert_file: "/nonexistent/cert.pem".into(),
            tls_key_file: "/nonexistent/key.pem".into(),
            tls_auth_clients: TlsAuthClients::No,
            ..Config::default()
        };
        let e = tls.configure(&c).unwrap_err();
        assert!(e.starts_with("tls-cert-file /nonexistent/cert.pem"), "{e}");
        assert!(tls.acceptor().is_none());
    }

    #[test]
    fn dialers_name_peers_by_host() {
        assert_eq!(
            format!("{:?}", server_name("127.0.0.2:16379")),
            format!("{:?}", ServerName::try_from("127.0.0.2").unwrap())
        );
        assert_eq!(
            format!("{:?}", server_name("node-a.example:16379")),
            format!("{:?}", ServerName::try_from("node-a.example").unwrap())
        );
    }
}
