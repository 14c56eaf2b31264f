//! Noticing a proxy or pooler between posd and PostgreSQL.
//!
//! posd's queries are prepared statements that Diesel names
//! `__diesel_stmt_<n>` and keeps per connection. A pooler in transaction mode
//! (PgBouncer before 1.21 with `pool_mode = transaction`) gives each
//! transaction whichever server connection is free, where that name is
//! unknown or names another statement (`bind message supplies 2 parameters,
//! but prepared statement "__diesel_stmt_1" requires 4`). A session-mode
//! pooler keeps one server connection per client and is safe. With
//! `POSD_TRANSACTION_POOLER=true` the serving pools keep no statement and
//! set nothing for the session (`crate::db::pool`), and this check is not
//! made: the operator said what is in between.
//!
//! PostgreSQL reports the address and port it accepted a connection on
//! (`inet_server_addr()`, `inet_server_port()`). When they differ from the
//! host and port of the URL posd connected to, something forwarded the
//! connection: a pooler, a proxy or a port mapping. posd cannot tell which,
//! so it logs one warning and goes on.

use std::{
    collections::HashSet,
    net::IpAddr,
    sync::{LazyLock, Mutex},
};

use diesel::{
    PgConnection, QueryableByName, RunQueryDsl,
    sql_types::{Integer, Nullable, Text},
};
use secrecy::{ExposeSecret, SecretString};

/// The PostgreSQL default port, which a URL without one means.
const DEFAULT_PORT: u16 = 5432;

/// Where the client meant to connect, from its URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    /// A Unix-domain socket (`?host=/run/postgresql`, or no host).
    Socket,
    /// TCP to a host name or an address, and a port.
    Tcp { host: String, port: u16 },
}

fn target(url: &str) -> Option<Target> {
    let u = url::Url::parse(url).ok()?;
    let query_host = u
        .query_pairs()
        .find(|(k, _)| k == "host")
        .map(|(_, v)| v.into_owned());
    let query_port = u
        .query_pairs()
        .find(|(k, _)| k == "port")
        .and_then(|(_, v)| v.parse().ok());
    let host = match query_host {
        Some(h) => h,
        None => u.host_str().unwrap_or("").to_string(),
    };
    // A socket directory: `?host=/run/postgresql`, or percent-encoded in
    // the authority (`postgres://%2Frun%2Fpostgresql/posd`).
    if host.is_empty() || host.starts_with('/') || host.to_ascii_lowercase().starts_with("%2f") {
        return Some(Target::Socket);
    }
    if host.contains(',') {
        // Several hosts: libpq picks one; nothing to compare with.
        return None;
    }
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = query_port.or(u.port()).unwrap_or(DEFAULT_PORT);
    Some(Target::Tcp { host, port })
}

/// Why the server's view of a connection differs from its URL's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// The URL names one port, the server accepted the connection on another.
    Port { url: u16, server: i32 },
    /// The URL names an address, the server accepted the connection on another.
    Address { url: String, server: String },
    /// The URL names a TCP host, the server saw a Unix-domain socket.
    SocketOnServer { url_port: u16 },
    /// The URL names a Unix-domain socket, the server saw TCP.
    TcpOnServer { server_port: i32 },
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::Port { url, server } => write!(
                f,
                "the URL names port {url} but the server accepted the connection on port {server}"
            ),
            Mismatch::Address { url, server } => write!(
                f,
                "the URL names address {url} but the server accepted the connection on {server}"
            ),
            Mismatch::SocketOnServer { url_port } => write!(
                f,
                "the URL names TCP port {url_port} but the server accepted the connection on a Unix-domain socket"
            ),
            Mismatch::TcpOnServer { server_port } => write!(
                f,
                "the URL names a Unix-domain socket but the server accepted the connection on TCP port {server_port}"
            ),
        }
    }
}

