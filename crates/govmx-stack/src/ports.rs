//! Addresses: is an address free (bind test), and random loopback addresses for parallel tests.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};

use rand::Rng;

use crate::{Result, StackError};

/// Checks that `addr` can be bound now; `component` names who wants it, for the error.
pub fn check_addr_free(addr: SocketAddr, component: &str) -> Result<()> {
    match TcpListener::bind(addr) {
        Ok(listener) => {
            drop(listener);
            Ok(())
        }
        Err(error) if error.kind() == io::ErrorKind::AddrInUse => Err(StackError::AddressInUse {
            addr,
            component: component.to_owned(),
        }),
        Err(source) => Err(StackError::Io {
            action: "binding",
            path: addr.to_string().into(),
            source,
        }),
    }
}

/// A random `127.X.Y.Z` with X in 100..=254 (Linux routes all of 127/8 to loopback).
pub fn random_loopback_ip() -> Ipv4Addr {
    let mut rng = rand::thread_rng();
    Ipv4Addr::new(
        127,
        rng.gen_range(100..=254),
        rng.r#gen(),
        rng.gen_range(1..=254),
    )
}

/// A random loopback IP on which every port in `ports` is free right now.
pub fn free_loopback_ip(ports: &[u16]) -> Result<Ipv4Addr> {
    for _ in 0..64 {
        let ip = random_loopback_ip();
        let all_free = ports
            .iter()
            .all(|&port| TcpListener::bind(SocketAddr::new(IpAddr::V4(ip), port)).is_ok());
        if all_free {
            return Ok(ip);
        }
    }
    Err(StackError::InvalidSpec(format!(
        "found no loopback IP with ports {ports:?} free in 64 tries"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_address_is_a_one_line_error_naming_the_component() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let error = check_addr_free(addr, "synapse agency (client)").unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("{addr} is already in use (needed by synapse agency (client))")
        );
        drop(listener);
        check_addr_free(addr, "x").unwrap();
    }

    #[test]
    fn random_ips_stay_in_the_test_range() {
        for _ in 0..100 {
            let [a, b, _, d] = random_loopback_ip().octets();
            assert_eq!(a, 127);
            assert!(b >= 100);
            assert!((1..=254).contains(&d));
        }
    }
}
