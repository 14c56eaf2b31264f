//! Test harness: one PostgreSQL per test process (a private, throw-away
//! cluster started with posd's own embedded mechanism, or the server named
//! by `POSD_TEST_DATABASE_URL`), a template database migrated once, and a
//! fresh database per test made from it.

use std::{sync::OnceLock, time::Duration};

use diesel::{Connection, PgConnection, RunQueryDsl, connection::SimpleConnection};
use posd::{
    App,
    auth::Role,
    config::Settings,
    db::ids::{MerchantId, StaffId},
    embedded::{self, Cluster},
    tenancy::Tier,
};
use rocket::{
    figment::Figment,
    http::{ContentType, Header, Status},
    local::asynchronous::{Client, LocalResponse},
};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;

/// A POS route, `api!("/products")`: a `&'static str`, usable in constants.
macro_rules! api {
    ($path:literal) => {
        concat!("/api/v2/POS", $path)
    };
}
pub(crate) use api;

/// The prefix of every POS route, for `format!("{API}/products/{id}")`.
pub const API: &str = api!("");

pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123456789";

/// The database server the tests run against.
pub struct Server {
    _cluster: Option<Cluster>,
    base: url::Url,
    superuser: (String, String),
    owner: (String, String),
    app: (String, String),
    template: String,
    keys: String,
}

fn url_with(base: &url::Url, user: &(String, String), db: &str) -> String {
    let mut u = base.clone();
    let _ = u.set_username(&user.0);
    let _ = u.set_password(Some(&user.1));
    u.set_path(&format!("/{db}"));
    u.to_string()
}

impl Server {
    pub fn get() -> &'static Server {
        static SERVER: OnceLock<Server> = OnceLock::new();
        SERVER.get_or_init(Server::start)
    }

    fn start() -> Server {
        let (cluster, base, superuser) = match std::env::var("POSD_TEST_DATABASE_URL") {
            Ok(url) => {
                let u = url::Url::parse(&url).expect("POSD_TEST_DATABASE_URL is a URL");
                let su = (
                    u.username().to_string(),
                    u.password().unwrap_or("").to_string(),
                );
                (None, u, su)
            }
            Err(_) => {
                let dir = std::env::temp_dir().join(format!(
                    "posd-test-{}-{}",
                    std::process::id(),
                    Uuid::new_v4().simple()
                ));
                let cluster = Cluster::start(
                    &dir,
                    &embedded::Options {
                        ephemeral: true,
                        max_connections: 400,
                    },
                )
                .expect("start the test PostgreSQL");
                let u = url::Url::parse(cluster.superuser_url("postgres").expose_secret())
                    .expect("cluster URL");
                let su = (
                    "postgres".to_string(),
                    cluster
                        .secrets
                        .superuser_password
                        .expose_secret()
                        .to_string(),
                );
                (Some(cluster), u, su)
            }
        };
        let owner = ("posd_test_owner".to_string(), "owner-pw-test".to_string());
        let app = ("posd_test_app".to_string(), "app-pw-test".to_string());
        let mut s = Server {
            _cluster: cluster,
            base,
            superuser,
            owner,
            app,
            template: format!("posd_tpl_{}", Uuid::new_v4().simple()),
            keys: posd::crypto::Keyring::generate_spec("test1"),
        };
        s.prepare();
        s
    }

    pub fn superuser_url(&self, db: &str) -> String {
        url_with(&self.base, &self.superuser, db)
    }

    pub fn owner_url(&self, db: &str) -> String {
        url_with(&self.base, &self.owner, db)
    }

    pub fn app_url(&self, db: &str) -> String {
        url_with(&self.base, &self.app, db)
    }

    pub fn keys(&self) -> &str {
        &self.keys
    }

    pub fn superuser(&self) -> PgConnection {
        PgConnection::establish(&self.superuser_url("postgres")).expect("superuser connection")
    }

    fn prepare(&mut self) {
        let mut su = self.superuser();
        su.batch_execute(&format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{o}') THEN CREATE ROLE {o}; END IF;
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{a}') THEN CREATE ROLE {a}; END IF;
             END $$;
             ALTER ROLE {o} WITH LOGIN CREATEDB NOSUPERUSER NOBYPASSRLS PASSWORD '{op}';
             ALTER ROLE {a} WITH LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '{ap}';",
            o = self.owner.0,
            op = self.owner.1,
            a = self.app.0,
            ap = self.app.1,
        ))
        .expect("prepare roles");
        su.batch_execute(&format!(
            "CREATE DATABASE {} OWNER {}",
            self.template, self.owner.0
        ))
        .expect("create the template");
        let settings = Settings::from_figment(&self.figment(&self.template.clone()))
            .expect("template settings");
        posd::app::migrate(&settings).expect("migrate the template");
    }

    /// The configuration posd reads for database `db`: the settings it
    /// requires, and Rocket's (quiet). Tests change the rest through
    /// [`settings_with`] and [`TestApp::with_config`], typed.
    pub fn figment(&self, db: &str) -> Figment {
        posd::config::figment()
            .merge(("log_level", "off"))
            .merge(("database_url", self.owner_url(db)))
            .merge(("app_database_url", self.app_url(db)))
            .merge(("jwt_secret", JWT_SECRET))
            .merge(("encryption_keys", self.keys.clone()))
    }

    /// The role posd serves requests as, in the platform database and in
    /// the databases it creates for dedicated tenants.
    pub fn app_role(&self) -> &str {
        &self.app.0
    }

    /// The role of migrations, provisioning and fleet runs.
    pub fn owner_role(&self) -> &str {
        &self.owner.0
    }
}

