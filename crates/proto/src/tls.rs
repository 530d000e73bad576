//! Encryption in transit: TLS 1.3 (rustls) under a certificate authority that belongs to the
//! cluster.
//!
//! The authority's signing key is derived from the cluster key, so every member (master,
//! chunkservers, metaloggers, and a metalogger promoted to master) is the same authority
//! without another secret to copy, and issues itself a fresh certificate at start. A mount does
//! not hold the cluster key: it trusts the authority's certificate (`ca.crt`, which the master
//! writes next to `cluster.key`) and checks that the master's and the chunkservers'
//! certificates chain to it and name the role it expects.
//!
//! Clients prove who they are inside the encrypted channel, as without TLS: mounts with the
//! export's password, members with the cluster key.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ED25519,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::cluster_key::ClusterKey;

/// The authority's certificate in a master's data directory, for mounts to copy.
pub const CA_FILE: &str = "ca.crt";

/// What derives the authority's Ed25519 key from the cluster key (BLAKE3 key derivation).
const AUTHORITY_CONTEXT: &str = "elkfs 2026-12-05 cluster certificate authority";

/// The start of an Ed25519 private key in PKCS#8 v1 form (RFC 8410); the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Making a certificate or key failed.
    #[error("cannot make the cluster's TLS certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("cannot set up TLS: {0}")]
    Config(#[from] rustls::Error),
    /// The authority's certificate file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no usable certificate.
    #[error(
        "{path}: not the cluster's certificate ({reason}); copy {CA_FILE} from the master's data directory"
    )]
    NotACertificate {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Which kind of server a certificate is for. Clients check it, so a certificate issued for a
/// chunkserver's data port is not taken for the master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerRole {
    /// The master's port (clients, chunkservers, metaloggers).
    Master,
    /// A chunkserver's data port (clients and other chunkservers).
    Chunkserver,
}

impl ServerRole {
    /// The DNS name in the certificate (not looked up: it names the role, not a host).
    fn certificate_name(self) -> &'static str {
        match self {
            ServerRole::Master => "master.elkfs",
            ServerRole::Chunkserver => "chunkserver.elkfs",
        }
    }
}

/// The cluster's certificate authority with its signing key: only members hold it.
pub struct ClusterAuthority {
    key: KeyPair,
    certificate: rcgen::Certificate,
}

