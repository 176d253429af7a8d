//! Who the peer is, as both modes' handlers see it: over TLS the client's
//! verified certificate chain, the name it asked for (SNI) and the ALPN
//! protocol (`TlsInfo`), with client certificates optional or required
//! and a certificate from another CA refused; over a Unix socket the
//! client's uid, gid and pid (`PeerCredentials`), for this process and,
//! when the test runs as root, for a child process under another user.
//! Also: `reload_pem_files` keeps the client certificate and ALPN
//! settings, bad CA files are clear errors, and the real `openssl
//! s_client -cert -key -servername -alpn` gets its identity reported back.
//!
//! Every server here writes, as soon as it has a connection, one line
//! saying what its handler sees (`describe`), and in the turn mode checks
//! that the connection's `Peer` sees the same; the clients read that line
//! and compare it with what they sent. Conventions as in the other tests:
//! servers bind `127.0.0.1:0` (or a Unix socket in a directory of its
//! own), clients have read and write timeouts, nothing sleeps to wait
//! for the server (counters are polled with a bound). The `openssl` test
//! needs Debian's `openssl` (which `.ci/run` installs when missing), the
//! other-user test root; without them they say so on stderr and pass
//! without running.

mod support;
#[cfg(feature = "tls")]
mod tls_util;
mod util;

use std::collections::HashMap;
use std::io;

use frontdesk::{
    CloseReason, Connection, Next, PeerCredentials, ServerBuilder, ServerHandle, Turn, TurnHandler,
};
use util::{assert_accounted, read_line, stop, until_closed};

// ---------------------------------------------------------------------------
// What the handlers see, as one line
// ---------------------------------------------------------------------------

/// Which mode serves the connections.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Whole,
    Turns,
}

const MODES: [Mode; 2] = [Mode::Whole, Mode::Turns];

/// Starts `builder` (bound to loopback TCP) in `mode`, one worker, with
/// a handler that writes [`describe`]'s line first thing, then reads
/// until the client is done.
fn serve(mode: Mode, builder: ServerBuilder) -> ServerHandle {
    let server = builder
        .workers(1)
        .bind(util::LOCALHOST)
        .expect("bind 127.0.0.1:0");
    spawn(mode, server)
}

fn spawn(mode: Mode, server: frontdesk::Server) -> ServerHandle {
    match mode {
        Mode::Whole => server
            .spawn(|conn: &mut Connection| -> io::Result<()> {
                let line = describe_connection(conn);
                io::Write::write_all(conn, format!("{line}\n").as_bytes())?;
                until_closed(conn)
            })
            .expect("start the server"),
        Mode::Turns => server.spawn_turns(Describe).expect("start the server"),
    }
}

/// The turn mode's handler: the line in `open`, then input is read and
/// dropped until the client's end.
struct Describe;

impl TurnHandler for Describe {
    type State = ();

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<()> {
        let mut line = describe_turn(turn);
        // A `Peer` of the connection sees the same.
        if describe_peer(&turn.peer()) != line {
            line.push_str(" peer=differs");
        }
        turn.send(format!("{line}\n"))
    }

    fn ready(&self, _: &mut (), turn: &mut Turn<'_>) -> io::Result<Next> {
        util::turn_until_closed(turn)
    }