/// A database of its own for one test, dropped (with every dedicated
/// database posd created for it) at the end.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub fn new() -> TestDb {
        let server = Server::get();
        let name = format!("t_{}", Uuid::new_v4().simple());
        server
            .superuser()
            .batch_execute(&format!(
                "CREATE DATABASE {name} TEMPLATE {} OWNER {}",
                server.template, server.owner.0
            ))
            .expect("create test database");
        TestDb { name }
    }

    /// An empty database owned by the owner role, no migration run (dropped
    /// at the end like any other).
    pub fn empty() -> TestDb {
        let server = Server::get();
        let name = format!("t_{}", Uuid::new_v4().simple());
        server
            .superuser()
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {}", server.owner.0))
            .expect("create an empty test database");
        TestDb { name }
    }

    /// A connection as the owner role.
    pub fn owner(&self) -> PgConnection {
        PgConnection::establish(&Server::get().owner_url(&self.name)).expect("owner connection")
    }

    /// A connection as the app role.
    pub fn app_role(&self) -> PgConnection {
        PgConnection::establish(&Server::get().app_url(&self.name)).expect("app connection")
    }
}

#[derive(diesel::QueryableByName)]
struct Name {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let server = Server::get();
        let mut su = server.superuser();
        let dedicated: Vec<Name> = PgConnection::establish(&server.superuser_url(&self.name))
            .and_then(|mut c| {
                // Only posd's own: a database a merchant brought is the test's to drop.
                diesel::sql_query(
                    "SELECT database_name AS name FROM tenant_databases WHERE created_by_posd",
                )
                .load(&mut c)
                .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))
            })
            .unwrap_or_default();
        for d in dedicated {
            let _ = su.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                d.name
            ));
        }
        let _ = su.batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// A booted posd over a test database, driven through Rocket's local client.
pub struct TestApp {
    pub client: Client,
    pub db: TestDb,
}

/// A merchant created through the admin API, with a token for its owner.
#[derive(Clone)]
pub struct Merchant {
    pub id: MerchantId,
    pub slug: String,
    pub token: String,
    pub tier: Tier,
}

/// Settings parsed from keys, as an operator sets them, over the
/// harness's configuration for database `db`. Only for tests of parsing
/// itself (a refused value, a default): everywhere else use
/// [`settings_with`] or [`TestApp::with_config`], where a misspelt setting
/// does not compile.
pub fn settings_from_keys(db: &str, keys: &[(&str, Value)]) -> Result<Settings, String> {
    let mut figment = Server::get().figment(db);
    for (k, v) in keys {
        figment = figment.merge((*k, v.clone()));
    }
    Settings::from_figment(&figment).map_err(|e| e.to_string())
}

/// The harness's own choices, applied to every booted posd before a
/// test's: small pools, and a short connect timeout so that an unreachable
/// database fails a test quickly; no background job workers (a test of
/// jobs works the queue itself, or asks for workers).
fn test_defaults(s: &mut Settings) {
    s.job_workers = 0;
    s.pool_size = 4;
    s.tenant_pool_size = 2;
    s.pool_connect_timeout = Duration::from_secs(2);
}

