//! TLS over a connection's socket, with rustls: the certificates a server
//! presents (replaceable while it runs), the handshake, run on a worker
//! under its own deadline, and the session every later read and write
//! goes through.
//!
//! The session never waits: it reads records the socket already has and
//! writes records the socket takes now, like the plain transport, so both
//! modes wait for a TLS connection exactly as for a plain one.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConnection;

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
/// certificates, no ALPN); for anything else, build a `ServerConfig` and
/// pass it to [`new`](TlsConfig::new).
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
    /// Settings made by the caller: ALPN, client certificates, a
    /// certificate resolver, another crypto provider.
    ///
    /// # Examples
    ///
    /// With ALPN, using the rustls this crate re-exports:
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
        Ok(TlsConfig::new(load(cert_chain.as_ref(), key.as_ref())?))
    }

    /// Reads the files again and uses them for every connection that
    /// begins from now on. On an error nothing changes.
    ///
    /// # Errors
    ///
    /// As [`from_pem_files`](TlsConfig::from_pem_files).
    pub fn reload_pem_files(
        &self,
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<()> {
        self.replace(load(cert_chain.as_ref(), key.as_ref())?);
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

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let config = self.current();
        f.debug_struct("TlsConfig")
            .field("alpn_protocols", &config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

fn load(cert_chain: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let failed = |path: &Path, reason: String| Error::Tls {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(cert_chain)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|error| failed(cert_chain, pem_error(error)))?;
    if certs.is_empty() {
        return Err(failed(cert_chain, "no certificate in the file".into()));
    }
    let private_key =
        PrivateKeyDer::from_pem_file(key).map_err(|error| failed(key, pem_error(error)))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| failed(cert_chain, error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map(Arc::new)
        .map_err(|error| {
            failed(
                key,
                format!("the key does not fit the certificate: {error}"),
            )
        })
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
}

impl Session {
    /// A session whose handshake is still to run ([`advance`](Session::advance)).
    pub(crate) fn start(config: &TlsConfig) -> io::Result<Session> {
        let conn = ServerConnection::new(config.current()).map_err(io::Error::other)?;
        Ok(Session {
            conn: Mutex::new(conn),
        })
    }

    /// Runs the handshake as far as it goes without waiting: `Ok(true)`
    /// once it is complete (its last records may still wait for the
    /// socket, as any write's may), `Ok(false)` when it needs more from
    /// the client, or room in the socket when `wants_write`.
    pub(crate) fn advance(&self, socket: &Socket) -> io::Result<bool> {
        let mut conn = lock(&self.conn);
        let mut io = SocketIo(socket);
        loop {
            match flush(&mut conn, &mut io) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(!conn.is_handshaking())
                }
                Err(error) => return Err(error),
            }
            if !conn.is_handshaking() {
                return Ok(true);
            }
            match conn.read_tls(&mut io) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed during the TLS handshake",
                    ))
                }
                Ok(_) => process(&mut conn, &mut io)?,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) => return Err(error),
            }
        }
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
