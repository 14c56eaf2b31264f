//! Merchants found by their address: the request's host names the
//! platform, a merchant, or nothing posd serves.
//!
//! - `<slug>.<base domain>` (exactly one label before `POSD_BASE_DOMAIN`)
//!   names the merchant with that slug;
//! - a verified custom domain (`merchant_domains`) names its merchant;
//! - the base domain itself, IP literals, `localhost` and a request without
//!   a host name the platform (no merchant);
//! - any other host is unknown. Without a base domain an unknown host is
//!   the platform: deployments that never set one keep working.
//!
//! Hosts are compared lower-cased, without a port or a trailing dot, and
//! exactly (no wildcard beyond the one slug label). What a lookup found is
//! cached like placements: the triggers on `merchant_domains` and
//! `merchants` (a merchant created or deleted, a slug changed) NOTIFY
//! `posd_hosts` and every instance drops the whole cache
//! ([`crate::invalidation`]); the TTL is the fallback, and nothing cached is
//! trusted while the LISTEN connection is down.

use std::{
    net::{IpAddr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

use super::{cache::NotifiedCache, placement::Directory};
use crate::{config::is_dns_name, db::ids::MerchantId};

/// The channel the triggers notify on.
pub const CHANNEL: &str = "posd_hosts";

/// Cached hosts kept at most; past it the cache starts over, so that
/// requests with made-up hosts cannot grow it without bound.
const MAX_ENTRIES: usize = 10_000;

/// The merchant a host names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMerchant {
    pub id: MerchantId,
    pub slug: Arc<str>,
}

/// What a request's host names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostTarget {
    Platform,
    Merchant(HostMerchant),
    Unknown,
}

/// A host as read, before any lookup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    Platform,
    /// `<slug>.<base domain>`.
    Slug(String),
    /// A name outside the base domain: a custom domain, if one is verified.
    Domain(String),
    /// Malformed, or more than one label under the base domain.
    Unknown,
}

fn is_port(s: &str) -> bool {
    (1..=5).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// What the host `raw` (a `Host` header: `name[:port]`, `[v6]:port`)
/// names, given the base domain (lower-case).
pub fn classify(raw: Option<&str>, base: Option<&str>) -> Address {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Address::Platform;
    };
    if let Some(rest) = raw.strip_prefix('[') {
        let literal = rest.split_once(']').is_some_and(|(ip, port)| {
            ip.parse::<Ipv6Addr>().is_ok()
                && (port.is_empty() || port.strip_prefix(':').is_some_and(is_port))
        });
        return if literal {
            Address::Platform
        } else {
            Address::Unknown
        };
    }
    if raw.parse::<IpAddr>().is_ok() {
        return Address::Platform;
    }
    let name = match raw.rsplit_once(':') {
        Some((name, port)) if is_port(port) => name,
        Some(_) => return Address::Unknown,
        None => raw,
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name == "localhost" || name.parse::<IpAddr>().is_ok() {
        return Address::Platform;
    }
    if let Some(base) = base {
        if name == base {
            return Address::Platform;
        }
        if let Some(label) = name
            .strip_suffix(base)
            .and_then(|head| head.strip_suffix('.'))
        {
            return if !label.contains('.') && is_dns_name(label) {
                Address::Slug(label.to_string())
            } else {
                Address::Unknown
            };
        }
    }
    if is_dns_name(&name) {
        Address::Domain(name)
    } else {
        Address::Unknown
    }
}

/// Whether `domain` is under the base domain (or is it): a custom domain
/// may not be, those hosts are the slugs'.
pub fn under_base(domain: &str, base: &str) -> bool {
    domain == base
        || domain
            .strip_suffix(base)
            .is_some_and(|head| head.ends_with('.'))
}

/// Per-process cache of what hosts name.
pub struct Hosts {
    base: Option<String>,
    pub cache: NotifiedCache<Address, HostTarget>,
}

impl Hosts {
    pub fn new(base: Option<String>, ttl: Duration, directory: Arc<Directory>) -> Self {
        Hosts {
            base,
            cache: NotifiedCache::new(ttl, directory, MAX_ENTRIES),
        }
    }

    /// `POSD_BASE_DOMAIN`.
    pub fn base(&self) -> Option<&str> {
        self.base.as_deref()
    }

    /// What the host `raw` names before any lookup.
    pub fn address(&self, raw: Option<&str>) -> Address {
        classify(raw, self.base())
    }

    /// What a host that names no merchant is: unknown, or the platform
    /// when there is no base domain.
    pub fn nothing(&self) -> HostTarget {
        if self.base.is_some() {
            HostTarget::Unknown
        } else {
            HostTarget::Platform
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Address, classify, under_base};

    fn slug(s: &str) -> Address {
        Address::Slug(s.into())
    }

    fn domain(s: &str) -> Address {
        Address::Domain(s.into())
    }

    #[test]
    fn hosts_are_read_lower_cased_without_port_or_trailing_dot() {
        let base = Some("pos.example.com");
        for (raw, want) in [
            (None, Address::Platform),
            (Some(""), Address::Platform),
            (Some("pos.example.com"), Address::Platform),
            (Some("POS.Example.COM.:443"), Address::Platform),
            (Some("localhost:8000"), Address::Platform),
            (Some("127.0.0.1:8000"), Address::Platform),
            (Some("10.1.2.3"), Address::Platform),
            (Some("[::1]:8000"), Address::Platform),
            (Some("[::1]"), Address::Platform),
            (Some("::1"), Address::Platform),
            (Some("corner-cafe.pos.example.com"), slug("corner-cafe")),
            (
                Some("Corner-Cafe.POS.example.com.:8443"),
                slug("corner-cafe"),
            ),
            (Some("a.b.pos.example.com"), Address::Unknown),
            (Some("xpos.example.com"), domain("xpos.example.com")),
            (Some("Shop.Example.org."), domain("shop.example.org")),
            (Some("shop.example.org:x"), Address::Unknown),
            (Some("shop_1.example.org"), Address::Unknown),
            (Some("[::1"), Address::Unknown),
            (Some("a..b"), Address::Unknown),
        ] {
            assert_eq!(classify(raw, base), want, "{raw:?}");
        }
        // Without a base domain, every name is a possible custom domain.
        assert_eq!(
            classify(Some("corner-cafe.pos.example.com"), None),
            domain("corner-cafe.pos.example.com")
        );
        assert_eq!(classify(Some("localhost"), None), Address::Platform);
    }

    #[test]
    fn under_the_base_domain() {
        assert!(under_base("pos.example.com", "pos.example.com"));
        assert!(under_base("a.pos.example.com", "pos.example.com"));
        assert!(under_base("a.b.pos.example.com", "pos.example.com"));
        assert!(!under_base("xpos.example.com", "pos.example.com"));
        assert!(!under_base("example.com", "pos.example.com"));
    }
}
