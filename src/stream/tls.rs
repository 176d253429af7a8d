//! TLS over a connection's socket, with rustls: the certificates a server
//! presents (replaceable while it runs), the handshake, run on a worker
//! under its own deadline, and the session every later read and write
//! goes through.
//!
//! The session never waits: it reads records the socket already has and
//! writes records the socket takes now, like the plain transport, so both
//! modes wait for a TLS connection exactly as for a plain one.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{CipherSuite, ProtocolVersion, RootCertStore, ServerConnection};

use crate::error::{Error, Result};
use crate::net::socket::Socket;
use crate::stream::wait::{self, Interest, Stopping, Woken};
use crate::sync::lock;

/// The certificate chain and key a TLS server presents, and the rest of
/// its TLS settings: a shared, replaceable [`rustls::ServerConfig`].
///
/// Clones share the settings: keep one to replace the certificates while
/// the server runs ([`reload_pem_files`](TlsConfig::reload_pem_files)),
/// for example when a renewed certificate is written. Connections that
/// begin after the change use the new settings; connections already open
/// keep theirs.
///
/// The settings [`from_pem_files`](TlsConfig::from_pem_files) makes are
/// rustls' safe defaults (TLS 1.2 and 1.3, the `ring` provider, no client
/// certificates, no ALPN). [`builder`](TlsConfig::builder) adds client
/// certificates verified against a CA bundle, optional or required, and
/// the ALPN protocols to offer; for anything else, build a `ServerConfig`
/// and pass it to [`new`](TlsConfig::new). A handler sees what the
/// handshake settled in [`TlsInfo`].
///
/// # Examples
///
/// ```no_run
/// use frontdesk::{Server, TlsConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tls = TlsConfig::from_pem_files("/etc/app/cert.pem", "/etc/app/key.pem")?;
/// let server = Server::builder().tls(tls.clone()).bind("0.0.0.0:7878")?;
/// // Later, after the certificate was renewed:
/// tls.reload_pem_files("/etc/app/cert.pem", "/etc/app/key.pem")?;
/// # let _ = server;
/// # Ok(()) }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
#[derive(Clone)]
pub struct TlsConfig {
    current: Arc<Mutex<Arc<rustls::ServerConfig>>>,
}

impl TlsConfig {
    /// Settings made by the caller: a certificate resolver, another
    /// crypto provider, a client certificate verifier of its own.
    ///
    /// # Examples
    ///
    /// With ALPN, using the rustls this crate re-exports (the
    /// [`builder`](TlsConfig::builder) does this too):
    ///
    /// ```no_run
    /// use std::sync::Arc;
    ///
    /// use frontdesk::rustls::pki_types::pem::PemObject;
    /// use frontdesk::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    /// use frontdesk::{rustls, TlsConfig};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let certs = CertificateDer::pem_file_iter("cert.pem")?.collect::<Result<Vec<_>, _>>()?;
    /// let key = PrivateKeyDer::from_pem_file("key.pem")?;
    /// // Name the provider: `ServerConfig::builder()` panics when the
    /// // build has two (rustls' default features add aws-lc-rs to ring).
    /// let provider = Arc::new(rustls::crypto::ring::default_provider());
    /// let mut config = rustls::ServerConfig::builder_with_provider(provider)
    ///     .with_safe_default_protocol_versions()?
    ///     .with_no_client_auth()
    ///     .with_single_cert(certs, key)?;
    /// config.alpn_protocols = vec![b"lobby/1".to_vec()];
    /// let tls = TlsConfig::new(Arc::new(config));
    /// # let _ = tls;
    /// # Ok(()) }
    /// ```
    pub fn new(config: Arc<rustls::ServerConfig>) -> TlsConfig {
        TlsConfig {
            current: Arc::new(Mutex::new(config)),
        }
    }