/// posd's validated settings for database `db`, with the harness's
/// defaults, then changed by `configure`. The change is applied after
/// validation: it can set what parsing would refuse (tests of refusals
/// use [`settings_from_keys`]).
pub fn settings_with(db: &str, configure: impl FnOnce(&mut Settings)) -> Settings {
    let mut s = Settings::from_figment(&Server::get().figment(db)).expect("the harness's settings");
    test_defaults(&mut s);
    configure(&mut s);
    s
}

/// Boots posd (without serving) over database `db`, configured by
/// `configure`.
pub fn boot_with(db: &str, configure: impl FnOnce(&mut Settings)) -> Result<App, String> {
    posd::boot(settings_with(db, configure)).map_err(|e| e.to_string())
}

/// Boots posd (without serving) over database `db`.
pub fn boot(db: &str) -> Result<App, String> {
    boot_with(db, |_| {})
}

impl TestApp {
    pub async fn new() -> TestApp {
        Self::with_config(|_| {}).await
    }

    /// posd over a new test database, its settings changed by `configure`,
    /// e.g. `TestApp::with_config(|s| s.pool_size = 1)`.
    pub async fn with_config(configure: impl FnOnce(&mut Settings) + Send + 'static) -> TestApp {
        Self::on_with(TestDb::new(), configure).await
    }

    /// Boots posd over an existing test database.
    pub async fn on(db: TestDb) -> TestApp {
        Self::on_with(db, |_| {}).await
    }

    /// Boots posd over an existing test database, its settings changed by
    /// `configure`.
    pub async fn on_with(
        db: TestDb,
        configure: impl FnOnce(&mut Settings) + Send + 'static,
    ) -> TestApp {
        let name = db.name.clone();
        let app = tokio::task::spawn_blocking(move || boot_with(&name, configure))
            .await
            .expect("boot task")
            .expect("boot");
        let figment = Server::get().figment(&db.name);
        let client = Client::tracked(posd::rocket(app, figment))
            .await
            .expect("rocket client");
        let t = TestApp { client, db };
        t.wait_listening().await;
        t
    }

    pub fn app(&self) -> &App {
        self.client.rocket().state::<App>().expect("app state")
    }

    /// Waits until the cache invalidation listener has run `LISTEN`.
    pub async fn wait_listening(&self) {
        tokio::time::timeout(
            Duration::from_secs(20),
            self.app().directory.wait_listening(),
        )
        .await
        .expect("the cache invalidation listener never connected");
    }

    pub fn admin_token(&self) -> String {
        self.app()
            .jwt
            .issue_admin("tests", Duration::from_secs(600))
            .expect("admin token")
    }

    /// A token of a new, active staff user of `merchant` with `role`
    /// (tokens are only honoured for staff users that exist).
    pub fn staff_token(&self, merchant: MerchantId, role: Role) -> String {
        let id = self.staff_user(merchant, role);
        self.token_for(id, merchant, role)
    }

    /// A new, active staff user of `merchant` with `role`, made in SQL.
    pub fn staff_user(&self, merchant: MerchantId, role: Role) -> StaffId {
        let id = StaffId(Uuid::new_v4());
        self.db
            .owner()
            .batch_execute(&format!(
                "INSERT INTO staff_users (id, merchant_id, email, password_hash, role) \
                 VALUES ('{id}', '{merchant}', '{id}@staff.test', 'not-a-hash', '{}')",
                role.as_str()
            ))
            .expect("insert a staff user");
        id
    }

    /// A token claiming `staff`, `merchant` and `role`, whether or not they
    /// exist.
    pub fn token_for(&self, staff: StaffId, merchant: MerchantId, role: Role) -> String {
        self.app()
            .jwt
            .issue_staff(staff, merchant, role, Duration::from_secs(600))
            .expect("staff token")
            .0
    }

