//! The PROXY protocol (v1 and v2, as HAProxy and cloud load balancers send
//! it): the header a proxy puts before the client's bytes to say who the
//! client is. Read before the handler runs, under a deadline, across any
//! number of TCP segments, and never a byte beyond the header: on the
//! worker in the `Handler` mode, parked between turns in the turn mode.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ppp::{v1, v2, HeaderResult};

use crate::addr::Addr;
use crate::net::socket::Socket;
use crate::stream::wait::{self, Interest, Stopping, Woken};

/// How long a proxy may take to send the header. A proxy sends it with
/// the connection; a client that is not a proxy and says nothing is
/// closed after this.
///
/// Meanwhile the connection counts against
/// [`max_connections`](crate::ServerBuilder::max_connections). In the
/// [`Handler`](crate::Handler) mode it also holds a worker, so `workers`
/// silent clients hold every worker for up to this long (list the proxies
/// in [`trusted_proxies`](crate::ServerBuilder::trusted_proxies) to close
/// other clients at once); the turn mode waits for the header with the
/// connection parked, holding no worker.
pub const PROXY_HEADER_TIME: Duration = Duration::from_secs(5);

/// The PROXY protocol, when required.
#[derive(Debug, Clone)]
pub(crate) struct ProxyConfig {
    /// Addresses a header is accepted from, in their canonical form (see
    /// [`ProxyConfig::new`]); empty for any.
    trusted: Vec<IpAddr>,
}

impl ProxyConfig {
    /// Accepts headers from `trusted` (any address when empty).
    ///
    /// Every address is kept in its canonical form, an IPv4-mapped IPv6
    /// address (`::ffff:a.b.c.d`) as the IPv4 address it stands for,
    /// and a peer's is compared in that form too: on a dual-stack
    /// listener (`[::]` with `IPV6_V6ONLY` off, or a socket systemd
    /// passes with its default `BindIPv6Only=default`) an IPv4 proxy's
    /// address is the mapped one, and it is the same proxy (issue #16).
    pub(crate) fn new(trusted: impl IntoIterator<Item = IpAddr>) -> ProxyConfig {
        ProxyConfig {
            trusted: trusted.into_iter().map(|ip| ip.to_canonical()).collect(),
        }
    }

    /// Whether a header is accepted from `proxy`.
    fn trusts(&self, proxy: IpAddr) -> bool {
        self.trusted.is_empty() || self.trusted.contains(&proxy.to_canonical())
    }
}

/// The longest v1 header (`PROXY TCP6 ` and two full IPv6 addresses and
/// ports, then `\r\n`), from the protocol's specification.
const V1_MAX: usize = 107;
/// A v2 header's fixed part: the signature, version and command, family,
/// and the length of the rest.
const V2_FIXED: usize = 16;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8; 6] = b"PROXY ";

/// What a PROXY protocol header said about a connection; see
/// [`Connection::proxy`](crate::Connection::proxy) and
/// [`Turn::proxy`](crate::Turn::proxy).
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    client: Option<SocketAddr>,
    destination: Option<SocketAddr>,
    proxy: Addr,
    tlvs: Vec<(u8, Box<[u8]>)>,
}

impl ProxyHeader {
    /// The client's address, as the proxy saw it; `None` for a header
    /// that names no address (`PROXY UNKNOWN`, a v2 `LOCAL` command such
    /// as a health check, or a Unix socket).
    pub fn client(&self) -> Option<SocketAddr> {
        self.client
    }

    /// The address the client connected to, on the proxy.
    pub fn destination(&self) -> Option<SocketAddr> {
        self.destination
    }

    /// The proxy's own address: the peer of this connection (a Unix
    /// socket's when the proxy connects through one).
    pub fn proxy(&self) -> Addr {
        self.proxy.clone()
    }

    /// The v2 header's type-length-value fields (`PP2_TYPE_ALPN` is 0x01,
    /// `PP2_TYPE_AUTHORITY` 0x02, `PP2_TYPE_UNIQUE_ID` 0x05, ...), in
    /// order; empty for v1.
    pub fn tlvs(&self) -> impl Iterator<Item = (u8, &[u8])> {
        self.tlvs.iter().map(|(kind, value)| (*kind, &value[..]))
    }
}

impl fmt::Debug for ProxyHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyHeader")
            .field("client", &self.client)
            .field("destination", &self.destination)
            .field("proxy", &self.proxy)
            .field("tlvs", &self.tlvs.len())
            .finish()
    }
}

/// The client's address as a connection knows it: the socket's peer,
/// until a PROXY header read later names another (the turn mode reads
/// the header with the connection parked, after it was made). The header
/// is set at most once.
pub(crate) struct ClientAddr {
    /// The socket's peer: the proxy's address, behind one.
    peer: Addr,
    header: OnceLock<Box<ProxyHeader>>,
}

