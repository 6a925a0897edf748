//! Addresses a gateway must not be steered to: link-local ranges and the
//! cloud metadata services, whose answers hold instance credentials. And
//! what a failed outbound call is told by.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Metadata services reachable by name.
const METADATA_HOSTS: &[&str] = &[
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.com",
    "instance-data",
    "instance-data.ec2.internal",
];

/// The innermost cause of a failed call, which names what went wrong
/// (refused, DNS, an untrusted certificate) where the outer errors only say
/// that connecting failed.
pub fn innermost_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

pub fn is_link_local_or_metadata(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_link_local() // 169.254.0.0/16: AWS, GCP, Azure, OpenStack metadata
                || v4 == Ipv4Addr::new(100, 100, 100, 200) // Alibaba Cloud metadata
        }
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80 // fe80::/10
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) // AWS IMDS over IPv6
                || v6.to_ipv4_mapped().is_some_and(|v4| is_link_local_or_metadata(IpAddr::V4(v4)))
        }
    }
}

/// A URL host (a name, or an address, IPv6 in brackets) that names such a place.
pub fn is_forbidden_host(host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.');
    match host.parse::<IpAddr>() {
        Ok(ip) => is_link_local_or_metadata(ip),
        Err(_) => METADATA_HOSTS.iter().any(|m| host.eq_ignore_ascii_case(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_the_metadata_addresses() {
        for host in [
            "169.254.169.254",
            "[fe80::1]",
            "[fd00:ec2::254]",
            "100.100.100.200",
            "metadata.google.internal.",
            "[::ffff:169.254.169.254]",
        ] {
            assert!(is_forbidden_host(host), "{host}");
        }
        for host in [
            "api.openai.com",
            "127.0.0.1",
            "10.0.0.5",
            "[::1]",
            "192.168.1.10",
        ] {
            assert!(!is_forbidden_host(host), "{host}");
        }
    }
}