    pub async fn request(
        &self,
        method: rocket::http::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (Status, Value) {
        let res = self.send(method, path, token, body, &[]).await;
        let status = res.status();
        let text = res.into_string().await.unwrap_or_default();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("non-JSON body for {path}: {text}"))
        };
        (status, value)
    }

    pub async fn send<'c>(
        &'c self,
        method: rocket::http::Method,
        path: &'c str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&'static str, String)],
    ) -> LocalResponse<'c> {
        let mut req = self.client.req(method, path.to_string());
        if let Some(t) = token {
            req = req.header(Header::new("Authorization", format!("Bearer {t}")));
        }
        for (k, v) in headers {
            req = req.header(Header::new(*k, v.clone()));
        }
        if let Some(b) = body {
            req = req.header(ContentType::JSON).body(b.to_string());
        }
        req.dispatch().await
    }

    pub async fn get(&self, path: &str, token: &str) -> (Status, Value) {
        self.request(rocket::http::Method::Get, path, Some(token), None)
            .await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (Status, Value) {
        self.request(rocket::http::Method::Post, path, Some(token), Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (Status, Value) {
        self.request(rocket::http::Method::Patch, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (Status, Value) {
        self.request(rocket::http::Method::Delete, path, Some(token), None)
            .await
    }

    /// Creates a merchant on the shared tier and logs its owner in.
    pub async fn shared_merchant(&self, slug: &str) -> Merchant {
        let admin = self.admin_token();
        let (status, body) = self
            .post(
                api!("/admin/merchants"),
                &admin,
                json!({
                    "slug": slug, "name": format!("{slug} store"), "timezone": "Europe/Paris",
                    "currency": "EUR",
                    "owner": { "email": format!("owner@{slug}.test"), "password": "correct horse battery" }
                }),
            )
            .await;
        assert_eq!(status, Status::Created, "create merchant: {body}");
        let id = MerchantId(
            body["id"]
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .expect("merchant id"),
        );
        let (status, login) = self
            .request(
                rocket::http::Method::Post,
                api!("/auth/login"),
                None,
                Some(json!({ "merchant": slug, "email": format!("owner@{slug}.test"), "password": "correct horse battery" })),
            )
            .await;
        assert_eq!(status, Status::Ok, "login: {login}");
        Merchant {
            id,
            slug: slug.to_string(),
            token: login["token"].as_str().expect("token").to_string(),
            tier: Tier::Shared,
        }
    }

    /// Creates a merchant and provisions it onto `tier`.
    pub async fn merchant(&self, slug: &str, tier: Tier) -> Merchant {
        let mut m = self.shared_merchant(slug).await;
        if tier != Tier::Shared {
            let (status, body) = self
                .post(
                    api!("/admin/tenant/provision"),
                    &self.admin_token(),
                    json!({ "merchantId": m.id.to_string(), "tier": tier.as_str() }),
                )
                .await;
            assert_eq!(
                status,
                Status::Created,
                "provision {slug} to {tier:?}: {body}"
            );
            assert_eq!(body["run"]["status"], "ready");
            m.tier = tier;
        }
        m
    }

    /// `POST /auth/login` as `email` of merchant `m`.
    pub async fn login(&self, m: &Merchant, email: &str, password: &str) -> (Status, Value) {
        self.request(
            rocket::http::Method::Post,
            api!("/auth/login"),
            None,
            Some(json!({ "merchant": m.slug, "email": email, "password": password })),
        )
        .await
    }

    /// Creates a product and returns its id.
    pub async fn product(&self, m: &Merchant, sku: &str) -> String {
        let (status, body) = self
            .post(
                api!("/products"),
                &m.token,
                json!({ "sku": sku, "name": format!("{sku} item"), "priceMinor": 250, "taxRateBps": 2000 }),
            )
            .await;
        assert_eq!(status, Status::Created, "create product: {body}");
        body["id"].as_str().expect("product id").to_string()
    }
}

/// An answer as tests read it: its status and JSON body.
pub trait Answer {
    fn parts(&self) -> (Status, &Value);
}

impl Answer for (Status, Value) {
    fn parts(&self) -> (Status, &Value) {
        (self.0, &self.1)
    }
}

impl Answer for (Status, &Value) {
    fn parts(&self) -> (Status, &Value) {
        (self.0, self.1)
    }
}

impl<A: Answer> Answer for &A {
    fn parts(&self) -> (Status, &Value) {
        (**self).parts()
    }
}

/// Reads a response as an [`Answer`]; its body must be JSON.
pub async fn read(res: LocalResponse<'_>) -> (Status, Value) {
    let status = res.status();
    let text = res.into_string().await.unwrap_or_default();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("a {status} answer whose body is not JSON: {text}"));
    (status, body)
}

/// Asserts that `answer` is posd's error `code` with `status`, in its
/// envelope `{"error": {"code", "message"}}` with a message; returns the
/// message.
#[track_caller]
pub fn assert_error(answer: impl Answer, status: Status, code: &str) -> String {
    assert_error_about("", answer, status, code)
}

/// [`assert_error`], saying what was asked when it fails (say, the case
/// of a loop).
#[track_caller]
pub fn assert_error_about(
    about: impl std::fmt::Display,
    answer: impl Answer,
    status: Status,
    code: &str,
) -> String {
    let (got, body) = answer.parts();
    let about = about.to_string();
    let about = if about.is_empty() {
        String::new()
    } else {
        format!("{about}: ")
    };
    assert_eq!(
        (got, body["error"]["code"].as_str()),
        (status, Some(code)),
        "{about}expected the error {code} ({status}), got {got}: {body}"
    );
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        !message.is_empty(),
        "{about}an error without a message: {body}"
    );
    message.to_string()
}

pub const TIERS: [Tier; 3] = [Tier::Shared, Tier::Schema, Tier::Dedicated];

/// Rows of a query's single bigint column.
#[derive(diesel::QueryableByName)]
pub struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub n: i64,
}

pub fn count(conn: &mut PgConnection, sql: &str) -> Result<i64, diesel::result::Error> {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .map(|c| c.n)
}

impl TestApp {
    /// `n` merchants provisioned straight onto the schema tier (no owner
    /// user, no HTTP: for fleet-sized tests).
    pub async fn schema_tenants(&self, prefix: &str, n: usize) -> Vec<MerchantId> {
        let app = self.app().clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let mut owner =
                PgConnection::establish(app.settings.database_url.expose_secret()).unwrap();
            (0..n)
                .map(|i| {
                    let id = MerchantId(Uuid::new_v4());
                    owner
                        .batch_execute(&format!(
                            "INSERT INTO merchants (id, slug, name, timezone, currency, plan) \
                             VALUES ('{id}', '{prefix}-{i}', 'Fleet {i}', 'UTC', 'USD', 'starter')"
                        ))
                        .unwrap();
                    match posd::tenancy::provisioning::provision(&app, id, Tier::Schema) {
                        Ok(posd::tenancy::provisioning::Outcome::Ready(_)) => id,
                        _ => panic!("provisioning {prefix}-{i} failed"),
                    }
                })
                .collect()
        })
        .await
        .unwrap()
    }
}

