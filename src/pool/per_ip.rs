//! `max_connections_per_ip`: the connections each client address holds,
//! and the slot one connection holds in that count for as long as it is
//! open.
//!
//! A slot is given back when it is dropped, so a connection's count is
//! released exactly once however the connection ends: its handler
//! returned, failed or panicked, the drain deadline ended it, it was
//! closed unserved, or it was turned away after it took its slot (the
//! queue was full, the server was stopping).
//!
//! The cap can be changed, switched on or off while the server runs
//! (`ServerControl::set_max_connections_per_ip`), so the table exists
//! for every server; while the cap is off, taking a place is one atomic
//! load and nothing is counted. A cap switched on while the server runs
//! therefore counts the connections accepted from then on (and any still
//! holding a place from an earlier cap), not those let in while it was
//! off.

use std::collections::hash_map::{Entry, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::addr::Addr;
use crate::sync::lock;

/// How many connections each client address holds, under a cap.
#[derive(Debug)]
pub(crate) struct PerIp {
    /// The cap; 0 when there is none (0 is never a valid cap).
    max: AtomicUsize,
    /// Only addresses that hold a connection are here, so the map grows
    /// with the connections open, not with the clients ever seen.
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its address's count; dropping it gives the
/// place back.
#[derive(Debug)]
pub(crate) struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

/// The address already holds as many connections as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

impl PerIp {
    /// A table with the cap `max` (`None`: no cap yet); a cap is at
    /// least 1 (the builder and the control check it).
    pub(crate) fn new(max: Option<usize>) -> Arc<PerIp> {
        debug_assert_ne!(max, Some(0));
        Arc::new(PerIp {
            max: AtomicUsize::new(max.unwrap_or(0)),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The cap now, `None` when there is none.
    pub(crate) fn max(&self) -> Option<usize> {
        match self.max.load(Ordering::Relaxed) {
            0 => None,
            max => Some(max),
        }
    }

    /// Changes the cap for the connections taken from now on; the places
    /// already held stay held (a lower cap closes nobody).
    pub(crate) fn set_max(&self, max: Option<usize>) {
        debug_assert_ne!(max, Some(0));
        self.max.store(max.unwrap_or(0), Ordering::Relaxed);
    }

    /// A slot for a connection from `client`: `Ok(None)` when there is no
    /// cap, or when `client` has no IP address (a Unix socket's client),
    /// which nothing limits.
    ///
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, an IPv4 client of
    /// a dual-stack listener) counts as the IPv4 address, as
    /// `trusted_proxies` compares them.
    pub(crate) fn take(self: &Arc<Self>, client: &Addr) -> Result<Option<IpSlot>, Full> {
        let Some(max) = self.max() else {
            return Ok(None);
        };
        let Some(addr) = client.tcp() else {
            return Ok(None);
        };
        let ip = addr.ip().to_canonical();
        let mut open = lock(&self.open);
        let count = open.entry(ip).or_insert(0);
        if *count >= max {
            return Err(Full);
        }
        *count += 1;
        Ok(Some(IpSlot {
            table: Arc::clone(self),
            ip,
        }))
    }

    /// The connections `ip` holds now.
    #[cfg(test)]
    fn held(&self, ip: IpAddr) -> usize {
        lock(&self.open).get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.table.open);
        match open.entry(self.ip) {
            Entry::Occupied(mut count) => {
                *count.get_mut() -= 1;
                if *count.get() == 0 {
                    count.remove();
                }
            }
            // Each slot was counted when it was made, and is dropped once.
            Entry::Vacant(_) => debug_assert!(false, "a place given back twice: {}", self.ip),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::PathBuf;

    use super::*;

    fn tcp(addr: &str) -> Addr {
        Addr::Tcp(addr.parse::<SocketAddr>().unwrap())
    }

    #[test]
    fn an_address_holds_at_most_max_and_gets_each_slot_back_once() {
        let table = PerIp::new(Some(2));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let first = table.take(&tcp("192.0.2.7:1000")).unwrap().unwrap();
        let second = table.take(&tcp("192.0.2.7:1001")).unwrap().unwrap();
        assert_eq!(table.take(&tcp("192.0.2.7:1002")).unwrap_err(), Full);
        // Another address has its own count.
        let other = table.take(&tcp("192.0.2.8:1000")).unwrap().unwrap();
        assert_eq!(table.held(ip), 2);
        drop(first);
        assert_eq!(table.held(ip), 1);
        let third = table.take(&tcp("192.0.2.7:1003")).unwrap().unwrap();
        drop((second, third, other));
        assert_eq!(table.held(ip), 0);
        assert!(lock(&table.open).is_empty(), "no address left behind");
    }

    #[test]
    fn an_ipv4_mapped_address_is_the_ipv4_address() {
        let table = PerIp::new(Some(1));
        let _slot = table
            .take(&tcp("[::ffff:192.0.2.7]:1000"))
            .unwrap()
            .unwrap();
        assert_eq!(table.take(&tcp("192.0.2.7:1001")).unwrap_err(), Full);
        // A genuine IPv6 address is another client.
        let _v6 = table.take(&tcp("[2001:db8::7]:1000")).unwrap().unwrap();
    }

    #[test]
    fn a_unix_client_has_no_address_and_no_limit() {
        let table = PerIp::new(Some(1));
        for _ in 0..3 {
            assert!(table.take(&Addr::Unix(None)).unwrap().is_none());
            let named = Addr::Unix(Some(PathBuf::from("/run/client.sock")));
            assert!(table.take(&named).unwrap().is_none());
        }
        assert!(lock(&table.open).is_empty());
    }

    #[test]
    fn usize_max_is_no_limit_in_practice() {
        let table = PerIp::new(Some(usize::MAX));
        let slots: Vec<IpSlot> = (0..1000)
            .map(|port| {
                table
                    .take(&tcp(&format!("192.0.2.7:{port}")))
                    .unwrap()
                    .unwrap()
            })
            .collect();
        assert_eq!(table.held("192.0.2.7".parse().unwrap()), 1000);
        drop(slots);
        assert!(lock(&table.open).is_empty());
    }

    #[test]
    fn a_cap_changed_while_connections_hold_places_closes_nobody() {
        let table = PerIp::new(None);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        // No cap: nothing is counted.
        assert!(table.take(&tcp("192.0.2.7:1000")).unwrap().is_none());
        assert!(lock(&table.open).is_empty());
        table.set_max(Some(3));
        let held: Vec<IpSlot> = (0..3)
            .map(|port| {
                table
                    .take(&tcp(&format!("192.0.2.7:{port}")))
                    .unwrap()
                    .unwrap()
            })
            .collect();
        // Lowered below what the address holds: its places stay, the
        // next one is refused until enough are given back.
        table.set_max(Some(1));
        assert_eq!(table.held(ip), 3);
        assert_eq!(table.take(&tcp("192.0.2.7:9")).unwrap_err(), Full);
        drop(held);
        let one = table.take(&tcp("192.0.2.7:10")).unwrap().unwrap();
        assert_eq!(table.take(&tcp("192.0.2.7:11")).unwrap_err(), Full);
        // Switched off while a place is held: the place still comes back.
        table.set_max(None);
        assert!(table.take(&tcp("192.0.2.7:12")).unwrap().is_none());
        drop(one);
        assert!(lock(&table.open).is_empty());
    }
}