    fn close(&self, _: (), _: &mut Turn<'_>, _: CloseReason) {}
}

fn describe_connection(conn: &Connection) -> String {
    #[cfg(feature = "tls")]
    return describe(conn.peer_credentials(), Some(conn.tls_info()));
    #[cfg(not(feature = "tls"))]
    describe(conn.peer_credentials())
}

fn describe_turn(turn: &Turn<'_>) -> String {
    #[cfg(feature = "tls")]
    return describe(turn.peer_credentials(), Some(turn.tls_info()));
    #[cfg(not(feature = "tls"))]
    describe(turn.peer_credentials())
}

fn describe_peer(peer: &frontdesk::Peer) -> String {
    #[cfg(feature = "tls")]
    return describe(peer.peer_credentials(), Some(peer.tls_info()));
    #[cfg(not(feature = "tls"))]
    describe(peer.peer_credentials())
}

/// `key=value` fields, space-separated: `uid`, `gid`, `pid` (or
/// `creds=none`), and with the `tls` feature `sni`, `alpn`, `chain` (the
/// number of certificates), `leaf` (the first one's DER in hex),
/// `version` and `suite` (or `tls=none`).
fn describe(
    credentials: Option<PeerCredentials>,
    #[cfg(feature = "tls")] tls: Option<Option<&frontdesk::TlsInfo>>,
) -> String {
    let credentials = match credentials {
        Some(who) => format!("uid={} gid={} pid={:?}", who.uid(), who.gid(), who.pid()),
        None => "creds=none".to_string(),
    };
    #[cfg(feature = "tls")]
    return format!("{credentials} {}", tls::describe(tls.flatten()));
    #[cfg(not(feature = "tls"))]
    credentials
}

/// The fields of a [`describe`] line.
fn fields(line: &str) -> HashMap<String, String> {
    line.split(' ')
        .map(|field| {
            let (key, value) = field
                .split_once('=')
                .unwrap_or_else(|| panic!("not a key=value field: {field:?} in {line:?}"));
            (key.to_string(), value.to_string())
        })
        .collect()
}

// ---------------------------------------------------------------------------
// TLS: client certificates, SNI, ALPN
// ---------------------------------------------------------------------------

#[cfg(feature = "tls")]
mod tls {
    use std::io::{Read, Write};
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::sync::Arc;

    use frontdesk::{Error, Server, TlsConfig};
    use rustls::ClientConfig;

    use super::tls_util::{init_logging, try_connect, Ca, Certs, ClientCert, PATIENCE};
    use super::util::wait_for_stats;
    use super::*;

    /// The protocol the servers here speak, and one they do not.
    const PROTOCOL: &[u8] = b"frontdesk/1";
    const OTHER_PROTOCOL: &[u8] = b"other/2";