/// The server-side id of `conn`'s backend.
pub fn backend_pid(conn: &mut PgConnection) -> i32 {
    #[derive(diesel::QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(conn)
        .expect("backend pid")
        .pid
}

/// The client connections PostgreSQL has open to `databases` as `role`,
/// as the server counts them (`pg_stat_activity`), not as posd does;
/// `except` are backends of the test's own. `su` is a superuser
/// connection (it sees every session), to a database not counted.
pub fn server_connections(
    su: &mut PgConnection,
    databases: &[String],
    role: &str,
    except: &[i32],
) -> i64 {
    // Arrays rather than IN lists: `pid NOT IN ()` cannot be written, and
    // `NOT IN (NULL)` is never true.
    let databases: Vec<String> = databases.iter().map(|d| format!("'{d}'")).collect();
    let except: Vec<String> = except.iter().map(i32::to_string).collect();
    count(
        su,
        &format!(
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND usename = '{role}' \
               AND datname = ANY (ARRAY[{}]::text[]) AND pid <> ALL (ARRAY[{}]::int[])",
            databases.join(", "),
            except.join(", "),
        ),
    )
    .expect("count connections in pg_stat_activity")
}

/// [`server_connections`] once it is at most `limit`, or after 5 s. A
/// backend whose client has just closed it leaves `pg_stat_activity` a
/// moment after the close, so right after posd closes a connection the
/// server may still list it; a connection posd keeps stays listed (for its
/// pool's idle timeout, minutes), so an excess that lasts is posd's.
pub fn settled_server_connections(
    su: &mut PgConnection,
    databases: &[String],
    role: &str,
    limit: i64,
) -> i64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n = server_connections(su, databases, role, &[]);
        if n <= limit || std::time::Instant::now() >= deadline {
            return n;
        }
    }
}