    /// Reads a certificate chain (the server's certificate first, then
    /// the intermediates) and its private key from PEM files.
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] naming the file when it cannot be read, holds no
    /// certificate or no key, or when the key does not match the
    /// certificate.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsConfig> {
        TlsConfig::builder(cert_chain, key).build()
    }

    /// Settings beyond [`from_pem_files`](TlsConfig::from_pem_files)'s:
    /// client certificates and ALPN. The files are read by
    /// [`build`](TlsConfigBuilder::build).
    ///
    /// # Examples
    ///
    /// Clients must present a certificate that `clients-ca.pem` signed;
    /// the server speaks `h2` or `http/1.1`, as the client prefers:
    ///
    /// ```no_run
    /// use frontdesk::TlsConfig;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let tls = TlsConfig::builder("cert.pem", "key.pem")
    ///     .client_ca_pem_file("clients-ca.pem")
    ///     .require_client_cert(true)
    ///     .alpn([&b"h2"[..], b"http/1.1"])
    ///     .build()?;
    /// # let _ = tls;
    /// # Ok(()) }
    /// ```
    pub fn builder(cert_chain: impl AsRef<Path>, key: impl AsRef<Path>) -> TlsConfigBuilder {
        TlsConfigBuilder {
            cert_chain: cert_chain.as_ref().to_path_buf(),
            key: key.as_ref().to_path_buf(),
            client_ca: None,
            require_client_cert: None,
            alpn: Vec::new(),
        }
    }

    /// Reads the files again and uses them for every connection that
    /// begins from now on. Only the certificate and key change: every
    /// other setting of the current configuration stays, the client
    /// certificate verification and the ALPN protocols included (with
    /// [`new`](TlsConfig::new), whatever the caller set). On an error
    /// nothing changes.
    ///
    /// # Errors
    ///
    /// As [`from_pem_files`](TlsConfig::from_pem_files).
    pub fn reload_pem_files(
        &self,
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<()> {
        let current = self.current();
        let resolver = load_cert(cert_chain.as_ref(), key.as_ref(), current.crypto_provider())?;
        let mut next = (*current).clone();
        next.cert_resolver = resolver;
        self.replace(Arc::new(next));
        Ok(())
    }

    /// Uses `config` for every connection that begins from now on.
    pub fn replace(&self, config: Arc<rustls::ServerConfig>) {
        *lock(&self.current) = config;
    }

    /// The settings new connections get now.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&lock(&self.current))
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = self.current();
        f.debug_struct("TlsConfig")
            .field("alpn_protocols", &config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

/// A [`TlsConfig`] to be: the server's PEM files, and client certificates
/// and ALPN if wanted. Made by [`TlsConfig::builder`]; nothing is read
/// until [`build`](TlsConfigBuilder::build).
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
#[must_use = "a builder does nothing until `build` is called"]
#[derive(Debug, Clone)]
pub struct TlsConfigBuilder {
    cert_chain: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    /// `None`: the default, required once a CA bundle is given.
    require_client_cert: Option<bool>,
    alpn: Vec<Vec<u8>>,
}

impl TlsConfigBuilder {
    /// Asks every client for a certificate and verifies the one it
    /// presents against the CA certificates in this PEM file (one or
    /// more `CERTIFICATE` items): the chain must lead to one of them, be
    /// valid now and be meant for client authentication. A client whose
    /// certificate fails is refused in the handshake, counted in
    /// [`RejectedStats::tls`](crate::RejectedStats::tls). The handler
    /// finds the verified chain in [`TlsInfo::peer_certificates`].
    ///
    /// By default no certificate is asked for. With a CA bundle, a client
    /// must present one unless
    /// [`require_client_cert(false)`](TlsConfigBuilder::require_client_cert).
    pub fn client_ca_pem_file(mut self, path: impl AsRef<Path>) -> Self {
        self.client_ca = Some(path.as_ref().to_path_buf());
        self
    }

    /// Whether a client without a certificate is refused (`true`) or let
    /// in with an empty [`TlsInfo::peer_certificates`] (`false`). A
    /// certificate presented is verified either way, and one that fails
    /// is refused.
    ///
    /// Defaults to `true` once a CA bundle is given
    /// ([`client_ca_pem_file`](TlsConfigBuilder::client_ca_pem_file)),
    /// which this setting needs.
    pub fn require_client_cert(mut self, yes: bool) -> Self {
        self.require_client_cert = Some(yes);
        self
    }

    /// The application protocols the server speaks, for ALPN (RFC 7301),
    /// most preferred first: the first one of this list that the client
    /// also offers is chosen. A client that offers protocols, none of
    /// them here, is refused in the handshake (`no_application_protocol`);
    /// one that offers none is let in, with no protocol. The handler finds
    /// the protocol chosen in [`TlsInfo::alpn_protocol`].
    ///
    /// Defaults to none: no ALPN.
    pub fn alpn<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        self.alpn = protocols
            .into_iter()
            .map(|protocol| protocol.as_ref().to_vec())
            .collect();
        self
    }

    /// Reads the files and makes the settings.
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] naming the file when the certificate chain, the key
    /// or the CA bundle cannot be read, hold nothing of their kind or
    /// something that is not a valid certificate, or when the key does
    /// not match the certificate; [`Error::Config`] when
    /// [`require_client_cert`](TlsConfigBuilder::require_client_cert) is
    /// set without a CA bundle, or an ALPN protocol is empty or longer
    /// than 255 bytes.
    pub fn build(self) -> Result<TlsConfig> {
        let TlsConfigBuilder {
            cert_chain,
            key,
            client_ca,
            require_client_cert,
            alpn,
        } = self;
        if alpn
            .iter()
            .any(|protocol| protocol.is_empty() || protocol.len() > 255)
        {
            return Err(Error::Config(
                "an ALPN protocol name must be 1 to 255 bytes long",
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|error| tls_error(&cert_chain, error.to_string()))?;
        let builder = match (client_ca, require_client_cert) {
            (None, None) => builder.with_no_client_auth(),
            (None, Some(_)) => {
                return Err(Error::Config(
                    "`require_client_cert` needs `client_ca_pem_file`",
                ))
            }
            (Some(ca), required) => {
                let verifier = client_verifier(&ca, required.unwrap_or(true), &provider)?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let resolver = load_cert(&cert_chain, &key, &provider)?;
        let mut config = builder.with_cert_resolver(resolver);
        config.alpn_protocols = alpn;
        Ok(TlsConfig::new(Arc::new(config)))
    }
}

fn tls_error(path: &Path, reason: String) -> Error {
    Error::Tls {
        path: path.to_path_buf(),
        reason,
    }
}

/// The server's certificate chain and key, checked against each other.
fn load_cert(
    cert_chain: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<dyn ResolvesServerCert>> {
    let certs = read_certs(cert_chain)?;
    let private_key =
        PrivateKeyDer::from_pem_file(key).map_err(|error| tls_error(key, pem_error(error)))?;
    let certified = CertifiedKey::from_der(certs, private_key, provider).map_err(|error| {
        tls_error(
            key,
            format!("the key does not fit the certificate: {error}"),
        )
    })?;
    Ok(Arc::new(SingleCertAndKey::from(certified)))
}

/// Every certificate of a PEM file; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|error| tls_error(path, pem_error(error)))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no certificate in the file".into()));
    }
    Ok(certs)
}

/// Verifies client certificates against the CA certificates in `ca`;
/// `required`: a client without one is refused.
fn client_verifier(
    ca: &Path,
    required: bool,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    for (index, cert) in read_certs(ca)?.into_iter().enumerate() {
        roots.add(cert).map_err(|error| {
            tls_error(
                ca,
                format!(
                    "certificate {} is not a usable CA certificate: {error}",
                    index + 1
                ),
            )
        })?;
    }
    let builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
    let builder = match required {
        true => builder,
        false => builder.allow_unauthenticated(),
    };
    builder
        .build()
        .map_err(|error| tls_error(ca, format!("cannot verify clients with it: {error}")))
}

fn pem_error(error: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as Pem;
    match error {
        Pem::Io(error) => error.to_string(),
        Pem::NoItemsFound => "no PEM item of the expected kind in the file (certificates: \
             CERTIFICATE; keys: PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY, not encrypted)"
            .into(),
        other => format!("not valid PEM: {other:?}"),
    }
}

/// What a connection's TLS handshake settled: the name the client asked
/// for, the application protocol, the client's verified certificate
/// chain, the version and the cipher suite. Taken once, when the
/// handshake completes, before the handler first sees the connection, so
/// reading it costs no lock: see [`Connection::tls_info`](crate::Connection::tls_info),
/// [`Turn::tls_info`](crate::Turn::tls_info) and
/// [`Peer::tls_info`](crate::Peer::tls_info).
///
/// # Examples
///
/// A server that greets each client by its certificate's size and the
/// protocol it chose (the certificates are made with `rcgen`; a real
/// server reads PEM files):
///
/// ```
/// use std::io::{self, BufRead, BufReader, Write};
/// use std::net::TcpStream;
/// use std::sync::Arc;
///
/// use frontdesk::rustls::pki_types::{PrivateKeyDer, ServerName};
/// use frontdesk::{rustls, Connection, Server, TlsConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("frontdesk-doc-tlsinfo-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # let file = |name: &str, pem: String| -> std::io::Result<std::path::PathBuf> {
/// #     let path = dir.join(name);
/// #     std::fs::write(&path, pem)?;
/// #     Ok(path)
/// # };
/// # let ca_key = rcgen::KeyPair::generate()?;
/// # let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
/// # ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
/// # let ca = ca.self_signed(&ca_key)?;
/// # let server_key = rcgen::KeyPair::generate()?;
/// # let server_cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])?
/// #     .signed_by(&server_key, &ca, &ca_key)?;
/// # let client_key = rcgen::KeyPair::generate()?;
/// # let client_cert = rcgen::CertificateParams::new(vec!["client".to_string()])?
/// #     .signed_by(&client_key, &ca, &ca_key)?;
/// # let (cert_pem, key_pem) = (file("cert.pem", server_cert.pem())?, file("key.pem", server_key.serialize_pem())?);
/// # let ca_pem = file("ca.pem", ca.pem())?;
/// // The server: clients need a certificate from this CA, and may speak `greet/1`.
/// let tls = TlsConfig::builder(&cert_pem, &key_pem)
///     .client_ca_pem_file(&ca_pem)
///     .alpn([b"greet/1"])
///     .build()?;
/// let server = Server::builder().tls(tls).bind("127.0.0.1:0")?;
/// let handle = server.spawn(|conn: &mut Connection| -> io::Result<()> {
///     // Some on every TLS connection, from the first call on.
///     let tls = conn.tls_info().expect("a TLS connection");
///     let leaf = tls.peer_certificates().first().map_or(0, |cert| cert.len());
///     let protocol = String::from_utf8_lossy(tls.alpn_protocol().unwrap_or(b"none"));
///     let line = format!("hello {:?}: {leaf} bytes, {protocol}\n", tls.server_name());
///     conn.write_all(line.as_bytes())
/// })?;
///
/// // A client with its certificate, asking for `localhost` and `greet/1`.
/// # let mut roots = rustls::RootCertStore::empty();
/// # roots.add(ca.der().clone())?;
/// # let provider = Arc::new(rustls::crypto::ring::default_provider());
/// # let mut config = rustls::ClientConfig::builder_with_provider(provider)
/// #     .with_safe_default_protocol_versions()?
/// #     .with_root_certificates(roots)
/// #     .with_client_auth_cert(
/// #         vec![client_cert.der().clone()],
/// #         PrivateKeyDer::try_from(client_key.serialize_der())?,
/// #     )?;
/// # config.alpn_protocols = vec![b"greet/1".to_vec()];
/// # let session = rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost")?)?;
/// # let socket = TcpStream::connect(handle.local_addr())?;
/// # let mut client = BufReader::new(rustls::StreamOwned::new(session, socket));
/// let mut greeting = String::new();
/// client.read_line(&mut greeting)?;
/// let leaf = client_cert.der().len();
/// assert_eq!(greeting, format!("hello Some(\"localhost\"): {leaf} bytes, greet/1\n"));
/// handle.shutdown()?;
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
#[derive(Clone)]
pub struct TlsInfo {
    server_name: Option<Box<str>>,
    alpn_protocol: Option<Box<[u8]>>,
    peer_certificates: Box<[CertificateDer<'static>]>,
    protocol_version: Option<ProtocolVersion>,
    cipher_suite: Option<CipherSuite>,
}

impl TlsInfo {
    /// Takes what a completed handshake settled.
    fn of(conn: &ServerConnection) -> TlsInfo {
        TlsInfo {
            server_name: conn.server_name().map(Box::from),
            alpn_protocol: conn.alpn_protocol().map(Box::from),
            peer_certificates: conn.peer_certificates().unwrap_or_default().into(),
            protocol_version: conn.protocol_version(),
            cipher_suite: conn.negotiated_cipher_suite().map(|suite| suite.suite()),
        }
    }

    /// The host name the client asked for (SNI), if it sent one; a
    /// client that connects to an IP address sends none.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// The application protocol chosen by ALPN, if the server offers some
    /// ([`TlsConfigBuilder::alpn`]) and the client asked for one of them.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.alpn_protocol.as_deref()
    }

    /// The client's certificate chain, verified against the CA bundle
    /// ([`TlsConfigBuilder::client_ca_pem_file`]), as the client sent it:
    /// its own certificate first, then the intermediates it sent (some
    /// clients, `openssl s_client` among them, send the CA's too); empty
    /// when the client presented none (allowed by
    /// [`require_client_cert(false)`](TlsConfigBuilder::require_client_cert))
    /// or the server asks for none. Parse it with an X.509 crate to read
    /// names from it.
    pub fn peer_certificates(&self) -> &[CertificateDer<'static>] {
        &self.peer_certificates
    }

    /// The TLS version agreed on (`TLSv1_2` or `TLSv1_3`).
    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.protocol_version
    }

    /// The cipher suite agreed on.
    pub fn cipher_suite(&self) -> Option<CipherSuite> {
        self.cipher_suite
    }
}

impl fmt::Debug for TlsInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let TlsInfo {
            server_name,
            alpn_protocol,
            peer_certificates,
            protocol_version,
            cipher_suite,
        } = self;
        let alpn = alpn_protocol
            .as_deref()
            .map(|protocol| String::from_utf8_lossy(protocol));
        f.debug_struct("TlsInfo")
            .field("server_name", server_name)
            .field("alpn_protocol", &alpn)
            .field("peer_certificates", &peer_certificates.len())
            .field("protocol_version", protocol_version)
            .field("cipher_suite", cipher_suite)
            .finish()
    }
}

