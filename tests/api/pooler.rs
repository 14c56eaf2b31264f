//! posd notices when something forwards its connections to PostgreSQL (a
//! pooler, a proxy), and says once at boot what a transaction-mode pooler
//! needs. The forwarder here is a plain TCP relay on another port.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use diesel::{Connection, PgConnection};
use posd::db::pooler::{self, Mismatch};
use secrecy::SecretString;

use crate::common::{Server, TestDb, boot_with};

/// Relays every connection on a port of its own to `to`; returns that port.
fn forwarder(to: (String, u16)) -> u16 {
    let relay = crate::servers::Relay::to(to.0, to.1);
    let port = relay.port;
    // Kept for the rest of the test run.
    std::mem::forget(relay);
    port
}

/// The app-role URL of `db`, and the same URL through a forwarder.
fn direct_and_forwarded(db: &TestDb) -> (String, String) {
    let direct = Server::get().app_url(&db.name);
    let mut u = url::Url::parse(&direct).unwrap();
    let host = u
        .host_str()
        .expect("the test server is reached over TCP")
        .to_string();
    let port = u.port().unwrap_or(5432);
    u.set_port(Some(forwarder((host, port)))).unwrap();
    (direct, u.to_string())
}

#[test]
fn a_forwarded_connection_is_noticed_and_a_direct_one_is_not() {
    let db = TestDb::new();
    let (direct, forwarded) = direct_and_forwarded(&db);

    let mut conn = PgConnection::establish(&direct).unwrap();
    assert_eq!(
        pooler::check(&mut conn, &SecretString::from(direct.clone())),
        None
    );

    let mut conn = PgConnection::establish(&forwarded).unwrap();
    let found = pooler::check(&mut conn, &SecretString::from(forwarded.clone()));
    let server_port = url::Url::parse(&direct).unwrap().port().unwrap_or(5432);
    let relay_port = url::Url::parse(&forwarded).unwrap().port().unwrap();
    assert_eq!(
        found,
        Some(Mismatch::Port {
            url: relay_port,
            server: i32::from(server_port),
        })
    );
}

/// Collects what is logged on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn boot_warns_once_behind_a_forwarder_without_the_password() {
    let db = TestDb::new();
    let (direct, forwarded) = direct_and_forwarded(&db);
    let password = url::Url::parse(&direct)
        .unwrap()
        .password()
        .unwrap()
        .to_string();

    let logged = |app_url: &str| {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || writer.clone())
            .finish();
        let app = tracing::subscriber::with_default(subscriber, || {
            boot_with(&db.name, |s| s.app_database_url = app_url.into())
        })
        .expect("boot");
        app.pools.close_all();
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    };

    let quiet = logged(&direct);
    assert!(!quiet.contains("pooler"), "{quiet}");

    let warned = logged(&forwarded);
    let lines: Vec<&str> = warned.lines().filter(|l| l.contains("pooler")).collect();
    assert_eq!(lines.len(), 1, "{warned}");
    assert!(lines[0].contains("WARN"), "{warned}");
    assert!(lines[0].contains("POSD_APP_DATABASE_URL"), "{warned}");
    assert!(lines[0].contains("transaction-mode pooler"), "{warned}");
    assert!(
        lines[0].contains("POSD_TRANSACTION_POOLER=true"),
        "{warned}"
    );
    assert!(!warned.contains(&password), "the password reached the log");
}
