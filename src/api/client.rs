//! The client's address, for per-address limits.
//!
//! It is the address of the peer that connected, unless that peer is one of
//! the configured trusted proxies (`POSD_TRUSTED_PROXIES`, none by default):
//! then it is the last address in `X-Forwarded-For` that is not itself a
//! trusted proxy (earlier entries are whatever the client wrote), or
//! `X-Real-IP` when there is no `X-Forwarded-For`. A header from anyone
//! else is ignored, so a client cannot choose the address it is limited by.

use std::net::IpAddr;

use ipnet::IpNet;
use rocket::{
    Request,
    request::{FromRequest, Outcome},
};

use crate::{app::App, error::ApiError};

/// The client's address, when known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub Option<IpAddr>);

/// The client address of a request from `peer` with these headers.
pub fn resolve(
    peer: Option<IpAddr>,
    trusted: &[IpNet],
    forwarded_for: Option<&str>,
    real_ip: Option<&str>,
) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer?;
    if !is_trusted(&peer) {
        return Some(peer);
    }
    if let Some(list) = forwarded_for {
        // From the right: the proxies we trust appended their peers.
        let mut hops = list.rsplit(',').map(str::trim);
        return Some(
            hops.find_map(|h| h.parse::<IpAddr>().ok().filter(|ip| !is_trusted(ip)))
                .unwrap_or(peer),
        );
    }
    real_ip.and_then(|r| r.trim().parse().ok()).or(Some(peer))
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for ClientAddr {
    type Error = ApiError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ApiError> {
        let trusted = req
            .rocket()
            .state::<App>()
            .map_or(&[][..], |app| app.settings.trusted_proxies.as_slice());
        let h = req.headers();
        Outcome::Success(ClientAddr(resolve(
            req.remote().map(|a| a.ip()),
            trusted,
            h.get_one("X-Forwarded-For"),
            h.get_one("X-Real-IP"),
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn headers_count_only_from_trusted_proxies() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let client = Some(ip("203.0.113.7"));
        // Not a proxy: its headers are ignored.
        assert_eq!(
            resolve(client, &proxies, Some("1.2.3.4"), Some("5.6.7.8")),
            client
        );
        assert_eq!(resolve(client, &[], None, Some("5.6.7.8")), client);
        // A trusted proxy: the last untrusted hop, whatever the client prepended.
        assert_eq!(
            resolve(
                Some(ip("10.0.0.2")),
                &proxies,
                Some("6.6.6.6, 198.51.100.9, 10.0.0.5"),
                None
            ),
            Some(ip("198.51.100.9"))
        );
        assert_eq!(
            resolve(Some(ip("10.0.0.2")), &proxies, None, Some("198.51.100.9")),
            Some(ip("198.51.100.9"))
        );
        assert_eq!(
            resolve(Some(ip("10.0.0.2")), &proxies, Some("garbage"), None),
            Some(ip("10.0.0.2"))
        );
    }
}