/// Runs the server's side of the handshake on `socket`, waiting for the
/// client as needed until `deadline`. Once the server is stopping,
/// a client quiet for the drain's quiet time is given up on (it has sent
/// no request to answer), as a quiet client's read ends then.
pub(crate) fn handshake(
    socket: &Socket,
    config: &TlsConfig,
    deadline: Instant,
    stop: &dyn Stopping,
) -> io::Result<Session> {
    let session = Session::start(config)?;
    while !session.advance(socket)? {
        let interest = match session.wants_write() {
            true => Interest::Write,
            false => Interest::Read,
        };
        wait_for(socket, interest, deadline, stop)?;
    }
    Ok(session)
}

/// Waits for the socket, until `deadline`, or while the server stops,
/// for the drain's quiet time at most.
fn wait_for(
    socket: &Socket,
    interest: Interest,
    deadline: Instant,
    stop: &dyn Stopping,
) -> io::Result<()> {
    let stopped = || {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the server stopped during the TLS handshake",
        )
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let draining = stop.is_stopping();
        let (signal, wait) = match draining {
            false => (stop.stop_signal(), left),
            true => (stop.force_signal(), left.min(stop.drain_quiet())),
        };
        match wait::wait(socket, interest, Some(signal), Some(wait))? {
            Woken::Ready => return Ok(()),
            // The stop: wait again, as the drain does.
            Woken::Signal if !draining => continue,
            Woken::Signal => return Err(stopped()),
            Woken::TimedOut if wait < left => return Err(stopped()),
            Woken::TimedOut => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no complete TLS handshake in time",
                ))
            }
        }
    }
}

