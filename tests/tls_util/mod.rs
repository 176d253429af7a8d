//! Helpers for `tests/tls.rs`: certificates made at test time, a real
//! rustls client over a loopback `TcpStream`, a way to tell how a TLS
//! stream ended (`close_notify`, a bare TCP end, a reset), and a client
//! that writes and reads at once on two threads for large transfers.
//!
//! As everywhere in `tests/`, nothing here sleeps to wait for something:
//! every client socket has read and write timeouts of [`PATIENCE`], so a
//! server that never answers fails a test instead of hanging it.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// The longest a client waits for a reply, for the server's end of
/// stream, or for room to write. Everything here takes milliseconds on an
/// idle machine; the bound is far above that because the tests also run
/// on a loaded 2-core machine in parallel with each other (and a debug
/// build of rustls is slow), and only has to be finite so that a bug
/// fails a test instead of hanging it.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// The name the clients ask for; every certificate made here is for it
/// (and for `127.0.0.1`, which `openssl s_client` connects to).
pub(crate) const SERVER_NAME: &str = "localhost";

/// Shows the library's logs when a test fails (`cargo test` captures
/// them otherwise); set `RUST_LOG=debug` to see them.
pub(crate) fn init_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// A self-signed certificate and its key, written as PEM files into a
/// fresh directory under the target directory's temporary folder
/// (`CARGO_TARGET_TMPDIR`), removed when dropped.
#[derive(Debug)]
pub(crate) struct Certs {
    dir: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    der: CertificateDer<'static>,
}

impl Certs {
    /// A new certificate for [`SERVER_NAME`] and `127.0.0.1`; `label`
    /// names its directory, for a human looking at a failed run.
    pub(crate) fn new(label: &str) -> Certs {
        let dir = fresh_dir(label);
        let made =
            rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string(), "127.0.0.1".into()])
                .expect("generate a self-signed certificate");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, made.cert.pem()).expect("write cert.pem");
        std::fs::write(&key, made.key_pair.serialize_pem()).expect("write key.pem");
        Certs {
            dir,
            cert,
            key,
            der: made.cert.der().clone(),
        }
    }

    /// A new certificate for [`SERVER_NAME`] and `127.0.0.1` signed by
    /// `ca`: a client trusts it by trusting the CA ([`Certs::client_config`]
    /// does).
    pub(crate) fn signed_by(ca: &Ca, label: &str) -> Certs {
        let dir = fresh_dir(label);
        let key_pair = rcgen::KeyPair::generate().expect("generate a key");
        let mut params =
            rcgen::CertificateParams::new(vec![SERVER_NAME.to_string(), "127.0.0.1".into()])
                .expect("valid names");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let made = params
            .signed_by(&key_pair, &ca.cert, &ca.key)
            .expect("sign a server certificate");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, made.pem()).expect("write cert.pem");
        std::fs::write(&key, key_pair.serialize_pem()).expect("write key.pem");
        Certs {
            dir,
            cert,
            key,
            der: ca.cert.der().clone(),
        }
    }

    /// A client that trusts this certificate (or its CA) and presents
    /// `identity` when asked for a certificate, offering `alpn`.
    pub(crate) fn client_config_as(
        &self,
        identity: Option<&ClientCert>,
        alpn: &[&[u8]],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).expect("a valid certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default versions")
            .with_root_certificates(roots);
        let mut config = match identity {
            Some(identity) => builder
                .with_client_auth_cert(vec![identity.der.clone()], identity.key_der())
                .expect("a valid client certificate and key"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Arc::new(config)
    }

    /// The server's settings for this certificate.
    pub(crate) fn tls_config(&self) -> frontdesk::TlsConfig {
        frontdesk::TlsConfig::from_pem_files(&self.cert, &self.key).expect("load the PEM files")
    }

    /// A client that trusts this certificate and nothing else.
    pub(crate) fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).expect("a valid certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh directory under the target directory's temporary folder
/// (`CARGO_TARGET_TMPDIR`); `label` names it, for a human looking at a
/// failed run.
fn fresh_dir(label: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "tls-{label}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    // A directory left by an earlier run with the same process id.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the certificate directory");
    dir
}

