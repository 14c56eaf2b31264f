//! posd through a real PgBouncer in transaction mode (Debian's `pgbouncer`,
//! installed by `scripts/deps`), with fewer server connections than posd
//! has pooled connections, so that server connections are shared between
//! posd's connections and between merchants: with
//! `POSD_TRANSACTION_POOLER=true` every request answers right, each
//! merchant sees its own rows only, and a server connection left by a
//! bound transaction shows nothing to an unbound one.

use std::{
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use diesel::{Connection, PgConnection, RunQueryDsl};
use rocket::http::Status;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{API, Merchant, Server, TestApp, TestDb, api, count, settings_from_keys};
use posd::tenancy::Tier;

/// A private PgBouncer in front of the test server.
pub(crate) struct Bouncer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

fn pgbouncer() -> PathBuf {
    ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("pgbouncer"))
                    .find(|p| p.exists())
            })
        })
        .expect("pgbouncer is not installed: run scripts/deps")
}

impl Bouncer {
    /// Transaction pooling, `server_conns` server connections per database
    /// and user; clients log in with the app role's password.
    pub(crate) fn start(server_conns: u32) -> Bouncer {
        let server = url::Url::parse(&Server::get().app_url("postgres")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("posd-bouncer-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let users = dir.join("users.txt");
        std::fs::write(
            &users,
            format!(
                "\"{}\" \"{}\"\n",
                server.username(),
                server.password().unwrap()
            ),
        )
        .unwrap();
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n* = host={} port={}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
                 unix_socket_dir =\nauth_type = plain\nauth_file = {}\npool_mode = transaction\n\
                 default_pool_size = {server_conns}\nmax_client_conn = 500\n\
                 ignore_startup_parameters = extra_float_digits,options\n\
                 log_connections = 0\nlog_disconnections = 0\n",
                server.host_str().unwrap(),
                server.port().unwrap_or(5432),
                users.display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(pgbouncer());
        // PgBouncer refuses to run as root.
        if running_as_root() {
            use std::os::unix::fs::PermissionsExt;
            for p in [&dir, &users, &ini] {
                let mode = if p.is_dir() { 0o755 } else { 0o644 };
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            cmd.args(["-u", "postgres"]);
        }
        let child = cmd
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Bouncer { child, port, dir }
    }

    /// The app role's URL of database `db` through this PgBouncer.
    fn app_url(&self, db: &str) -> String {
        let mut u = url::Url::parse(&Server::get().app_url(db)).unwrap();
        u.set_port(Some(self.port)).unwrap();
        u.to_string()
    }

    /// posd over a new test database, serving through this PgBouncer in
    /// pooler-safe mode (LISTEN, the owner and dedicated databases direct),
    /// its settings then changed by `configure`.
    pub(crate) async fn app(
        &self,
        configure: impl FnOnce(&mut posd::config::Settings) + Send + 'static,
    ) -> TestApp {
        let db = TestDb::new();
        let (pooled, direct) = (self.app_url(&db.name), Server::get().app_url(&db.name));
        TestApp::on_with(db, move |s| {
            s.transaction_pooler = true;
            s.app_database_url = pooled.into();
            s.listen_database_url = Some(direct.into());
            configure(s);
        })
        .await
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_transaction_pooler_needs_a_direct_listen_url() {
    let db = TestDb::new();
    let refused = settings_from_keys(&db.name, &[("transaction_pooler", json!(true))])
        .expect_err("accepted without a LISTEN URL");
    assert!(refused.contains("POSD_LISTEN_DATABASE_URL"), "{refused}");
    let direct = Server::get().app_url(&db.name);
    let ok = settings_from_keys(
        &db.name,
        &[
            ("transaction_pooler", json!(true)),
            ("listen_database_url", json!(direct)),
        ],
    )
    .expect("accepted with one");
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(ok.listen_url()),
        direct
    );
}

/// What one client did: requests answered, and the skus it created.
#[derive(Default)]
struct Done {
    answered: usize,
    failures: Vec<String>,
    created: Vec<(usize, String)>,
}

async fn client(t: &TestApp, merchants: &[Merchant], worker: usize, rounds: usize) -> Done {
    let mut done = Done::default();
    for round in 0..rounds {
        let (i, m) = (
            (worker + round) % merchants.len(),
            &merchants[(worker + round) % merchants.len()],
        );
        let sku = format!("{}-{worker}-{round}", m.slug);
        let (s, body) = t
            .post(
                api!("/products"),
                &m.token,
                json!({ "sku": sku, "name": "pooled", "priceMinor": 100 }),
            )
            .await;
        if s == Status::Created {
            done.created.push((i, sku));
        } else {
            done.failures.push(format!("create {s}: {body}"));
        }
        let (s, body) = t.get(api!("/products?limit=200"), &m.token).await;
        if s != Status::Ok {
            done.failures.push(format!("list {s}: {body}"));
        }
        done.answered += 2;
    }
    done
}

#[rocket::async_test]
async fn posd_serves_through_pgbouncer_in_transaction_mode() {
    // 2 server connections for posd's 8.
    let bouncer = Bouncer::start(2);
    let t = bouncer.app(|s| s.pool_size = 8).await;
    let mut merchants = Vec::new();
    for i in 0..3 {
        merchants.push(t.shared_merchant(&format!("bounced-{i}")).await);
    }
    merchants.push(t.merchant("bounced-schema", Tier::Schema).await);
    for m in &merchants {
        t.set_plan(m.id, json!({ "plan": "enterprise" })).await;
    }

    let clients: Vec<_> = (0..8)
        .map(|w| {
            let (t, merchants) = (&t, &merchants);
            async move { client(t, merchants, w, 12).await }
        })
        .collect();
    let done = futures_util::future::join_all(clients).await;
    let failures: Vec<&String> = done.iter().flat_map(|d| &d.failures).collect();
    assert!(
        failures.is_empty(),
        "{} failures, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(done.iter().map(|d| d.answered).sum::<usize>(), 8 * 12 * 2);

    // Each merchant lists exactly what it created.
    for (i, m) in merchants.iter().enumerate() {
        let (s, body) = t.get(api!("/products?limit=200"), &m.token).await;
        assert_eq!(s, Status::Ok);
        let mut listed: Vec<String> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["sku"].as_str().unwrap().to_string())
            .collect();
        let mut mine: Vec<String> = done
            .iter()
            .flat_map(|d| &d.created)
            .filter(|(j, _)| *j == i)
            .map(|(_, s)| s.clone())
            .collect();
        listed.sort();
        mine.sort();
        assert_eq!(listed, mine, "{}", m.slug);
    }

    // The write path (idempotency lock, prepared hot statements) too.
    for m in &merchants {
        let p = t
            .stocked_product(m, &format!("{}-sale", m.slug), 250, 0, Some(5))
            .await;
        let sale: Value = t.sell(m, &p, 2, 500).await;
        assert_eq!(sale["totalMinor"], 500, "{sale}");
    }

    // A server connection that served bound transactions shows nothing to
    // an unbound one, through the same PgBouncer.
    let mut unbound = PgConnection::establish(&bouncer.app_url(&t.db.name)).unwrap();
    let schema = posd::tenancy::tenant_schema_name(merchants[3].id);
    for _ in 0..4 {
        let theirs = count(
            &mut unbound,
            &format!("SELECT count(*) AS n FROM \"{schema}\".products"),
        )
        .unwrap();
        assert_eq!(
            theirs, 0,
            "an unbound connection read a schema tenant's rows"
        );
        let seen = count(
            &mut unbound,
            "SELECT count(*) AS n FROM tenant_shared.products",
        )
        .unwrap();
        assert_eq!(seen, 0, "an unbound connection read tenant rows");
        let wrote = diesel::sql_query(format!(
            "INSERT INTO tenant_shared.categories (merchant_id, id, name) VALUES ('{}', '{}', 'x')",
            merchants[0].id,
            Uuid::new_v4()
        ))
        .execute(&mut unbound);
        assert!(wrote.is_err(), "an unbound connection wrote a tenant row");
    }
    // And posd's connections did share PgBouncer's two.
    let servers = count(
        &mut Server::get().superuser(),
        &format!(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = '{}' AND usename = '{}' AND client_port IS NOT NULL",
            t.db.name,
            url::Url::parse(&Server::get().app_url("postgres")).unwrap().username()
        ),
    )
    .unwrap();
    assert!(
        servers <= 3,
        "{servers} app-role server connections (PgBouncer's 2, and the LISTEN one)"
    );
}

/// One pooled connection of posd, one server connection of PgBouncer,
/// merchants of the shared and schema tiers taking turns on it: each one's
/// reads and writes of the others' rows find nothing.
#[rocket::async_test]
async fn merchants_taking_turns_on_one_pooled_server_connection_stay_apart() {
    let bouncer = Bouncer::start(1);
    let t = bouncer.app(|s| s.pool_size = 1).await;
    let merchants = [
        t.shared_merchant("turns-a").await,
        t.shared_merchant("turns-b").await,
        t.merchant("turns-c", Tier::Schema).await,
    ];
    for round in 0..6 {
        for (i, owner) in merchants.iter().enumerate() {
            let sku = format!("{}-{round}", owner.slug);
            let (s, made) = t
                .post(
                    api!("/products"),
                    &owner.token,
                    json!({ "sku": sku, "name": "turn", "priceMinor": 100 }),
                )
                .await;
            assert_eq!(s, Status::Created, "{made}");
            let id = made["id"].as_str().unwrap();
            for other in merchants.iter().filter(|m| m.id != owner.id) {
                let (s, _) = t.get(&format!("{API}/products/{id}"), &other.token).await;
                assert_eq!(
                    s,
                    Status::NotFound,
                    "{} read {}'s product",
                    other.slug,
                    owner.slug
                );
                let (s, _) = t
                    .patch(
                        &format!("{API}/products/{id}"),
                        &other.token,
                        json!({ "name": "taken" }),
                    )
                    .await;
                assert_eq!(
                    s,
                    Status::NotFound,
                    "{} changed {}'s product",
                    other.slug,
                    owner.slug
                );
            }
            let (s, list) = t.get(api!("/products?limit=200"), &owner.token).await;
            assert_eq!(s, Status::Ok);
            let skus: Vec<&str> = list["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["sku"].as_str().unwrap())
                .collect();
            assert_eq!(skus.len(), round + 1, "{skus:?}");
            assert!(
                skus.iter()
                    .all(|s| s.starts_with(&format!("{}-", owner.slug))),
                "merchant {i} lists another's rows: {skus:?}"
            );
            let (s, p) = t.get(&format!("{API}/products/{id}"), &owner.token).await;
            assert_eq!((s, p["name"].as_str()), (Status::Ok, Some("turn")));
        }
    }
}