/// Compares the URL posd connected with to what the server reports
/// (`host(inet_server_addr())`, `inet_server_port()`; both NULL on a
/// Unix-domain socket). `None` when they agree, or when the URL gives
/// nothing to compare with. A host name is not resolved: only its port is
/// compared.
pub fn compare(url: &str, server_addr: Option<&str>, server_port: Option<i32>) -> Option<Mismatch> {
    match (target(url)?, server_port) {
        (Target::Socket, None) => None,
        (Target::Socket, Some(p)) => Some(Mismatch::TcpOnServer { server_port: p }),
        (Target::Tcp { port, .. }, None) => Some(Mismatch::SocketOnServer { url_port: port }),
        (Target::Tcp { host, port }, Some(p)) => {
            if i32::from(port) != p {
                return Some(Mismatch::Port {
                    url: port,
                    server: p,
                });
            }
            let url_ip = host.parse::<IpAddr>().ok()?.to_canonical();
            let server_ip = server_addr?.parse::<IpAddr>().ok()?.to_canonical();
            if url_ip.is_unspecified() || url_ip == server_ip {
                None
            } else {
                Some(Mismatch::Address {
                    url: url_ip.to_string(),
                    server: server_ip.to_string(),
                })
            }
        }
    }
}

#[derive(QueryableByName)]
struct ServerSide {
    #[diesel(sql_type = Nullable<Text>)]
    addr: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    port: Option<i32>,
}

/// Asks the server where it accepted `conn` and compares with `url`.
pub fn check(conn: &mut PgConnection, url: &SecretString) -> Option<Mismatch> {
    let side: ServerSide =
        diesel::sql_query("SELECT host(inet_server_addr()) AS addr, inet_server_port() AS port")
            .get_result(conn)
            .ok()?;
    compare(url.expose_secret(), side.addr.as_deref(), side.port)
}

/// The warning for a connection of `what` (a setting's name, or which
/// tenant database) that went through something else than PostgreSQL.
pub fn warning(what: &str, mismatch: &Mismatch) -> String {
    format!(
        "{what}: {mismatch}: a proxy, a pooler or a port mapping sits between posd and PostgreSQL. \
         Behind a transaction-mode pooler (PgBouncer's pool_mode=transaction) set \
         POSD_TRANSACTION_POOLER=true and POSD_LISTEN_DATABASE_URL, or posd's prepared \
         statements run on the wrong server connections; a session-mode pooler needs nothing"
    )
}

/// Runs [`check`] and logs one WARN line on a mismatch; nothing else, and
/// never the URL.
pub fn warn_if_proxied(conn: &mut PgConnection, url: &SecretString, what: &str) {
    if let Some(m) = check(conn, url) {
        tracing::warn!("{}", warning(what, &m));
    }
}

/// As [`warn_if_proxied`], at most once per host and port for the life of
/// the process (for tenant pools, built and rebuilt many times).
pub fn warn_once_per_server(conn: &mut PgConnection, url: &SecretString, what: &str) {
    static SEEN: LazyLock<Mutex<HashSet<Target>>> = LazyLock::new(Default::default);
    let Some(t) = target(url.expose_secret()) else {
        return;
    };
    let first = SEEN.lock().is_ok_and(|mut s| s.insert(t));
    if first {
        warn_if_proxied(conn, url, what);
    }
}

