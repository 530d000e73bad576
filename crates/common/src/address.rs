//! `HOST[:PORT]` addresses as users write them, resolved to socket addresses.

use std::net::{SocketAddr, ToSocketAddrs};

/// An address that could not be understood or resolved.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// Not of the form `HOST[:PORT]`.
    #[error("'{0}' is not an address of the form HOST[:PORT]")]
    Malformed(String),
    /// The host name did not resolve.
    #[error("cannot resolve '{host}': {reason}")]
    Unresolved {
        /// The name given.
        host: String,
        /// What the resolver said.
        reason: String,
    },
}

/// Splits `HOST[:PORT]` (IPv6 as `[::1]:PORT`) into host and port, using `default_port` when
/// none is given.
pub fn split_host_port(text: &str, default_port: u16) -> Result<(String, u16), AddressError> {
    let malformed = || AddressError::Malformed(text.to_string());
    if text.is_empty() {
        return Err(malformed());
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(malformed)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| malformed())?,
            None if after.is_empty() => default_port,
            None => return Err(malformed()),
        };
        return Ok((host.to_string(), port));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            if host.is_empty() {
                return Err(malformed());
            }
            let port = if port.is_empty() {
                default_port
            } else {
                port.parse().map_err(|_| malformed())?
            };
            Ok((host.to_string(), port))
        }
        Some(_) => Ok((text.to_string(), default_port)),
        None => Ok((text.to_string(), default_port)),
    }
}

/// [`resolve`] from async code: a name is looked up on the blocking pool, since the system
/// resolver may wait on the network for seconds; an IP address is taken as it is, at once.
pub async fn resolve_async(text: &str, default_port: u16) -> Result<SocketAddr, AddressError> {
    let (host, port) = split_host_port(text, default_port)?;
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let name = host.clone();
    tokio::task::spawn_blocking(move || look_up(name, port))
        .await
        .unwrap_or_else(|e| {
            Err(AddressError::Unresolved {
                host,
                reason: e.to_string(),
            })
        })
}

/// Resolves `HOST[:PORT]` to one socket address (the first the resolver gives, IPv4 preferred).
pub fn resolve(text: &str, default_port: u16) -> Result<SocketAddr, AddressError> {
    let (host, port) = split_host_port(text, default_port)?;
    look_up(host, port)
}

/// Asks the system resolver for `host`; the first address it gives, IPv4 preferred.
fn look_up(host: String, port: u16) -> Result<SocketAddr, AddressError> {
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| AddressError::Unresolved {
            host: host.clone(),
            reason: e.to_string(),
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or(AddressError::Unresolved {
            host,
            reason: "no addresses".to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_are_split_with_defaults() {
        assert_eq!(split_host_port("a", 1).unwrap(), ("a".into(), 1));
        assert_eq!(split_host_port("a:5", 1).unwrap(), ("a".into(), 5));
        assert_eq!(split_host_port("a:", 1).unwrap(), ("a".into(), 1));
        assert_eq!(split_host_port("[::1]:7", 1).unwrap(), ("::1".into(), 7));
        assert_eq!(split_host_port("[::1]", 1).unwrap(), ("::1".into(), 1));
        assert!(split_host_port("a:x", 1).is_err());
        assert!(split_host_port("", 1).is_err());
        assert!(split_host_port(":5", 1).is_err());
    }

    #[test]
    fn localhost_resolves_to_loopback() {
        let addr = resolve("localhost:9", 1).unwrap();
        assert!(addr.ip().is_loopback());
        assert_eq!(addr.port(), 9);
    }

    #[tokio::test]
    async fn async_resolution_takes_addresses_as_they_are_and_looks_names_up() {
        let addr = resolve_async("[::1]:7", 1).await.unwrap();
        assert_eq!(addr, "[::1]:7".parse().unwrap());
        let addr = resolve_async("10.1.2.3", 4).await.unwrap();
        assert_eq!(addr, "10.1.2.3:4".parse().unwrap());
        let addr = resolve_async("localhost:9", 1).await.unwrap();
        assert!(addr.ip().is_loopback());
        assert!(resolve_async("a:x", 1).await.is_err());
    }
}