impl ClientAddr {
    pub(crate) fn new(peer: Addr, header: Option<ProxyHeader>) -> ClientAddr {
        let cell = OnceLock::new();
        if let Some(header) = header {
            let _ = cell.set(Box::new(header));
        }
        ClientAddr { peer, header: cell }
    }

    /// The client's address: the one the header names, or else the
    /// socket's peer.
    pub(crate) fn get(&self) -> Addr {
        match self.header().and_then(ProxyHeader::client) {
            Some(client) => Addr::Tcp(client),
            None => self.peer.clone(),
        }
    }

    /// The socket's peer, whatever a header says.
    pub(crate) fn socket_peer(&self) -> &Addr {
        &self.peer
    }

    pub(crate) fn header(&self) -> Option<&ProxyHeader> {
        self.header.get().map(|header| &**header)
    }

    /// Records the header, once read; a second one is ignored.
    pub(crate) fn set_header(&self, header: ProxyHeader) {
        let _ = self.header.set(Box::new(header));
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

impl fmt::Debug for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

/// When the server requires the PROXY protocol: checks that `accepted`
/// comes from a trusted proxy and reads its header, waiting for it up to
/// [`PROXY_HEADER_TIME`]. `Ok(None)` when the protocol is off.
pub(crate) fn admit(
    socket: &Socket,
    peer: &Addr,
    config: Option<&ProxyConfig>,
    stop: &dyn Stopping,
) -> io::Result<Option<ProxyHeader>> {
    let Some(config) = config else {
        return Ok(None);
    };
    check_trusted(peer, config)?;
    read_header(socket, peer, stop).map(Some)
}

/// Fails when `peer` may not send a header: a TCP peer outside the
/// trusted proxies.
///
/// The trusted proxies are IP addresses: a Unix socket's peer is trusted
/// by the file's permissions, not by this list.
pub(crate) fn check_trusted(peer: &Addr, config: &ProxyConfig) -> io::Result<()> {
    let untrusted = match peer {
        Addr::Tcp(proxy) => !config.trusts(proxy.ip()),
        Addr::Unix(_) => false,
    };
    if untrusted {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "not one of the trusted proxies",
        ));
    }
    Ok(())
}

/// Reads the PROXY header at the start of `stream`, consuming exactly its
/// bytes; fails on anything that is not one, or when it does not arrive by
/// the deadline or the server is stopped.
pub(crate) fn read_header(
    stream: &Socket,
    proxy: &Addr,
    stop: &dyn Stopping,
) -> io::Result<ProxyHeader> {
    let deadline = Instant::now() + PROXY_HEADER_TIME;
    let mut read = HeaderRead::default();
    loop {
        if let Some(header) = read.advance(stream, proxy)? {
            return Ok(header);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match wait::wait(stream, Interest::Read, Some(stop.stop_signal()), Some(left))? {
            Woken::Ready => {}
            Woken::Signal => return Err(io::ErrorKind::ConnectionAborted.into()),
            Woken::TimedOut => return Err(timed_out()),
        }
    }
}

/// The error of a header that did not arrive within [`PROXY_HEADER_TIME`].
fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "no complete PROXY header in time")
}

/// A PROXY header being read as its bytes arrive, without ever waiting:
/// the part taken from the socket so far. The `Handler` mode waits for
/// more in `poll(2)` between steps; the turn mode parks the connection.
#[derive(Debug, Default)]
pub(crate) struct HeaderRead {
    header: Vec<u8>,
}

impl HeaderRead {
    /// Takes what has arrived of the header, and never a byte past its
    /// end: `Ok(Some(header))` once it is complete, `Ok(None)` while more
    /// is to come; an error for anything that is not a header, or a
    /// client that closed inside it. `proxy` is the peer that sent it.
    pub(crate) fn advance(
        &mut self,
        stream: &Socket,
        proxy: &Addr,
    ) -> io::Result<Option<ProxyHeader>> {
        // Each round takes at least one byte or returns, and a header has
        // at most 16 + 65,535 bytes.
        loop {
            let header = &mut self.header;
            let want = match still_wanted(header)? {
                Some(want) => want,
                None => return parse(header, proxy).map(Some),
            };
            let mut peeked = [0u8; 512];
            let available = match wait::peek_now(stream, &mut peeked[..want.min(512)]) {
                Ok(0) => return Err(invalid("the connection closed inside the PROXY header")),
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(error) => return Err(error),
            };
            // Only bytes that are certainly the header's are taken: in v1,
            // up to its `\r\n`; in v2, up to the length its fixed part gives.
            let take = if is_v1(header, &peeked[..available]) {
                let mut joined = header.clone();
                joined.extend_from_slice(&peeked[..available]);
                match find_crlf(&joined) {
                    Some(end) => end + 2 - header.len(),
                    None => available,
                }
            } else {
                available
            };
            let mut taken = vec![0u8; take];
            let n = wait::recv_now(stream, &mut taken)?;
            header.extend_from_slice(&taken[..n]);
        }
    }
}

