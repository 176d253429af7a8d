//! Fuzz target: the TLS transport's loop around rustls (`src/stream/tls.rs`,
//! the `tls` feature), over a real socket pair. The client's side is any
//! bytes: raw ones from the first byte on, or raw ones and encrypted data
//! after a real client's handshake; the server reads and writes between.
//! The server must end with an error or a clean close, never panic and
//! never spin: `tls_session` bounds its steps by the bytes it was given.
//!
//! `cargo test -p frontdesk-fuzz --features tls --test tls` replays the
//! corpus; docs/reliability.md has the command that fuzzes it.

// Without the feature this test is empty, but still links the fuzzing
// engine's runtime, which `cargo bolero` builds every test with.
#[allow(unused_extern_crates)]
extern crate bolero as _;

#[cfg(all(unix, feature = "tls"))]
mod target {
    use std::sync::{Arc, OnceLock};

    use frontdesk::fuzzing::{tls_session, TlsOp};
    use frontdesk::TlsConfig;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::{ClientConfig, RootCertStore, ServerConfig};

    /// One certificate for the whole run: made once, as making one takes
    /// longer than a session.
    fn configs() -> &'static (TlsConfig, Arc<ClientConfig>) {
        static CONFIGS: OnceLock<(TlsConfig, Arc<ClientConfig>)> = OnceLock::new();
        CONFIGS.get_or_init(|| {
            let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
                .expect("a self-signed certificate");
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let key = PrivateKeyDer::Pkcs8(made.key_pair.serialize_der().into());
            let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .expect("the default versions")
                .with_no_client_auth()
                .with_single_cert(vec![made.cert.der().clone()], key)
                .expect("the key fits the certificate");
            let mut roots = RootCertStore::empty();
            roots
                .add(made.cert.der().clone())
                .expect("a valid certificate");
            let client = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("the default versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            (TlsConfig::new(Arc::new(server)), Arc::new(client))
        })
    }

    /// The ops an input spells: a tag byte, then a length byte and that many
    /// bytes, or a size byte, as the op needs.
    fn ops(mut input: &[u8]) -> Vec<TlsOp> {
        let mut ops = Vec::new();
        let take = |input: &mut &[u8]| -> Vec<u8> {
            let Some((&len, rest)) = input.split_first() else {
                return Vec::new();
            };
            let len = usize::from(len).min(rest.len());
            let (bytes, rest) = rest.split_at(len);
            *input = rest;
            bytes.to_vec()
        };
        while let Some((&tag, rest)) = input.split_first() {
            input = rest;
            ops.push(match tag % 5 {
                0 => TlsOp::Raw(take(&mut input)),
                1 => TlsOp::Plain(take(&mut input)),
                2 => TlsOp::CloseNotify,
                3 => {
                    let size = input.first().copied().unwrap_or(1);
                    input = input.get(1..).unwrap_or_default();
                    TlsOp::ServerRead(usize::from(size) * 64)
                }
                _ => TlsOp::ServerWrite(take(&mut input)),
            });
        }
        ops
    }

    pub(super) fn check(input: &[u8]) {
        let (server, client) = configs();
        let Some((&mode, rest)) = input.split_first() else {
            return;
        };
        // Odd: a real client's handshake first. Even: every byte is the
        // client's, raw; most are cut short by the first TLS record's checks,
        // so the raw bytes also go as one op, which the corpus can grow from.
        let (client, ops) = match mode % 2 {
            1 => (Some(Arc::clone(client)), ops(rest)),
            _ => (None, vec![TlsOp::Raw(rest.to_vec())]),
        };
        // Either ending is fine; a panic (or a spin) is what is looked for.
        let _ = tls_session(server, client, &ops);
    }
}

/// Named at the crate's root, so that bolero's directory for it is
/// `tests/__fuzz__/tls_server`.
#[cfg(all(unix, feature = "tls"))]
#[test]
fn tls_server() {
    use std::time::Duration;

    // Every committed input, then 300 random ones (about a second in a
    // debug build), with no time limit: one would cut the replay short
    // (bolero's default is one second for both).
    bolero::check!()
        .with_test_time(Duration::MAX)
        .with_iterations(300)
        .for_each(target::check);
}