    /// The TLS fields of a [`describe`] line.
    pub(super) fn describe(tls: Option<&frontdesk::TlsInfo>) -> String {
        let Some(tls) = tls else {
            return "tls=none".into();
        };
        let text = |bytes: Option<&[u8]>| {
            bytes.map_or("none".into(), |b| String::from_utf8_lossy(b).into_owned())
        };
        let leaf = tls
            .peer_certificates()
            .first()
            .map_or("none".into(), |der| hex(der));
        format!(
            "sni={} alpn={} chain={} leaf={leaf} version={:?} suite={:?}",
            text(tls.server_name().map(str::as_bytes)),
            text(tls.alpn_protocol()),
            tls.peer_certificates().len(),
            tls.protocol_version(),
            tls.cipher_suite(),
        )
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// A CA, a server certificate it signed, and a client certificate
    /// it signed.
    struct Pki {
        ca: Ca,
        server: Certs,
        client: ClientCert,
    }

    impl Pki {
        fn new(label: &str) -> Pki {
            let ca = Ca::new(label);
            let server = Certs::signed_by(&ca, &format!("{label}-server"));
            let client = ca.client(&format!("{label}-client"));
            Pki { ca, server, client }
        }

        /// Server settings: client certificates from this CA, required
        /// or not, and [`PROTOCOL`] by ALPN.
        fn tls_config(&self, required: bool) -> TlsConfig {
            TlsConfig::builder(&self.server.cert, &self.server.key)
                .client_ca_pem_file(&self.ca.pem)
                .require_client_cert(required)
                .alpn([PROTOCOL])
                .build()
                .expect("build the TLS settings")
        }

        /// A client that trusts the CA and presents `identity`, offering
        /// `alpn`.
        fn client_config(
            &self,
            identity: Option<&ClientCert>,
            alpn: &[&[u8]],
        ) -> Arc<ClientConfig> {
            self.server.client_config_as(identity, alpn)
        }
    }

    /// Connects, completes the handshake and reads the handler's line.
    fn view_of(handle: &ServerHandle, config: &Arc<ClientConfig>) -> HashMap<String, String> {
        let addr = util::tcp_addr(handle.local_addr());
        let mut client = try_connect(addr, config).unwrap_or_else(|e| panic!("handshake: {e}"));
        fields(&read_line(&mut client))
    }

    /// What a client the server must refuse gets: the handshake fails, or
    /// (TLS 1.3, where the client's side completes before the server has
    /// checked the client's certificate) the first read fails with the
    /// server's alert. It must never get the handler's line.
    fn assert_refused(handle: &ServerHandle, config: &Arc<ClientConfig>, what: &str) {
        let addr = util::tcp_addr(handle.local_addr());
        let mut client = match try_connect(addr, config) {
            Err(_) => return,
            Ok(client) => client,
        };
        let mut buf = [0u8; 512];
        match client.read(&mut buf) {
            Err(error) => assert!(
                super::tls_util::rustls_error(&error).is_some()
                    || error.kind() == io::ErrorKind::UnexpectedEof
                    || util::is_reset(&error),
                "{what}: the read failed, but not with an alert: {error}"
            ),
            Ok(0) => {}
            Ok(n) => panic!(
                "{what}: the client was served: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
        }
    }

    /// With a client certificate required: the handler sees the client's
    /// certificate (its DER, exactly), the name the client asked for, the
    /// protocol chosen from the client's offer, and TLS 1.3.
    #[test]
    fn the_handler_sees_the_client_certificate_sni_and_alpn() {
        init_logging();
        let pki = Pki::new("sees");
        for mode in MODES {
            let handle = serve(mode, Server::builder().tls(pki.tls_config(true)));
            let config = pki.client_config(Some(&pki.client), &[OTHER_PROTOCOL, PROTOCOL]);
            let view = view_of(&handle, &config);
            assert_eq!(view["leaf"], hex(&pki.client.der), "{mode:?}");
            assert_eq!(view["chain"], "1", "{mode:?}");
            assert_eq!(view["sni"], tls_util::SERVER_NAME, "{mode:?}");
            assert_eq!(view["alpn"], "frontdesk/1", "{mode:?}");
            assert_eq!(view["version"], "Some(TLSv1_3)", "{mode:?}");
            assert!(
                view["suite"].starts_with("Some(TLS13_"),
                "{mode:?}: {view:?}"
            );
            assert_eq!(view["creds"], "none", "{mode:?}: TCP has no credentials");
            assert!(
                !view.contains_key("peer"),
                "{mode:?}: the Peer differs: {view:?}"
            );
            let (report, stats) = stop(handle);
            assert_eq!(stats.completed, 1, "{mode:?}: {report:#?}");
            assert_accounted(&stats);
        }
    }

    /// Optional client certificates: a client without one is served,
    /// with an empty chain (and no protocol, as it offered none); a
    /// client with one is still verified and seen.
    #[test]
    fn an_optional_client_certificate_may_be_left_out() {
        init_logging();
        let pki = Pki::new("optional");
        for mode in MODES {
            let handle = serve(mode, Server::builder().tls(pki.tls_config(false)));
            let view = view_of(&handle, &pki.client_config(None, &[]));
            assert_eq!(view["chain"], "0", "{mode:?}");
            assert_eq!(view["leaf"], "none", "{mode:?}");
            assert_eq!(view["alpn"], "none", "{mode:?}");
            assert_eq!(view["sni"], tls_util::SERVER_NAME, "{mode:?}");
            let view = view_of(&handle, &pki.client_config(Some(&pki.client), &[PROTOCOL]));
            assert_eq!(view["leaf"], hex(&pki.client.der), "{mode:?}");
            let other = Ca::new("optional-other");
            let stranger = other.client("optional-stranger");
            assert_refused(
                &handle,
                &pki.client_config(Some(&stranger), &[]),
                "optional, another CA's certificate",
            );
            let stats = wait_for_stats(&handle, "the stranger is counted", |s| s.rejected.tls == 1);
            assert_eq!(stats.completed, 2, "{mode:?}: {stats:#?}");
            let (_, stats) = stop(handle);
            assert_accounted(&stats);
        }
    }

    /// Required client certificates: a client without one, and one with
    /// a certificate another CA signed, or offering only a protocol the
    /// server does not speak, are refused in the handshake and counted
    /// as failed handshakes; the one worker is free for the next client,
    /// which is served.
    #[test]
    fn a_required_client_certificate_refuses_clients_without_a_valid_one() {
        init_logging();
        let pki = Pki::new("required");
        let other = Ca::new("required-other");
        let stranger = other.client("required-stranger");
        for mode in MODES {
            let handle = serve(mode, Server::builder().tls(pki.tls_config(true)));
            let refused: [(&str, Arc<ClientConfig>); 3] = [
                ("no certificate", pki.client_config(None, &[PROTOCOL])),
                (
                    "another CA's certificate",
                    pki.client_config(Some(&stranger), &[PROTOCOL]),
                ),
                (
                    "an unknown protocol",
                    pki.client_config(Some(&pki.client), &[OTHER_PROTOCOL]),
                ),
            ];
            for (count, (what, config)) in refused.iter().enumerate() {
                assert_refused(&handle, config, &format!("{mode:?}: {what}"));
                wait_for_stats(&handle, &format!("{mode:?}: {what} is counted"), |s| {
                    s.rejected.tls == count as u64 + 1
                });
            }
            let view = view_of(&handle, &pki.client_config(Some(&pki.client), &[PROTOCOL]));
            assert_eq!(view["leaf"], hex(&pki.client.der), "{mode:?}");
            let (report, stats) = stop(handle);
            assert_eq!(stats.completed, 1, "{mode:?}: {report:#?}");
            assert_eq!(stats.handler_errors, 0, "{mode:?}: {report:#?}");
            assert_eq!(report.forced, 0, "{mode:?}: {report:#?}");
            assert_accounted(&stats);
        }
    }

    /// `reload_pem_files` replaces the server's certificate and keeps the
    /// rest: clients must still present a certificate, and ALPN still
    /// chooses the server's protocol.
    #[test]
    fn reloading_the_certificate_keeps_client_auth_and_alpn() {
        init_logging();
        let pki = Pki::new("reload");
        let config = pki.tls_config(true);
        let handle = serve(Mode::Whole, Server::builder().tls(config.clone()));
        let renewed = Certs::signed_by(&pki.ca, "reload-renewed");
        config
            .reload_pem_files(&renewed.cert, &renewed.key)
            .expect("reload");

        let addr = util::tcp_addr(handle.local_addr());
        let client_config = pki.client_config(Some(&pki.client), &[PROTOCOL]);
        let mut client = try_connect(addr, &client_config).expect("handshake");
        let view = fields(&read_line(&mut client));
        let presented = client.conn.peer_certificates().expect("the server's chain")[0].clone();
        let renewed_der = rustls::pki_types::CertificateDer::from_pem_file(&renewed.cert)
            .expect("read the renewed certificate");
        assert_eq!(
            presented, renewed_der,
            "the server presents the renewed certificate"
        );
        assert_eq!(view["leaf"], hex(&pki.client.der));
        assert_eq!(view["alpn"], "frontdesk/1");
        drop(client);

        assert_refused(
            &handle,
            &pki.client_config(None, &[PROTOCOL]),
            "after the reload",
        );
        wait_for_stats(
            &handle,
            "the client without a certificate is refused",
            |s| s.rejected.tls == 1,
        );
        let (_, stats) = stop(handle);
        assert_accounted(&stats);
    }

    use rustls::pki_types::pem::PemObject;

    /// Bad CA bundles and contradictory settings are errors from `build`
    /// that name the file or the setting, never a panic.
    #[test]
    fn bad_client_ca_settings_are_clear_errors() {
        let pki = Pki::new("bad-ca");
        let dir = pki.ca.pem.parent().expect("a directory").to_path_buf();
        let build = |ca: &Path| {
            TlsConfig::builder(&pki.server.cert, &pki.server.key)
                .client_ca_pem_file(ca)
                .build()
        };
        let tls_error =
            |result: frontdesk::Result<TlsConfig>, path: &Path, reason: &str| match result {
                Err(Error::Tls {
                    path: named,
                    reason: why,
                }) => {
                    assert_eq!(named, path);
                    assert!(why.contains(reason), "{why:?} does not say {reason:?}");
                }
                other => panic!("expected a TLS error for {}, got {other:?}", path.display()),
            };

        let missing = dir.join("missing.pem");
        tls_error(build(&missing), &missing, "No such file");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        tls_error(build(&empty), &empty, "no certificate");
        // A key where certificates should be.
        tls_error(build(&pki.server.key), &pki.server.key, "no certificate");
        let garbage = dir.join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        tls_error(build(&garbage), &garbage, "not a usable CA certificate");

        let alone = TlsConfig::builder(&pki.server.cert, &pki.server.key)
            .require_client_cert(false)
            .build();
        assert!(
            matches!(alone, Err(Error::Config(why)) if why.contains("client_ca_pem_file")),
            "{alone:?}"
        );
        for bad in [&b""[..], &[b'x'; 256][..]] {
            let result = TlsConfig::builder(&pki.server.cert, &pki.server.key)
                .alpn([bad])
                .build();
            assert!(matches!(result, Err(Error::Config(_))), "{result:?}");
        }
        // The edges of what is allowed.
        TlsConfig::builder(&pki.server.cert, &pki.server.key)
            .alpn([&b"x"[..], &[b'x'; 255][..]])
            .build()
            .expect("1 and 255 bytes are valid protocol names");
    }

    /// A child process, killed if it is still running when dropped.
    struct Reaped(std::process::Child);

    impl Drop for Reaped {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait() {
                let _ = self.0.kill();
            }
            let _ = self.0.wait();
        }
    }

    /// The real `openssl s_client`, with a client certificate, a server
    /// name and an ALPN protocol: the handler's line, which s_client
    /// prints, reports all three.
    #[test]
    fn openssl_s_client_gets_its_identity_reported_back() {
        let Some(openssl) = support::tool("openssl") else {
            eprintln!(
                "SKIPPED openssl_s_client_gets_its_identity_reported_back: \
                 openssl not found; install Debian's openssl (package `openssl`)"
            );
            return;
        };
        init_logging();
        let pki = Pki::new("openssl");
        for mode in MODES {
            let handle = serve(mode, Server::builder().tls(pki.tls_config(true)));
            let addr = util::tcp_addr(handle.local_addr());
            let mut s_client = Reaped(
                Command::new(&openssl)
                    .arg("s_client")
                    .args(["-connect", &addr.to_string()])
                    .args(["-servername", "identity.test"])
                    .args(["-alpn", "other/2,frontdesk/1"])
                    .arg("-cert")
                    .arg(&pki.client.cert)
                    .arg("-key")
                    .arg(&pki.client.key)
                    .arg("-CAfile")
                    .arg(&pki.ca.pem)
                    // Not the name the server's certificate is for: no
                    // host name check, the chain is still verified.
                    .arg("-verify_return_error")
                    .args(["-quiet", "-no_ign_eof"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start openssl s_client"),
            );
            let lines = support::lines_of(s_client.0.stdout.take().expect("piped stdout"));
            let said = support::lines_of(s_client.0.stderr.take().expect("piped stderr"));
            let line = lines.recv_timeout(PATIENCE).unwrap_or_else(|e| {
                let said = said.try_iter().collect::<Vec<_>>().join("\n");
                panic!("{mode:?}: no line from s_client ({e}); it said:\n{said}")
            });
            let view = fields(&line);
            assert_eq!(view["sni"], "identity.test", "{mode:?}");
            assert_eq!(view["alpn"], "frontdesk/1", "{mode:?}");
            assert_eq!(view["leaf"], hex(&pki.client.der), "{mode:?}");
            // s_client sends the CA's certificate after its own, as
            // `-CAfile` lets it build the chain.
            assert_ne!(view["chain"], "0", "{mode:?}");
            // End of input: s_client sends close_notify and exits.
            let mut stdin = s_client.0.stdin.take().expect("piped stdin");
            stdin.flush().unwrap();
            drop(stdin);
            let status = s_client.0.wait().expect("wait for s_client");
            assert!(status.success(), "{mode:?}: s_client exited with {status}");
            let (report, stats) = stop(handle);
            assert_eq!(stats.completed, 1, "{mode:?}: {report:#?}");
            assert_eq!(stats.rejected.tls, 0, "{mode:?}: {report:#?}");
        }
    }
}

// ---------------------------------------------------------------------------
// Unix sockets: the peer's credentials
// ---------------------------------------------------------------------------

#[cfg(target_os = "linux")]
mod unix {
    use std::os::unix::net::UnixStream;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    use frontdesk::Server;

    use super::support::PATIENCE;
    use super::util::{SocketDir, TIMEOUT};
    use super::*;

    /// The user and group the other-user test runs its client as.
    const NOBODY: u32 = 65534;

    /// Where the child process of the other-user test finds the socket.
    const CHILD_SOCKET: &str = "FRONTDESK_IDENTITY_CHILD_SOCKET";

    fn serve_unix(mode: Mode, dir: &SocketDir) -> (ServerHandle, std::path::PathBuf) {
        let path = dir.path("id.sock");
        let builder = Server::builder().workers(1).unix_permissions(0o666);
        let server = builder.bind_unix(&path).expect("bind the Unix socket");
        let handle = spawn(mode, server);
        (handle, path)
    }

    fn connect(path: &std::path::Path) -> io::Result<UnixStream> {
        let client = UnixStream::connect(path)?;
        client.set_read_timeout(Some(TIMEOUT))?;
        client.set_write_timeout(Some(TIMEOUT))?;
        Ok(client)
    }

    /// A client of this process: the handler sees this process's uid,
    /// gid and pid, in both modes; over TCP it sees none.
    #[test]
    fn the_handler_sees_a_unix_clients_uid_gid_and_pid() {
        for mode in MODES {
            let dir = SocketDir::new(&format!("cred-{mode:?}").to_lowercase());
            let (handle, path) = serve_unix(mode, &dir);
            let mut client = connect(&path).expect("connect");
            let view = fields(&read_line(&mut client));
            assert_eq!(
                view["uid"],
                rustix::process::getuid().as_raw().to_string(),
                "{mode:?}"
            );
            assert_eq!(
                view["gid"],
                rustix::process::getgid().as_raw().to_string(),
                "{mode:?}"
            );
            assert_eq!(
                view["pid"],
                format!("Some({})", std::process::id()),
                "{mode:?}"
            );
            assert!(
                !view.contains_key("peer"),
                "{mode:?}: the Peer differs: {view:?}"
            );
            drop(client);
            let (_, stats) = stop(handle);
            assert_eq!(stats.completed, 1, "{mode:?}: {stats:#?}");
            assert_accounted(&stats);

            let handle = serve(mode, Server::builder());
            let mut client = util::client(util::tcp_addr(handle.local_addr()));
            assert_eq!(fields(&read_line(&mut client))["creds"], "none", "{mode:?}");
            drop(client);
            stop(handle);
        }
    }

    /// A client under another user: this test binary run again as
    /// `nobody` (65534), running only [`unix_child_client`], which
    /// connects and prints the handler's line. Needs root to switch
    /// users; a checkout `nobody` cannot reach is skipped too.
    #[test]
    fn the_handler_sees_another_users_credentials() {
        if rustix::process::getuid().as_raw() != 0 {
            eprintln!(
                "SKIPPED the_handler_sees_another_users_credentials: not root, \
                 so no client can be started under another user"
            );
            return;
        }
        for mode in MODES {
            let dir = SocketDir::new(&format!("other-{mode:?}").to_lowercase());
            let (handle, path) = serve_unix(mode, &dir);
            let me = std::env::current_exe().expect("the test binary's path");
            let child = Command::new(&me)
                .args(["--exact", "unix::unix_child_client", "--nocapture"])
                .args(["--test-threads", "1"])
                .env(CHILD_SOCKET, &path)
                .uid(NOBODY)
                .gid(NOBODY)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            let child = match child {
                Ok(child) => child,
                Err(error) => {
                    eprintln!(
                        "SKIPPED the_handler_sees_another_users_credentials: cannot run \
                         {} as user {NOBODY}: {error}",
                        me.display()
                    );
                    stop(handle);
                    return;
                }
            };
            let pid = child.id();
            let output = super::wait_with_output(child, PATIENCE);
            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stdout.contains("CHILD-CANNOT:") {
                eprintln!(
                    "SKIPPED the_handler_sees_another_users_credentials: user {NOBODY} \
                     cannot reach the socket or the test binary:\n{stdout}{stderr}"
                );
                stop(handle);
                return;
            }
            let line = stdout
                .lines()
                .find_map(|line| line.split_once("CHILD-SAW: ").map(|(_, seen)| seen))
                .unwrap_or_else(|| {
                    panic!("{mode:?}: the child said nothing useful:\n{stdout}\n{stderr}")
                });
            let view = fields(line);
            assert_eq!(view["uid"], NOBODY.to_string(), "{mode:?}");
            assert_eq!(view["gid"], NOBODY.to_string(), "{mode:?}");
            assert_eq!(view["pid"], format!("Some({pid})"), "{mode:?}");
            let (_, stats) = stop(handle);
            assert_eq!(stats.completed, 1, "{mode:?}: {stats:#?}");
        }
    }

    /// Not a test of its own: the client side of
    /// [`the_handler_sees_another_users_credentials`], which runs it in a
    /// child process with [`CHILD_SOCKET`] set. Without it, it does
    /// nothing.
    #[test]
    fn unix_child_client() {
        let Some(path) = std::env::var_os(CHILD_SOCKET) else {
            return;
        };
        match connect(std::path::Path::new(&path)) {
            Ok(mut client) => println!("CHILD-SAW: {}", read_line(&mut client)),
            Err(error) if error.kind() == io::ErrorKind::PermissionDenied => {
                println!("CHILD-CANNOT: connect: {error}")
            }
            Err(error) => panic!("connect to {path:?}: {error}"),
        }
    }
}

/// Waits for `child` to exit, for at most `patience`, collecting its
/// output; kills it after that and fails.
#[cfg(target_os = "linux")]
fn wait_with_output(
    mut child: std::process::Child,
    patience: std::time::Duration,
) -> std::process::Output {
    let stdout = support::lines_of(child.stdout.take().expect("piped stdout"));
    let stderr = support::lines_of(child.stderr.take().expect("piped stderr"));
    let deadline = std::time::Instant::now() + patience;
    let mut out = Vec::new();
    loop {
        match stdout.recv_deadline(deadline) {
            Ok(line) => out.push(line),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the child did not finish within {patience:?}: {out:?}");
            }
        }
    }
    let status = child.wait().expect("wait for the child");
    // The child has exited: its stderr ends at once.
    let mut err = Vec::new();
    while let Ok(line) = stderr.recv_deadline(deadline) {
        err.push(line);
    }
    std::process::Output {
        status,
        stdout: out.join("\n").into_bytes(),
        stderr: err.join("\n").into_bytes(),
    }
}