/// A certificate authority made at test time: its certificate in a PEM
/// file (`pem`, for `TlsConfigBuilder::client_ca_pem_file`), and its key
/// to sign servers' ([`Certs::signed_by`]) and clients' ([`Ca::client`])
/// certificates.
pub(crate) struct Ca {
    dir: PathBuf,
    pub(crate) pem: PathBuf,
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    pub(crate) fn new(label: &str) -> Ca {
        let dir = fresh_dir(label);
        let key = rcgen::KeyPair::generate().expect("generate a key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("no names");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("frontdesk test CA {label}"),
        );
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("make the CA certificate");
        let pem = dir.join("ca.pem");
        std::fs::write(&pem, cert.pem()).expect("write ca.pem");
        Ca {
            dir,
            pem,
            cert,
            key,
        }
    }

    /// A client certificate signed by this CA, its PEM files in a
    /// directory of its own.
    pub(crate) fn client(&self, label: &str) -> ClientCert {
        let dir = fresh_dir(label);
        let key_pair = rcgen::KeyPair::generate().expect("generate a key");
        let mut params =
            rcgen::CertificateParams::new(vec![format!("{label}.client.test")]).expect("a name");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, label);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let made = params
            .signed_by(&key_pair, &self.cert, &self.key)
            .expect("sign a client certificate");
        let cert = dir.join("client.pem");
        let key = dir.join("client-key.pem");
        std::fs::write(&cert, made.pem()).expect("write client.pem");
        std::fs::write(&key, key_pair.serialize_pem()).expect("write client-key.pem");
        ClientCert {
            dir,
            cert,
            key,
            der: made.der().clone(),
            key_der: key_pair.serialize_der(),
        }
    }
}