/// Decrypts the records read; on a protocol error, sends the alert rustls
/// made (as far as the socket takes it now) and fails.
fn process(conn: &mut ServerConnection, io: &mut SocketIo<'_>) -> io::Result<()> {
    if let Err(error) = conn.process_new_packets() {
        let _ = conn.write_tls(io);
        return Err(io::Error::new(io::ErrorKind::InvalidData, error));
    }
    Ok(())
}

/// An established TLS session. Its reads and writes never wait.
pub(crate) struct Session {
    /// Locked per call: a turn-mode connection is read by its worker
    /// while a `Peer` on another thread may write to it.
    conn: Mutex<ServerConnection>,
    /// What the handshake settled, set once it completes.
    info: OnceLock<Arc<TlsInfo>>,
}

impl Session {
    /// A session whose handshake is still to run ([`advance`](Session::advance)).
    pub(crate) fn start(config: &TlsConfig) -> io::Result<Session> {
        let conn = ServerConnection::new(config.current()).map_err(io::Error::other)?;
        Ok(Session {
            conn: Mutex::new(conn),
            info: OnceLock::new(),
        })
    }

    /// What the handshake settled, once it is complete.
    pub(crate) fn info(&self) -> Option<&Arc<TlsInfo>> {
        self.info.get()
    }