impl ClusterAuthority {
    /// The authority of the cluster whose key is `cluster`; the same key always gives the same
    /// authority.
    pub fn from_cluster_key(cluster: &ClusterKey) -> Result<ClusterAuthority, TlsError> {
        let seed = blake3::derive_key(AUTHORITY_CONTEXT, cluster.as_bytes());
        let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
        pkcs8.extend_from_slice(&seed);
        let key = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
            &PKCS_ED25519,
        )?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "ElkFS cluster authority");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let certificate = params.self_signed(&key)?;
        Ok(ClusterAuthority { key, certificate })
    }

    /// What a client needs to check this cluster's servers.
    pub fn trust(&self) -> ClusterTrust {
        ClusterTrust {
            authority: self.certificate.der().clone(),
        }
    }

    /// Writes the authority's certificate (public) to `dir`/[`CA_FILE`] unless it is there
    /// already, and returns its path.
    pub fn write_certificate(&self, dir: &Path) -> Result<PathBuf, TlsError> {
        let path = dir.join(CA_FILE);
        let pem = self.certificate.pem();
        let file_error = |source| TlsError::File {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(existing) if existing == pem => return Ok(path),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(file_error(e)),
        }
        let partial = dir.join(format!("{CA_FILE}.partial"));
        std::fs::write(&partial, &pem).map_err(file_error)?;
        std::fs::rename(&partial, &path).map_err(file_error)?;
        Ok(path)
    }

    /// A server configuration with a fresh key and a certificate for `role` signed by this
    /// authority.
    pub fn server(&self, role: ServerRole) -> Result<TlsServer, TlsError> {
        let key = KeyPair::generate_for(&PKCS_ED25519)?;
        let mut params = CertificateParams::new(vec![role.certificate_name().to_string()])?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, role.certificate_name());
        params.use_authority_key_identifier_extension = true;
        let certificate = params.signed_by(&key, &self.certificate, &self.key)?;
        let chain = vec![certificate.der().clone(), self.certificate.der().clone()];
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(chain, private)?;
        Ok(TlsServer {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// The authority's certificate: lets a client check the cluster's servers.
#[derive(Clone, Debug)]
pub struct ClusterTrust {
    authority: CertificateDer<'static>,
}

impl ClusterTrust {
    /// Reads the authority's certificate (PEM, as the master writes it to [`CA_FILE`]).
    pub fn from_pem_file(path: &Path) -> Result<ClusterTrust, TlsError> {
        let text = std::fs::read(path).map_err(|source| TlsError::File {
            path: path.to_path_buf(),
            source,
        })?;
        let authority =
            CertificateDer::from_pem_slice(&text).map_err(|e| TlsError::NotACertificate {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let trust = ClusterTrust { authority };
        trust.roots().map_err(|e| TlsError::NotACertificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(trust)
    }

    /// A client configuration that accepts only servers of `role` certified by this authority.
    pub fn client(&self, role: ServerRole) -> Result<TlsClient, TlsError> {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_no_client_auth();
        let name = ServerName::try_from(role.certificate_name())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    fn roots(&self) -> Result<rustls::RootCertStore, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.authority.clone())?;
        Ok(roots)
    }
}

/// What a client connects with: the trusted authority and the role of the server it expects.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsClient({:?})", self.name)
    }
}

impl TlsClient {
    /// Runs the TLS handshake on a connected socket.
    pub async fn handshake(
        &self,
        stream: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        self.connector.connect(self.name.clone(), stream).await
    }
}

/// What a server accepts TLS connections with: its certificate and key.
#[derive(Clone)]
pub struct TlsServer {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsServer")
    }
}

impl TlsServer {
    /// Runs the TLS handshake on an accepted socket.
    pub async fn handshake(
        &self,
        stream: TcpStream,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        self.acceptor.accept(stream).await
    }
}

/// Whether the first bytes a peer sent start a TLS handshake record (content type 22, version
/// 3.x). An ElkFS hello frame cannot start this way: its header length is at most 4 KiB, so its
/// third byte is 0.
pub fn starts_tls_handshake(first: &[u8]) -> bool {
    matches!(first, [0x16, 0x03, 0x01..=0x04, ..])
}

/// The *ring* provider: it builds with a C compiler alone, where aws-lc needs more tools. rustls
/// deprecated it for lacking post-quantum key exchange (X25519 is used instead); see
/// docs/SECURITY.md.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn key(byte: u8) -> ClusterKey {
        ClusterKey::from_bytes([byte; 32])
    }

    async fn talk(
        server: TlsServer,
        client: TlsClient,
    ) -> (std::io::Result<Vec<u8>>, std::io::Result<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut tls = server.handshake(stream).await?;
            let mut got = vec![0u8; 5];
            tls.read_exact(&mut got).await?;
            Ok::<_, std::io::Error>(got)
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let sent = async {
            let mut tls = client.handshake(stream).await?;
            tls.write_all(b"hello").await?;
            tls.flush().await
        }
        .await;
        (serving.await.unwrap(), sent)
    }

    #[tokio::test]
    async fn a_client_trusting_the_authority_talks_to_its_servers() {
        let authority = ClusterAuthority::from_cluster_key(&key(1)).unwrap();
        let server = authority.server(ServerRole::Master).unwrap();
        let client = authority.trust().client(ServerRole::Master).unwrap();
        let (got, sent) = talk(server, client).await;
        sent.unwrap();
        assert_eq!(got.unwrap(), b"hello");
    }

    #[tokio::test]
    async fn the_same_cluster_key_gives_the_same_authority() {
        let dir = tempfile::tempdir().unwrap();
        let written = ClusterAuthority::from_cluster_key(&key(2))
            .unwrap()
            .write_certificate(dir.path())
            .unwrap();
        let trust = ClusterTrust::from_pem_file(&written).unwrap();
        let server = ClusterAuthority::from_cluster_key(&key(2))
            .unwrap()
            .server(ServerRole::Chunkserver)
            .unwrap();
        let (got, sent) = talk(server, trust.client(ServerRole::Chunkserver).unwrap()).await;
        sent.unwrap();
        assert_eq!(got.unwrap(), b"hello");
    }

    #[tokio::test]
    async fn another_clusters_server_or_another_role_is_refused() {
        let ours = ClusterAuthority::from_cluster_key(&key(3)).unwrap();
        let theirs = ClusterAuthority::from_cluster_key(&key(4)).unwrap();
        let client = ours.trust().client(ServerRole::Master).unwrap();
        let (_, sent) = talk(theirs.server(ServerRole::Master).unwrap(), client.clone()).await;
        let error = sent.expect_err("a server of another cluster was trusted");
        assert!(error.to_string().contains("certificate"), "{error}");
        let (_, sent) = talk(ours.server(ServerRole::Chunkserver).unwrap(), client).await;
        let error = sent.expect_err("a chunkserver was taken for the master");
        assert!(error.to_string().contains("certificate"), "{error}");
    }

    #[test]
    fn a_file_that_is_not_a_certificate_is_refused_with_what_to_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, "not a certificate").unwrap();
        let error = ClusterTrust::from_pem_file(&path).unwrap_err().to_string();
        assert!(error.contains("copy ca.crt"), "{error}");
        let missing = ClusterTrust::from_pem_file(&dir.path().join("none")).unwrap_err();
        assert!(matches!(missing, TlsError::File { .. }), "{missing}");
    }

    #[test]
    fn tls_records_and_hello_frames_are_told_apart() {
        assert!(starts_tls_handshake(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(!starts_tls_handshake(&[0x16, 0x00, 0x00, 0x00]));
        assert!(!starts_tls_handshake(&[0x16]));
    }
}