impl Drop for Ca {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client's certificate and key, as PEM files (for `openssl s_client
/// -cert -key`) and as DER (for a rustls client).
pub(crate) struct ClientCert {
    dir: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl ClientCert {
    fn key_der(&self) -> rustls::pki_types::PrivateKeyDer<'static> {
        rustls::pki_types::PrivatePkcs8KeyDer::from(self.key_der.clone()).into()
    }
}

impl Drop for ClientCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Connects to `addr` over TCP with timeouts of [`PATIENCE`].
pub(crate) fn tcp_client(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A TLS client: a rustls session over a loopback socket.
pub(crate) type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// Connects to `addr` and completes the TLS handshake, trusting only
/// what `config` trusts.
///
/// # Errors
///
/// What the handshake failed with: a rustls error (a certificate the
/// client does not trust, an alert from the server) comes as
/// `io::ErrorKind::InvalidData` with the `rustls::Error` inside.
pub(crate) fn try_connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> io::Result<TlsStream> {
    try_handshake(tcp_client(addr), config)
}

/// Completes the client's side of a TLS handshake over `sock`, a
/// connection already made: a client that connected and only later
/// began its handshake.
///
/// # Errors
///
/// As [`try_connect`].
pub(crate) fn try_handshake(sock: TcpStream, config: &Arc<ClientConfig>) -> io::Result<TlsStream> {
    let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
    let conn = ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
    let mut stream = StreamOwned::new(conn, sock);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// Connects to `addr` as [`connect`] does, with a receive buffer of
/// about `bytes` (`SO_RCVBUF`, set before the connection is made, so that
/// the window the client offers stays that small): a client that does
/// not read fills it, and the server's send buffer, with little data.
pub(crate) fn connect_with_receive_buffer(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    bytes: usize,
) -> TlsStream {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .expect("make a client socket");
    socket
        .set_recv_buffer_size(bytes)
        .expect("set the receive buffer size");
    socket
        .connect(&addr.into())
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    stream.set_nodelay(true).unwrap();
    try_handshake(stream, config).unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"))
}

/// Sends `bytes`, then `close_notify`, in one write to the socket, and
/// leaves the TCP stream open (no `shutdown`): the client has said all it
/// will say, in TLS's terms only, and goes on reading. Both records
/// arrive together, so the server reads the end with the data, and the
/// socket shows nothing more to read after them.
pub(crate) fn send_then_close_notify(stream: &mut TlsStream, bytes: &[u8]) {
    stream
        .conn
        .writer()
        .write_all(bytes)
        .expect("the session takes a few bytes");
    stream.conn.send_close_notify();
    let mut records = Vec::new();
    while stream.conn.wants_write() {
        stream
            .conn
            .write_tls(&mut records)
            .expect("encrypt into memory");
    }
    stream
        .sock
        .write_all(&records)
        .unwrap_or_else(|e| panic!("send {bytes:?} and close_notify: {e}"));
}

/// [`try_connect`], which must succeed.
pub(crate) fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> TlsStream {
    try_connect(addr, config).unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"))
}

/// The rustls error inside an I/O error from the client, if it is one.
pub(crate) fn rustls_error(error: &io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Sends `line` and returns the line that comes back.
pub(crate) fn exchange(stream: &mut TlsStream, line: &str) -> String {
    use crate::util::{read_line, send_line};
    send_line(stream, line);
    read_line(stream)
}

/// How a TLS stream ended, as its client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TlsEnd {
    /// The server sent `close_notify`: rustls' reader returned `Ok(0)`.
    /// The only end that tells the client it has every byte.
    CloseNotify,
    /// The TCP stream ended without `close_notify` (rustls reports
    /// `UnexpectedEof`): the client cannot tell the end from a cut.
    Truncated,
    /// The connection was reset: what the server wrote last may be lost.
    Reset,
    /// No end came within the read timeout, or another error: its text.
    Other(String),
}

/// Reads until the stream ends and returns what was read and how it
/// ended.
pub(crate) fn read_to_end(stream: &mut impl Read) -> (Vec<u8>, TlsEnd) {
    let mut all = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (all, TlsEnd::CloseNotify),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (all, end_of(&e)),
        }
    }
}

/// What a failed read says of how the stream ended.
fn end_of(error: &io::Error) -> TlsEnd {
    match error.kind() {
        io::ErrorKind::UnexpectedEof => TlsEnd::Truncated,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => TlsEnd::Reset,
        kind => TlsEnd::Other(format!("{error} ({kind:?})")),
    }
}

/// Reads until the server's `close_notify` and returns every byte that
/// came before it.
///
/// # Panics
///
/// On any other end: the TCP stream ending without `close_notify`, a
/// reset, no end within the read timeout. The message shows what was
/// read until then.
pub(crate) fn read_to_close_notify(stream: &mut impl Read) -> Vec<u8> {
    let (all, end) = read_to_end(stream);
    assert_eq!(
        end,
        TlsEnd::CloseNotify,
        "expected close_notify after {} bytes ({:?})",
        all.len(),
        preview(&all)
    );
    all
}

/// Asserts that the server ends the stream with `close_notify` and
/// nothing more before it.
pub(crate) fn assert_close_notify(stream: &mut impl Read) {
    let rest = read_to_close_notify(stream);
    assert!(
        rest.is_empty(),
        "expected the end of the stream, got {:?} first",
        preview(&rest)
    );
}

/// The start of `bytes` as text, for panic messages.
pub(crate) fn preview(bytes: &[u8]) -> String {
    const MAX: usize = 120;
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]).into_owned();
    if bytes.len() > MAX {
        format!("{shown}... ({} bytes)", bytes.len())
    } else {
        shown
    }
}

/// Reads from a plain TCP socket until its end and tells a clean end
/// (`Ok(0)`, the FIN of an orderly close) from a reset: returns what was
/// read, or panics naming what happened instead.
pub(crate) fn read_to_clean_tcp_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "expected a clean end of stream after {} bytes ({all:?}), got {e} ({:?})",
                all.len(),
                e.kind()
            ),
        }
    }
}

/// A TLS client split over two threads, for transfers larger than the
/// buffers between client and server: one thread writes while the other
/// reads, as a real client streaming a file would.
///
/// The session sits under a lock that is held only to encrypt or decrypt,
/// never across a socket call: the reader waits in `read(2)` and the
/// writer in `write(2)` on the same socket, each unlocked. Only the
/// writer writes records to the socket, so they leave in order.
#[derive(Debug)]
pub(crate) struct Duplex {
    conn: Arc<Mutex<ClientConnection>>,
    writer: TcpStream,
    reader: JoinHandle<(Vec<u8>, TlsEnd)>,
}

