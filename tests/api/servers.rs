//! Several dedicated database servers: operators register, drain and take
//! back servers; new databases go to the server named or to the one with
//! the most room; provisioning, moves and deprovisioning reach the server a
//! database is on; a server that goes down fails only its merchants, and
//! `/readyz` names it while the instance stays ready. The second server is
//! the test server reached through a relay on another port, which the test
//! can cut.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rocket::{http::Status, tokio};
use serde_json::{Value, json};

use crate::{
    common::{API, Merchant, Server, TestApp, api, assert_error, count},
    moves::{move_to, quick},
};

/// A TCP relay on a port of its own that can be cut: every connection it
/// carries is closed and new ones are refused. It counts the round trips
/// clients start: PostgreSQL frontend messages that ask for an answer
/// (`Query`, one per simple query, and `Sync`, one per extended-protocol
/// statement). Read only on unencrypted connections (`sslmode=disable`).
pub(crate) struct Relay {
    pub(crate) port: u16,
    down: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    round_trips: Arc<AtomicU64>,
}

/// Reads a frontend's message stream as it passes, counting `Query` and
/// `Sync` messages.
struct Frontend {
    /// The startup packet (and any SSL/GSS request before it) has no type
    /// byte.
    started: bool,
    pending: Vec<u8>,
    round_trips: Arc<AtomicU64>,
}

impl Frontend {
    fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        loop {
            let head = if self.started { 5 } else { 4 };
            if self.pending.len() < head {
                return;
            }
            let at = head - 4;
            let len = usize::try_from(u32::from_be_bytes(
                self.pending[at..at + 4].try_into().unwrap(),
            ))
            .unwrap();
            let total = at + len;
            if self.pending.len() < total {
                return;
            }
            if self.started {
                if matches!(self.pending[0], b'Q' | b'S') {
                    self.round_trips.fetch_add(1, Ordering::SeqCst);
                }
            } else {
                // A startup packet carries protocol 3.0; SSL and GSS
                // requests (refused here) come before one.
                let code = u32::from_be_bytes(self.pending[4..8].try_into().unwrap());
                self.started = code == 196_608;
            }
            self.pending.drain(..total);
        }
    }
}

impl Relay {
    /// A relay to the test server.
    pub(crate) fn start() -> Relay {
        let server = url::Url::parse(&Server::get().owner_url("postgres")).unwrap();
        Self::to(
            server.host_str().unwrap().to_string(),
            server.port().unwrap_or(5432),
        )
    }

    /// A relay to `host`:`port`.
    pub(crate) fn to(host: String, port: u16) -> Relay {
        let to = (host, port);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let round_trips = Arc::new(AtomicU64::new(0));
        let (d, o, rt) = (down.clone(), open.clone(), round_trips.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                if d.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect((to.0.as_str(), to.1)) else {
                    continue;
                };
                {
                    let mut open = o.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                for (mut from, mut into, count) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        Some(rt.clone()),
                    ),
                    (server, client, None),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        let mut frontend = count.map(|round_trips| Frontend {
                            started: false,
                            pending: Vec::new(),
                            round_trips,
                        });
                        while let Ok(n) = from.read(&mut buf) {
                            if let Some(f) = &mut frontend {
                                f.feed(&buf[..n]);
                            }
                            if n == 0 || into.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = into.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Relay {
            port,
            down,
            open,
            round_trips,
        }
    }

    /// `url` (of the test server) through the relay, unencrypted.
    pub(crate) fn url(&self, url: &str) -> String {
        let mut u = url::Url::parse(url).unwrap();
        u.set_port(Some(self.port)).unwrap();
        u.query_pairs_mut().append_pair("sslmode", "disable");
        u.to_string()
    }

    /// Round trips started through the relay so far.
    pub(crate) fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::SeqCst)
    }

