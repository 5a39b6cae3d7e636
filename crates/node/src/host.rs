//! The `Host` header of a request: one strict parser of `name[:port]` for every listener
//! of the daemon (the gateway's origins, the API's check against DNS rebinding), so no
//! two places read the same header differently.
//!
//! Policy: a `Host` is untrusted and may end up in a `Location` header or a link, so
//! anything that is not plainly a host name (letters, digits, `-`, `.`, `_`), a bracketed
//! IPv6 address, and an optional decimal port of at most 65535 is refused: no user info
//! (`localhost:@evil.example`), no path, no percent-encoding, no bare IPv6.
//!
//! No state, no locks.

use std::net::Ipv6Addr;

/// Longest `Host` value taken (a DNS name is at most 253 bytes, plus a port).
pub const MAX_HOST_LEN: usize = 300;

/// A `Host` header split into its name and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPort<'a> {
    /// The host name or IP address, IPv6 without its brackets; its case as sent.
    pub name: &'a str,
    /// The port, when the header gives one.
    pub port: Option<u16>,
}

/// Why a `Host` header is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("the Host header is empty")]
    Empty,
    #[error("the Host header is longer than {MAX_HOST_LEN} bytes")]
    TooLong,
    #[error("the port of Host {0:?} is not a number from 0 to 65535")]
    Port(String),
    #[error("Host {0:?} is not a host name or IP address")]
    Name(String),
}

/// Splits a `Host` header (`name`, `name:port`, `[v6]`, `[v6]:port`), checking both parts
/// (see the module's policy).
pub fn parse_host(host: &str) -> Result<HostPort<'_>, HostError> {
    if host.is_empty() {
        return Err(HostError::Empty);
    }
    if host.len() > MAX_HOST_LEN {
        return Err(HostError::TooLong);
    }
    let bad_name = || HostError::Name(host.to_string());
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad_name)?;
        v6.parse::<Ipv6Addr>().map_err(|_| bad_name())?;
        match after {
            "" => (v6, None),
            p => (v6, Some(p.strip_prefix(':').ok_or_else(bad_name)?)),
        }
    } else {
        let (name, port) = match host.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        };
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        if name.is_empty() || !name.chars().all(plain) {
            return Err(bad_name());
        }
        (name, port)
    };
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p).ok_or_else(|| HostError::Port(host.to_string()))?),
    };
    Ok(HostPort { name, port })
}

/// A decimal port: 1 to 5 digits, nothing else (no sign, no spaces), at most 65535.
fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(h: &str) -> (&str, Option<u16>) {
        let p = parse_host(h).unwrap_or_else(|e| panic!("{h}: {e}"));
        (p.name, p.port)
    }

    #[test]
    fn names_and_ports() {
        assert_eq!(ok("localhost"), ("localhost", None));
        assert_eq!(ok("localhost:8080"), ("localhost", Some(8080)));
        assert_eq!(ok("127.0.0.1:5001"), ("127.0.0.1", Some(5001)));
        assert_eq!(ok("[::1]:5001"), ("::1", Some(5001)));
        assert_eq!(ok("[::1]"), ("::1", None));
        assert_eq!(
            ok("bafyabc.btfs.localhost:8080"),
            ("bafyabc.btfs.localhost", Some(8080))
        );
        assert_eq!(ok("A-b_c.Example:0"), ("A-b_c.Example", Some(0)));
        assert_eq!(ok("x:65535"), ("x", Some(65535)));
    }

    #[test]
    fn refused() {
        for bad in [
            "",
            "localhost:@evil.example",
            "localhost:80@evil.example",
            "user@localhost:80",
            "localhost:",
            "localhost:+80",
            "localhost:65536",
            "localhost:080080",
            "localhost: 80",
            "localhost:80:81",
            "localhost/evil",
            "localhost:80/evil",
            "loc%61lhost",
            "::1",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[evil.example]:80",
            ":80",
            "a b",
        ] {
            assert!(parse_host(bad).is_err(), "{bad:?} was taken");
        }
        assert_eq!(
            parse_host(&"a".repeat(MAX_HOST_LEN + 1)),
            Err(HostError::TooLong)
        );
    }
}