impl Duplex {
    /// Splits a connected client (its handshake done) and starts its
    /// reader, which keeps everything it reads until the stream ends,
    /// after `start` has returned (a test can hold the reader back until
    /// the server had to wait for the client).
    pub(crate) fn split(stream: TlsStream, start: impl FnOnce() + Send + 'static) -> Duplex {
        let StreamOwned { conn, sock } = stream;
        let conn = Arc::new(Mutex::new(conn));
        let writer = sock.try_clone().expect("clone the client socket");
        let reader = {
            let conn = Arc::clone(&conn);
            thread::spawn(move || {
                start();
                read_all(&conn, sock)
            })
        };
        Duplex {
            conn,
            writer,
            reader,
        }
    }

    /// Encrypts `bytes` and writes them, waiting (at most [`PATIENCE`]
    /// per write) for the socket to take them.
    ///
    /// # Errors
    ///
    /// What the write failed with: `WouldBlock` after [`PATIENCE`] when
    /// the server has stopped reading.
    pub(crate) fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let records = {
            let mut conn = lock(&self.conn);
            conn.writer()
                .write_all(bytes)
                .expect("the session takes what was encrypted just before");
            let mut records = Vec::new();
            while conn.wants_write() {
                conn.write_tls(&mut records).expect("encrypt into memory");
            }
            records
        };
        self.writer.write_all(&records)
    }

    /// Waits for the reader: everything it read, and how the stream
    /// ended.
    pub(crate) fn finish(self) -> (Vec<u8>, TlsEnd) {
        self.reader.join().expect("the reader thread panicked")
    }
}

/// The reader of a [`Duplex`]: reads records from `socket`, decrypts them
/// under the lock, and keeps the plaintext until the stream ends.
fn read_all(conn: &Mutex<ClientConnection>, mut socket: TcpStream) -> (Vec<u8>, TlsEnd) {
    let mut received = Vec::new();
    let mut records = vec![0u8; 64 * 1024];
    let mut plain = vec![0u8; 64 * 1024];
    loop {
        let n = match socket.read(&mut records) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return (received, end_of(&e)),
        };
        let mut conn = lock(conn);
        let mut rest = &records[..n];
        loop {
            // At end of stream (n == 0) this tells rustls so, once.
            if let Err(e) = conn.read_tls(&mut rest) {
                return (received, TlsEnd::Other(format!("read_tls: {e}")));
            }
            if let Err(e) = conn.process_new_packets() {
                return (received, TlsEnd::Other(format!("TLS error: {e}")));
            }
            loop {
                match conn.reader().read(&mut plain) {
                    Ok(0) => return (received, TlsEnd::CloseNotify),
                    Ok(k) => received.extend_from_slice(&plain[..k]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return (received, end_of(&e)),
                }
            }
            if rest.is_empty() {
                break;
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The lines of a large transfer: numbered, of varied lengths (so that
/// lines straddle TLS records and reads in every way), at least `total`
/// bytes in all, each shorter than `max_line`.
pub(crate) fn numbered_lines(total: usize, max_line: usize) -> Vec<u8> {
    let mut all = Vec::with_capacity(total + max_line);
    let mut i = 0usize;
    while all.len() < total {
        let filler_len = (i * 37) % (max_line - 16);
        let filler: String = (0..filler_len)
            .map(|k| char::from(b'a' + ((i + k) % 26) as u8))
            .collect();
        all.extend_from_slice(format!("{i:08} {filler}\n").as_bytes());
        i += 1;
    }
    all
}

/// Asserts that `got` is `expected`, naming the first byte that differs
/// (a 2 MiB `assert_eq!` message helps nobody).
pub(crate) fn assert_same_bytes(got: &[u8], expected: &[u8]) {
    if got == expected {
        return;
    }
    let at = got
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(expected.len()));
    let around = |bytes: &[u8]| preview(&bytes[at.saturating_sub(40).min(bytes.len())..]);
    panic!(
        "got {} bytes, expected {}; first difference at byte {at}:\n got: {}\nwant: {}",
        got.len(),
        expected.len(),
        around(got),
        around(expected)
    );
}