/// Takes a tenant schema back to before its tenant migrations.
pub fn unmigrate(conn: &mut PgConnection, schema: &str) {
    let tables: Vec<String> = posd::tenancy::classification::TENANT
        .iter()
        .map(|t| format!("\"{schema}\".{t}"))
        .collect();
    conn.batch_execute(&format!(
        "DROP TABLE {} CASCADE; DELETE FROM \"{schema}\".__diesel_schema_migrations;",
        tables.join(", ")
    ))
    .unwrap();
}

impl TestApp {
    /// A superuser connection to where `m`'s data lives, and its schema.
    /// Superusers bypass RLS: for checking what the API did, never for
    /// driving it.
    pub fn data_conn(&self, m: &Merchant) -> (PgConnection, String) {
        let server = Server::get();
        let (db, schema) = match m.tier {
            Tier::Shared => (
                self.db.name.clone(),
                posd::tenancy::SHARED_SCHEMA.to_string(),
            ),
            Tier::Schema => (
                self.db.name.clone(),
                posd::tenancy::tenant_schema_name(m.id),
            ),
            Tier::Dedicated => (
                posd::tenancy::tenant_database_name(m.id),
                posd::tenancy::tenant_schema_name(m.id),
            ),
        };
        let mut conn =
            PgConnection::establish(&server.superuser_url(&db)).expect("data-plane connection");
        conn.batch_execute(&format!("SET search_path = \"{schema}\""))
            .expect("search_path");
        (conn, schema)
    }

    /// POST with an `Idempotency-Key`; also tells whether the answer was a
    /// replay.
    pub async fn post_idem(
        &self,
        path: &str,
        token: &str,
        key: &str,
        body: Value,
    ) -> (Status, Value, bool) {
        let res = self
            .send(
                rocket::http::Method::Post,
                path,
                Some(token),
                Some(body),
                &[("Idempotency-Key", key.to_string())],
            )
            .await;
        let status = res.status();
        let replayed = res.headers().get_one("Idempotent-Replayed") == Some("true");
        let text = res.into_string().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, value, replayed)
    }

    /// A product with a price, tax rate and, if `stock` is given, tracked
    /// stock received to that level.
    pub async fn stocked_product(
        &self,
        m: &Merchant,
        sku: &str,
        price: i64,
        tax_bps: i32,
        stock: Option<i64>,
    ) -> String {
        let (status, body) = self
            .post(
                api!("/products"),
                &m.token,
                json!({ "sku": sku, "name": format!("{sku} item"), "priceMinor": price,
                        "taxRateBps": tax_bps, "trackStock": stock.is_some() }),
            )
            .await;
        assert_eq!(status, Status::Created, "create product: {body}");
        let id = body["id"].as_str().expect("product id").to_string();
        if let Some(n) = stock.filter(|n| *n > 0) {
            let (status, body) = self
                .post(
                    api!("/inventory/adjustments"),
                    &m.token,
                    json!({ "productId": id, "delta": n, "reason": "receive" }),
                )
                .await;
            assert_eq!(status, Status::Created, "receive stock: {body}");
        }
        id
    }

    /// `GET /metrics`, as text.
    pub async fn metrics(&self) -> String {
        let res = self.client.get("/metrics").dispatch().await;
        assert_eq!(res.status(), Status::Ok);
        res.into_string().await.unwrap_or_default()
    }

    /// Changes the merchant's plan or limit overrides as an operator
    /// (`POST /admin/tenants/{id}/plan`); answers the merchant's plan view.
    pub async fn set_plan(&self, m: MerchantId, body: Value) -> Value {
        let (status, view) = self
            .post(
                &format!("{API}/admin/tenants/{m}/plan"),
                &self.admin_token(),
                body,
            )
            .await;
        assert_eq!(status, Status::Ok, "{view}");
        view
    }

    /// A cash sale of `qty` × `product`, paid exactly; returns the order.
    pub async fn sell(&self, m: &Merchant, product: &str, qty: i64, cash: i64) -> Value {
        let (status, body, _) = self
            .post_idem(
                api!("/orders"),
                &m.token,
                &Uuid::new_v4().to_string(),
                json!({ "lines": [{ "productId": product, "quantity": qty }],
                        "payments": [{ "method": "cash", "amountMinor": cash }] }),
            )
            .await;
        assert_eq!(status, Status::Created, "sale: {body}");
        body
    }
}

