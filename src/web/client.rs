//! Who is on the other end: the peer address, or the address a trusted proxy forwarded.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The client's address. `X-Forwarded-For` is read only when the peer is a trusted proxy,
/// from the right, skipping trusted hops; an entry that does not parse ends the walk, so a
/// client can never smuggle an address past the last proxy.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = canonical(peer.ip());
    if !is_trusted(&client) {
        return client;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>().map(canonical) else { break };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append("x-forwarded-for", value.parse().unwrap());
        }
        map
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let spoofed = headers(&["203.0.113.9"]);
        assert_eq!(client_ip(peer("198.51.100.1"), &spoofed, &trusted).to_string(), "198.51.100.1");
        assert_eq!(client_ip(peer("10.1.2.3"), &spoofed, &trusted).to_string(), "203.0.113.9");
        // The client's own claim sits left of what the proxy appended: the rightmost untrusted wins.
        let chained = headers(&["6.6.6.6, 203.0.113.9", "10.9.9.9"]);
        assert_eq!(client_ip(peer("10.1.2.3"), &chained, &trusted).to_string(), "203.0.113.9");
        // Garbage stops the walk at the last good hop.
        let garbage = headers(&["6.6.6.6, not-an-ip"]);
        assert_eq!(client_ip(peer("10.1.2.3"), &garbage, &trusted).to_string(), "10.1.2.3");
        assert_eq!(client_ip(peer("10.1.2.3"), &HeaderMap::new(), &trusted).to_string(), "10.1.2.3");
        assert_eq!(client_ip(peer("::ffff:198.51.100.1"), &spoofed, &[]).to_string(), "198.51.100.1");
    }
}