/// How many more bytes the header needs at most, `None` when it is
/// complete; an error when the bytes so far cannot start a header.
fn still_wanted(header: &[u8]) -> io::Result<Option<usize>> {
    // Nothing yet: the first 16 bytes belong to the header in either
    // version (a v1 header is taken only up to its `\r\n`, so even the
    // 15 bytes of `PROXY UNKNOWN\r\n` are safe).
    let Some(&first) = header.first() else {
        return Ok(Some(V2_FIXED));
    };
    let seen = |signature: &[u8]| {
        let n = header.len().min(signature.len());
        header[..n] == signature[..n]
    };
    if first == V2_SIGNATURE[0] {
        if !seen(V2_SIGNATURE) {
            return Err(invalid("no PROXY header"));
        }
        if header.len() < V2_FIXED {
            return Ok(Some(V2_FIXED - header.len()));
        }
        let rest = usize::from(u16::from_be_bytes([header[14], header[15]]));
        let total = V2_FIXED + rest;
        return Ok((header.len() < total).then(|| total - header.len()));
    }
    if first == V1_PREFIX[0] && seen(V1_PREFIX) {
        if find_crlf(header).is_some() {
            return Ok(None);
        }
        if header.len() >= V1_MAX {
            return Err(invalid("a PROXY v1 header longer than 107 bytes"));
        }
        return Ok(Some(V1_MAX - header.len()));
    }
    Err(invalid("no PROXY header"))
}

fn is_v1(header: &[u8], peeked: &[u8]) -> bool {
    let first = header.first().or(peeked.first());
    first == Some(&b'P')
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|pair| pair == b"\r\n")
}

fn parse(header: &[u8], proxy: &Addr) -> io::Result<ProxyHeader> {
    let mut tlvs = Vec::new();
    let ends = match HeaderResult::parse(header) {
        HeaderResult::V1(Ok(v1)) => match v1.addresses {
            v1::Addresses::Tcp4(a) => ends(
                (a.source_address, a.source_port),
                (a.destination_address, a.destination_port),
            ),
            v1::Addresses::Tcp6(a) => ends(
                (a.source_address, a.source_port),
                (a.destination_address, a.destination_port),
            ),
            v1::Addresses::Unknown => None,
        },
        HeaderResult::V2(Ok(v2)) => {
            for tlv in v2.tlvs() {
                let tlv = tlv.map_err(|error| invalid(&format!("a bad PROXY v2 TLV: {error}")))?;
                tlvs.push((tlv.kind, tlv.value.into_owned().into_boxed_slice()));
            }
            match (v2.command, v2.addresses) {
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => ends(
                    (a.source_address, a.source_port),
                    (a.destination_address, a.destination_port),
                ),
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => ends(
                    (a.source_address, a.source_port),
                    (a.destination_address, a.destination_port),
                ),
                // A health check (LOCAL), a Unix socket, or no address.
                _ => None,
            }
        }
        HeaderResult::V1(Err(error)) => {
            return Err(invalid(&format!("a bad PROXY v1 header: {error}")))
        }
        HeaderResult::V2(Err(error)) => {
            return Err(invalid(&format!("a bad PROXY v2 header: {error}")))
        }
    };
    Ok(ProxyHeader {
        client: ends.map(|(client, _)| client),
        destination: ends.map(|(_, destination)| destination),
        proxy: proxy.clone(),
        tlvs,
    })
}

/// The client's and the destination's addresses a header names.
fn ends(
    client: (impl Into<IpAddr>, u16),
    destination: (impl Into<IpAddr>, u16),
) -> Option<(SocketAddr, SocketAddr)> {
    Some((
        SocketAddr::new(client.0.into(), client.1),
        SocketAddr::new(destination.0.into(), destination.1),
    ))
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_and_ipv4_mapped_addresses_are_one_proxy_either_way() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        for (trusted, peer) in [(v4, mapped), (mapped, v4), (v4, v4), (mapped, mapped)] {
            assert!(ProxyConfig::new([trusted]).trusts(peer), "{trusted} {peer}");
        }
        let config = ProxyConfig::new([v4]);
        assert!(!config.trusts("192.0.2.2".parse().unwrap()));
        assert!(!config.trusts("::ffff:192.0.2.2".parse().unwrap()));
        // Only the mapped form is the IPv4 address: `::192.0.2.1` (the
        // deprecated IPv4-compatible form) and `::1` are IPv6 addresses.
        assert!(!config.trusts("::192.0.2.1".parse().unwrap()));
        assert!(!ProxyConfig::new(["0.0.0.1".parse().unwrap()]).trusts("::1".parse().unwrap()));
        assert!(ProxyConfig::new([]).trusts(mapped));
    }
}