    /// The owner's URL of the test server, through the relay.
    fn owner_url(&self) -> String {
        let mut u = url::Url::parse(&Server::get().owner_url("postgres")).unwrap();
        u.set_port(Some(self.port)).unwrap();
        u.to_string()
    }

    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn servers_path(rest: &str) -> String {
    format!("{API}/admin/servers{rest}")
}

/// The server id of the merchant's database (`None`: the default server).
fn server_of(t: &TestApp, m: &Merchant) -> Option<String> {
    #[derive(diesel::QueryableByName)]
    struct S {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        server: Option<String>,
    }
    use diesel::RunQueryDsl;
    diesel::sql_query(format!(
        "SELECT d.server_id::text AS server FROM merchants m JOIN tenant_databases d ON d.id = m.database_id
          WHERE m.id = '{}'",
        m.id
    ))
    .get_result::<S>(&mut t.db.owner())
    .expect("the merchant's database")
    .server
}

async fn provision(t: &TestApp, m: &Merchant, server: Option<&str>) -> (Status, Value) {
    let mut body = json!({ "merchantId": m.id, "tier": "dedicated" });
    if let Some(s) = server {
        body["server"] = json!(s);
    }
    t.post(api!("/admin/tenant/provision"), &t.admin_token(), body)
        .await
}

async fn serves(t: &TestApp, m: &Merchant) -> Status {
    t.get(api!("/products"), &m.token).await.0
}

#[rocket::async_test]
async fn dedicated_databases_spread_over_registered_servers_and_one_down_fails_only_its_own() {
    let relay = Relay::start();
    let t = TestApp::with_config(|s| {
        quick(s);
        s.breaker_threshold = 1;
        s.breaker_cooldown = Duration::from_secs(30);
    })
    .await;
    let admin = t.admin_token();

    // Registering checks the server; nothing is stored for a refusal.
    let register = |name: &str, url: String, capacity: i64| json!({ "name": name, "url": url, "capacity": capacity, "connectionBudget": 4 });
    let mut dead = url::Url::parse(&relay.owner_url()).unwrap();
    dead.set_port(Some(
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(),
    ))
    .unwrap();
    let (s, body) = t
        .post(
            &servers_path(""),
            &admin,
            register("gone", dead.to_string(), 5),
        )
        .await;
    assert_error(
        (s, body),
        Status::UnprocessableEntity,
        "database_unreachable",
    );
    let mut app_role = url::Url::parse(&Server::get().app_url("postgres")).unwrap();
    app_role.set_port(Some(relay.port)).unwrap();
    let (s, body) = t
        .post(
            &servers_path(""),
            &admin,
            register("weak", app_role.to_string(), 5),
        )
        .await;
    assert_error(
        (s, body),
        Status::UnprocessableEntity,
        "database_privileges_insufficient",
    );
    for bad in ["default", "Upper", "-x"] {
        let (s, _) = t
            .post(
                &servers_path(""),
                &admin,
                register(bad, relay.owner_url(), 5),
            )
            .await;
        assert_eq!(s, Status::UnprocessableEntity, "{bad}");
    }
    let (s, second) = t
        .post(
            &servers_path(""),
            &admin,
            register("second", relay.owner_url(), 1),
        )
        .await;
    assert_eq!(s, Status::Created, "{second}");
    assert!(second.get("url").is_none(), "the URL is never echoed");
    let id = second["id"].as_str().unwrap().to_string();
    let (s, body) = t
        .post(
            &servers_path(""),
            &admin,
            register("second", relay.owner_url(), 1),
        )
        .await;
    assert_error((s, body), Status::Conflict, "server_name_taken");

    // By room: the registered server (room for 1) first, then the default.
    let a = t.shared_merchant("srv-a").await;
    let (s, body) = provision(&t, &a, None).await;
    assert_eq!(s, Status::Created, "{body}");
    assert_eq!(server_of(&t, &a), Some(id.clone()));
    let b = t.shared_merchant("srv-b").await;
    let (s, body) = provision(&t, &b, None).await;
    assert_eq!(s, Status::Created, "{body}");
    assert_eq!(server_of(&t, &b), None, "the registered server is full");

    // Named: a drained server takes nothing; an unknown name is refused.
    let c = t.shared_merchant("srv-c").await;
    let (s, drained) = t
        .post(&servers_path(&format!("/{id}/drain")), &admin, json!({}))
        .await;
    assert_eq!(
        (s, drained["status"].as_str()),
        (Status::Ok, Some("draining"))
    );
    let (s, body) = provision(&t, &c, Some("second")).await;
    assert_error((s, body), Status::Conflict, "server_draining");
    let (s, body) = provision(&t, &c, Some("nowhere")).await;
    assert_error((s, body), Status::UnprocessableEntity, "validation_failed");
    let (s, _) = t
        .post(&servers_path(&format!("/{id}/activate")), &admin, json!({}))
        .await;
    assert_eq!(s, Status::Ok);
    let (s, body) = provision(&t, &c, Some("second")).await;
    assert_eq!(
        s,
        Status::Created,
        "a name chosen by the operator is taken even past capacity: {body}"
    );
    assert_eq!(server_of(&t, &c), Some(id.clone()));

    // A move onto the dedicated tier can name a server too.
    let d = t.shared_merchant("srv-d").await;
    t.product(&d, "SRV-D").await;
    let mv = move_to(&t, &d, json!({ "tier": "dedicated", "server": "second" })).await;
    assert_eq!(mv["status"], "done", "{mv}");
    assert_eq!(server_of(&t, &d), Some(id.clone()));

    let (s, list) = t.get(&servers_path(""), &admin).await;
    assert_eq!(s, Status::Ok);
    let databases = |name: &str| {
        list["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["databases"].clone())
    };
    assert_eq!(databases("second"), Some(json!(3)), "{list}");
    assert_eq!(databases("default"), Some(json!(1)), "{list}");

    // Deprovisioning drops the database on its own server.
    let (s, body) = t
        .post(
            &format!("{API}/admin/tenants/{}/deprovision", c.id),
            &admin,
            json!({ "force": true }),
        )
        .await;
    assert_eq!(s, Status::Ok, "{body}");
    let left = count(
        &mut Server::get().superuser(),
        &format!(
            "SELECT count(*) AS n FROM pg_database WHERE datname = '{}'",
            posd::tenancy::tenant_database_name(c.id)
        ),
    )
    .unwrap();
    assert_eq!(left, 0, "the database was dropped");

    // The registered server goes down: its merchants fail fast, the
    // default server's are served, and the instance stays ready.
    for m in [&a, &b, &d] {
        assert_eq!(serves(&t, m).await, Status::Ok, "{}", m.slug);
    }
    relay.cut();
    let deadline = Instant::now() + Duration::from_secs(20);
    while serves(&t, &a).await != Status::ServiceUnavailable {
        assert!(
            Instant::now() < deadline,
            "a merchant on the cut server was still served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    assert_eq!(serves(&t, &d).await, Status::ServiceUnavailable);
    assert_eq!(
        serves(&t, &b).await,
        Status::Ok,
        "the default server's merchant"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failing took {:?}",
        started.elapsed()
    );
    let (s, ready) = t.get("/readyz", "").await;
    assert_eq!(s, Status::Ok, "{ready}");
    let unhealthy: Vec<&Value> = ready["unhealthyServers"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(unhealthy.len(), 1, "{ready}");
    assert_eq!(unhealthy[0]["server"], json!(id));
}