/// With `POSD_TRANSACTION_POOLER`, posd sets no session setting on the
/// pooled connections (it would stay with the server connection for the
/// pooler's next client), so `POSD_STATEMENT_TIMEOUT` is not applied by
/// posd: logs one WARN line when the role (or the pooler) sets no timeout
/// either.
pub fn check_pooled_session(conn: &mut PgConnection, wanted: std::time::Duration) {
    #[derive(QueryableByName)]
    struct Timeout {
        #[diesel(sql_type = Text)]
        ms: String,
    }
    if wanted.is_zero() {
        return;
    }
    let found = diesel::sql_query(
        "SELECT (EXTRACT(epoch FROM current_setting('statement_timeout')::interval) * 1000)::bigint::text AS ms",
    )
    .get_result::<Timeout>(conn);
    if found.is_ok_and(|t| t.ms == "0") {
        tracing::warn!(
            "POSD_TRANSACTION_POOLER: posd sets no statement_timeout through a transaction-mode pooler, and the app role has none: set it on the role (ALTER ROLE <app role> SET statement_timeout = '{}ms') or in the pooler",
            wanted.as_millis()
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use super::{Mismatch, Target, compare, target};

    #[test]
    fn the_same_port_and_address_is_direct() {
        let url = "postgres://app:secret@127.0.0.1:5433/posd";
        assert_eq!(compare(url, Some("127.0.0.1"), Some(5433)), None);
    }

    #[test]
    fn a_url_without_a_port_means_5432() {
        let url = "postgres://app:secret@127.0.0.1/posd";
        assert_eq!(compare(url, Some("127.0.0.1"), Some(5432)), None);
        assert_eq!(
            compare(url, Some("127.0.0.1"), Some(6432)),
            Some(Mismatch::Port {
                url: 5432,
                server: 6432
            })
        );
    }

    #[test]
    fn another_port_on_the_server_is_a_proxy() {
        // PgBouncer on 6432 in front of PostgreSQL on 5432.
        let url = "postgres://app:secret@db.example:6432/posd";
        assert_eq!(
            compare(url, Some("10.0.0.5"), Some(5432)),
            Some(Mismatch::Port {
                url: 6432,
                server: 5432
            })
        );
    }

    #[test]
    fn a_host_name_is_not_resolved() {
        let url = "postgres://app:secret@db.example:5432/posd";
        assert_eq!(compare(url, Some("10.0.0.5"), Some(5432)), None);
    }

    #[test]
    fn another_address_on_the_same_port_is_a_proxy() {
        let url = "postgres://app:secret@10.0.0.9:5432/posd";
        assert_eq!(
            compare(url, Some("10.0.0.5"), Some(5432)),
            Some(Mismatch::Address {
                url: "10.0.0.9".into(),
                server: "10.0.0.5".into()
            })
        );
    }

    #[test]
    fn ipv6_and_mapped_addresses_compare_as_addresses() {
        assert_eq!(
            compare("postgres://a:b@[::1]:5432/posd", Some("::1"), Some(5432)),
            None
        );
        assert_eq!(
            compare(
                "postgres://a:b@127.0.0.1:5432/posd",
                Some("::ffff:127.0.0.1"),
                Some(5432)
            ),
            None
        );
    }

    #[test]
    fn socket_urls_are_recognised() {
        for url in [
            "postgres:///posd?host=/run/postgresql",
            "postgres://app:secret@%2Frun%2Fpostgresql/posd",
            "postgres://app:secret@localhost/posd?host=/run/postgresql",
        ] {
            assert_eq!(target(url), Some(Target::Socket), "{url}");
        }
    }

    #[test]
    fn sockets_on_both_sides_compare_equal() {
        assert_eq!(
            compare("postgres:///posd?host=/run/postgresql", None, None),
            None
        );
    }

    #[test]
    fn a_socket_on_one_side_only_is_a_proxy() {
        assert_eq!(
            compare("postgres://a:b@127.0.0.1:6432/posd", None, None),
            Some(Mismatch::SocketOnServer { url_port: 6432 })
        );
        assert_eq!(
            compare(
                "postgres://a:b@%2Frun%2Fpgbouncer/posd",
                Some("127.0.0.1"),
                Some(5432)
            ),
            Some(Mismatch::TcpOnServer { server_port: 5432 })
        );
    }

    #[test]
    fn port_and_host_in_the_query_win() {
        let url = "postgres://a:b@127.0.0.1:5432/posd?host=127.0.0.1&port=6432";
        assert_eq!(
            compare(url, Some("127.0.0.1"), Some(6432)),
            None,
            "libpq takes the query's port"
        );
    }

    #[test]
    fn nothing_to_compare_is_no_warning() {
        assert_eq!(compare("not a url", Some("127.0.0.1"), Some(1)), None);
        assert_eq!(
            compare(
                "postgres://a:b@h1:5432,h2:5432/posd",
                Some("10.0.0.1"),
                Some(6432)
            ),
            None
        );
    }

    #[test]
    fn the_warning_names_the_pooler_mode_and_no_password() {
        let m = compare(
            "postgres://app:hunter2@127.0.0.1:6432/posd",
            Some("127.0.0.1"),
            Some(5432),
        )
        .expect("a mismatch");
        let line = super::warning("POSD_APP_DATABASE_URL", &m);
        assert!(line.contains("transaction-mode pooler"), "{line}");
        assert!(line.contains("session-mode"), "{line}");
        assert!(line.contains("6432") && line.contains("5432"), "{line}");
        assert!(!line.contains("hunter2"), "{line}");
    }
}