    /// Runs the handshake as far as it goes without waiting: `Ok(true)`
    /// once it is complete (its last records may still wait for the
    /// socket, as any write's may), `Ok(false)` when it needs more from
    /// the client, or room in the socket when `wants_write`.
    /// What it settled is taken as it completes ([`info`](Session::info)).
    pub(crate) fn advance(&self, socket: &Socket) -> io::Result<bool> {
        let mut conn = lock(&self.conn);
        let done = advance(&mut conn, &mut SocketIo(socket))?;
        if done && self.info.get().is_none() {
            let _ = self.info.set(Arc::new(TlsInfo::of(&conn)));
        }
        Ok(done)
    }

    /// Plaintext that has arrived: what was decrypted already, else what
    /// the records on the socket hold. End of stream when the client sent
    /// `close_notify`, and also when it closed without one: a line or
    /// message protocol sees a truncated message as one that never ended.
    pub(crate) fn recv_now(&self, socket: &Socket, buf: &mut [u8]) -> io::Result<usize> {
        let mut conn = lock(&self.conn);
        let mut io = SocketIo(socket);
        loop {
            match conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(error) => return Err(error),
            }
            // Nothing decrypted: take the records the socket has.
            conn.read_tls(&mut io)?;
            process(&mut conn, &mut io)?;
            if conn.wants_write() {
                // A reply rustls owes the client (a key update): sent now
                // if the socket takes it, else with the next write.
                let _ = flush(&mut conn, &mut io);
            }
        }
    }

    /// Encrypts what fits and writes what the socket takes. Nothing is
    /// taken while earlier records still wait for the socket, so at most
    /// one write's worth waits in the session.
    pub(crate) fn send_now(&self, socket: &Socket, buf: &[u8]) -> io::Result<usize> {
        let mut conn = lock(&self.conn);
        let mut io = SocketIo(socket);
        flush(&mut conn, &mut io)?;
        let n = conn.writer().write(buf)?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match flush(&mut conn, &mut io) {
            Err(error) if error.kind() != io::ErrorKind::WouldBlock => Err(error),
            _ => Ok(n),
        }
    }

    pub(crate) fn flush_now(&self, socket: &Socket) -> io::Result<()> {
        flush(&mut lock(&self.conn), &mut SocketIo(socket))
    }

    pub(crate) fn wants_write(&self) -> bool {
        lock(&self.conn).wants_write()
    }

    /// Whether a read would return at once without the socket: plaintext
    /// decrypted and not read, or the client's `close_notify` taken in
    /// (end of stream). A client may send `close_notify` and keep its TCP
    /// side open, and then the socket shows nothing readable.
    pub(crate) fn has_buffered_input(&self) -> bool {
        // Nothing new to process: this only reports the session's state.
        lock(&self.conn)
            .process_new_packets()
            .is_ok_and(|state| state.plaintext_bytes_to_read() > 0 || state.peer_has_closed())
    }

    /// Sends `close_notify`, as far as the socket takes it now: the
    /// client can tell the end of the conversation from a cut.
    pub(crate) fn close_notify(&self, socket: &Socket) {
        let mut conn = lock(&self.conn);
        conn.send_close_notify();
        let _ = flush(&mut conn, &mut SocketIo(socket));
    }
}

/// [`Session::advance`], on the locked session.
fn advance(conn: &mut ServerConnection, io: &mut SocketIo<'_>) -> io::Result<bool> {
    loop {
        match flush(conn, io) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                return Ok(!conn.is_handshaking())
            }
            Err(error) => return Err(error),
        }
        if !conn.is_handshaking() {
            return Ok(true);
        }
        match conn.read_tls(io) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed during the TLS handshake",
                ))
            }
            Ok(_) => process(conn, io)?,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(error) => return Err(error),
        }
    }
}

/// Writes the session's records until none is left (`Ok`) or the socket
/// takes no more (`WouldBlock`).
fn flush(conn: &mut ServerConnection, io: &mut SocketIo<'_>) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(io)?;
    }
    Ok(())
}

/// The socket as rustls reads and writes it: never waiting.
struct SocketIo<'a>(&'a Socket);

impl Read for SocketIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        wait::recv_now(self.0, buf)
    }
}

impl Write for SocketIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        wait::send_now(self.0, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