/// The stock level of a product and the sum of its movements, read
/// directly from the database.
pub fn stock_and_movements(conn: &mut PgConnection, product: &str) -> (i64, i64) {
    let level = count(
        conn,
        &format!("SELECT on_hand AS n FROM inventory_levels WHERE product_id = '{product}'"),
    )
    .unwrap();
    let moved = count(
        conn,
        &format!(
            "SELECT coalesce(sum(delta), 0)::bigint AS n FROM stock_movements WHERE product_id = '{product}'"
        ),
    )
    .unwrap();
    (level, moved)
}

impl TestApp {
    /// Starts a fleet migration run over `selection` (202) and waits until
    /// it is done: its end is the last thing recorded, in the admin audit.
    /// Answers the run as `GET /admin/fleet-runs/{id}` shows it.
    pub async fn fleet_migrate(&self, admin: &str, selection: Value) -> Value {
        let (status, started) = self
            .post(api!("/admin/tenants/migrate"), admin, selection)
            .await;
        assert_eq!(status, Status::Accepted, "{started}");
        let run = started["run"]["id"].as_str().expect("run id").to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let recorded = count(
                &mut self.db.owner(),
                &format!(
                    "SELECT count(*) AS n FROM admin_audit \
                     WHERE action = 'tenants.migrate' AND details->>'runId' = '{run}'"
                ),
            )
            .expect("read the admin audit");
            if recorded > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "fleet run {run} did not finish in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (status, view) = self
            .get(&format!("{API}/admin/fleet-runs/{run}"), admin)
            .await;
        assert_eq!(status, Status::Ok, "{view}");
        assert!(!view["run"]["finishedAt"].is_null(), "{view}");
        view
    }
}

impl TestApp {
    /// Runs `sql` (a change to staff user `id`, as another instance would
    /// make it) and waits until the platform database's NOTIFY has reached
    /// this instance's staff cache.
    pub async fn change_staff(&self, id: StaffId, sql: &str) {
        let mut events = self.app().staff_states.subscribe();
        self.db
            .owner()
            .batch_execute(sql)
            .expect("change the staff user");
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.recv().await {
                    Ok(Some(s)) if s == id => break,
                    Ok(_) => {}
                    Err(e) => panic!("invalidation channel: {e}"),
                }
            }
        })
        .await
        .expect("no NOTIFY arrived");
    }
}

/// Another posd instance over the same database as a [`TestApp`], as a
/// second process behind a load balancer would be: its own caches and its
/// own LISTEN connection.
pub struct Instance {
    pub client: Client,
}

impl TestApp {
    /// Boots a second instance over this test's database, configured by
    /// `configure`, and waits until it listens for invalidations.
    pub async fn second_instance(
        &self,
        configure: impl FnOnce(&mut Settings) + Send + 'static,
    ) -> Instance {
        let name = self.db.name.clone();
        let app = tokio::task::spawn_blocking(move || boot_with(&name, configure))
            .await
            .expect("boot task")
            .expect("boot");
        let figment = Server::get().figment(&self.db.name);
        let client = Client::tracked(posd::rocket(app, figment))
            .await
            .expect("rocket client");
        let i = Instance { client };
        tokio::time::timeout(Duration::from_secs(20), i.app().directory.wait_listening())
            .await
            .expect("the second instance's listener never connected");
        i
    }
}

impl Instance {
    pub fn app(&self) -> &App {
        self.client.rocket().state::<App>().expect("app state")
    }

    pub async fn get(&self, path: &str, token: &str) -> (Status, Value) {
        let res = self
            .client
            .get(path.to_string())
            .header(Header::new("Authorization", format!("Bearer {token}")))
            .dispatch()
            .await;
        read(res).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (Status, Value) {
        let res = self
            .client
            .post(path.to_string())
            .header(Header::new("Authorization", format!("Bearer {token}")))
            .header(ContentType::JSON)
            .body(body.to_string())
            .dispatch()
            .await;
        read(res).await
    }
}
