//! The embedded default: a private PostgreSQL cluster that posd initialises,
//! starts and stops itself when no database URL is configured.
//!
//! Layout of the data directory: `secrets.env` (generated passwords, JWT
//! secret and encryption key; mode 0600), `pgdata/` (the cluster) and
//! `postgres.log`. The cluster listens on 127.0.0.1 only, with password
//! (SCRAM) authentication and no Unix socket. PostgreSQL refuses to run as
//! root, so when posd runs as root the cluster runs as the `postgres` system
//! user. Its backends keep up to 8 MiB of freed memory each (glibc's malloc
//! settings, in their environment) instead of returning it to the kernel
//! after every transaction.
//!
//! The cluster's lifetime is tied to this process: postgres is started under
//! a small shell that stops it (fast shutdown) as soon as its standard input
//! closes, which happens when posd exits for any reason, including a crash.

mod secrets;

pub use secrets::Secrets;

use std::{
    fs,
    io::Write,
    os::unix::{
        fs::{OpenOptionsExt, PermissionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use diesel::{Connection, PgConnection, RunQueryDsl, connection::SimpleConnection};
use rocket::figment::{Profile, providers::Serialized, value::Dict};
use secrecy::{ExposeSecret, SecretString};

pub const OWNER_ROLE: &str = "posd_owner";
pub const APP_ROLE: &str = "posd_app";
pub const DATABASE: &str = "posd";

#[derive(Debug, thiserror::Error)]
#[error("embedded PostgreSQL: {0}")]
pub struct EmbeddedError(pub String);

fn err(msg: impl Into<String>) -> EmbeddedError {
    EmbeddedError(msg.into())
}

/// Where the embedded cluster lives unless `POSD_DATA_DIR` says otherwise.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("POSD_DATA_DIR") {
        return PathBuf::from(dir);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/posd");
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("posd")
}

/// Finds the PostgreSQL server binaries: `POSD_PG_BINDIR`, else the newest
/// Debian installation under /usr/lib/postgresql, else `PATH`.
pub fn find_bindir() -> Result<PathBuf, EmbeddedError> {
    let has = |d: &Path| d.join("postgres").is_file() && d.join("initdb").is_file();
    if let Some(d) = std::env::var_os("POSD_PG_BINDIR") {
        let d = PathBuf::from(d);
        return if has(&d) {
            Ok(d)
        } else {
            Err(err(format!(
                "POSD_PG_BINDIR={} has no postgres and initdb",
                d.display()
            )))
        };
    }
    let mut debian: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has(&bin).then_some((v, bin))
        })
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| has(d))
        .ok_or_else(|| {
            err(
                "PostgreSQL server binaries (postgres, initdb) not found: install Debian's \
                 `postgresql` package (the README's run command does it), set POSD_PG_BINDIR, \
                 or point posd at a server with POSD_DATABASE_URL",
            )
        })
}

/// The OS user the cluster runs as: ourselves, or `postgres` when we are root.
fn cluster_user() -> Result<Option<nix::unistd::User>, EmbeddedError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    nix::unistd::User::from_name("postgres")
        .map_err(|e| err(format!("cannot look up the postgres user: {e}")))?
        .map(Some)
        .ok_or_else(|| {
            err(
                "running as root, and PostgreSQL refuses to: create an unprivileged `postgres` \
                 user (Debian's postgresql package does) or run posd as a normal user",
            )
        })
}

fn as_cluster_user(cmd: &mut Command, user: Option<&nix::unistd::User>) {
    if let Some(u) = user {
        cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
    }
}

fn chown(path: &Path, user: Option<&nix::unistd::User>) -> Result<(), EmbeddedError> {
    if let Some(u) = user {
        nix::unistd::chown(path, Some(u.uid), Some(u.gid))
            .map_err(|e| err(format!("cannot chown {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Options for [`Cluster::start`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Delete the data directory when the cluster stops, and trade
    /// durability for speed (fsync off). For test suites.
    pub ephemeral: bool,
    pub max_connections: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ephemeral: false,
            max_connections: 100,
        }
    }
}

/// A running private cluster; stopped when dropped.
pub struct Cluster {
    pub data_dir: PathBuf,
    pub secrets: Secrets,
    /// The supervisor of the postgres we started; `None` when another posd
    /// process already runs this cluster and we only connect to it.
    child: Option<Child>,
    stdin: Option<ChildStdin>,
}

const SUPERVISOR: &str = r#"
bin="$1"; data="$2"; cleanup="$3"; shift 3
"$bin" -D "$data" "$@" &
pid=$!
exec 3<&0
( read -r _ <&3; kill -INT "$pid" 2>/dev/null ) &
wait "$pid"
status=$?
if [ -n "$cleanup" ]; then rm -rf "$cleanup"; fi
exit "$status"
"#;

impl Cluster {
    /// Initialises the cluster on first use, starts it, waits until it
    /// accepts connections and makes sure posd's roles and database exist.
    pub fn start(data_dir: &Path, opts: &Options) -> Result<Cluster, EmbeddedError> {
        let bindir = find_bindir()?;
        let user = cluster_user()?;
        fs::create_dir_all(data_dir)
            .map_err(|e| err(format!("cannot create {}: {e}", data_dir.display())))?;
        let data_dir = data_dir
            .canonicalize()
            .map_err(|e| err(format!("{}: {e}", data_dir.display())))?;
        if user.is_some() {
            // The cluster user must be able to reach its data directory.
            fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o755))
                .map_err(|e| err(format!("{}: {e}", data_dir.display())))?;
        }
        if opts.ephemeral {
            chown(&data_dir, user.as_ref())?;
        }
        let pgdata = data_dir.join("pgdata");
        let secrets = if pgdata.join("PG_VERSION").is_file() {
            Secrets::load(&data_dir)?
        } else {
            Self::init(&bindir, &data_dir, &pgdata, user.as_ref())?
        };
        if pgdata.join("postmaster.pid").is_file() {
            let url = secrets.url("postgres", &secrets.superuser_password, "postgres");
            let url = format!("{}?connect_timeout=2", url.expose_secret());
            if PgConnection::establish(&url).is_ok() {
                // Another posd process runs this cluster: share it.
                return Ok(Cluster {
                    data_dir,
                    secrets,
                    child: None,
                    stdin: None,
                });
            }
        }
        let log_path = data_dir.join("postgres.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| err(format!("cannot open {}: {e}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(|e| err(format!("{}: {e}", log_path.display())))?;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(SUPERVISOR)
            .arg("posd-postgres")
            .arg(bindir.join("postgres"))
            .arg(&pgdata)
            .arg(if opts.ephemeral {
                data_dir.as_os_str()
            } else {
                "".as_ref()
            })
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", &format!("port={}", secrets.port)])
            .args(["-c", "unix_socket_directories="])
            .args(["-c", &format!("max_connections={}", opts.max_connections)]);
        if opts.ephemeral {
            cmd.args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off"]);
        }
        // glibc's malloc hands memory back to the kernel after each
        // transaction (it trims the heap and unmaps blocks over 128 KiB) and
        // takes it again at the next: 9% of the server's CPU under a write
        // load. Each backend keeps up to 8 MiB free instead, for 13% more
        // sales per second (BENCHMARKS.md, "One round trip per sale").
        // Other C libraries ignore these variables.
        cmd.env("MALLOC_TRIM_THRESHOLD_", "8388608")
            .env("MALLOC_TOP_PAD_", "1048576")
            .env("MALLOC_MMAP_THRESHOLD_", "4194304");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .process_group(0);
        as_cluster_user(&mut cmd, user.as_ref());
        let mut child = cmd
            .spawn()
            .map_err(|e| err(format!("cannot start postgres: {e}")))?;
        let stdin = child.stdin.take();
        let mut cluster = Cluster {
            data_dir: data_dir.clone(),
            secrets,
            child: Some(child),
            stdin,
        };
        cluster.wait_ready(&log_path)?;
        cluster.bootstrap()?;
        Ok(cluster)
    }

    fn init(
        bindir: &Path,
        data_dir: &Path,
        pgdata: &Path,
        user: Option<&nix::unistd::User>,
    ) -> Result<Secrets, EmbeddedError> {
        let secrets = match Secrets::load(data_dir) {
            Ok(s) => s,
            Err(_) => {
                let s = Secrets::generate()?;
                s.save(data_dir)?;
                s
            }
        };
        fs::create_dir_all(pgdata)
            .map_err(|e| err(format!("cannot create {}: {e}", pgdata.display())))?;
        fs::set_permissions(pgdata, fs::Permissions::from_mode(0o700))
            .map_err(|e| err(format!("{}: {e}", pgdata.display())))?;
        chown(pgdata, user)?;
        let pwfile = data_dir.join(".initdb-password");
        {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&pwfile)
                .map_err(|e| err(format!("cannot write {}: {e}", pwfile.display())))?;
            f.write_all(secrets.superuser_password.expose_secret().as_bytes())
                .map_err(|e| err(format!("cannot write {}: {e}", pwfile.display())))?;
        }
        chown(&pwfile, user)?;
        let mut cmd = Command::new(bindir.join("initdb"));
        cmd.arg("-D")
            .arg(pgdata)
            .args([
                "-U",
                "postgres",
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null());
        as_cluster_user(&mut cmd, user);
        let out = cmd
            .output()
            .map_err(|e| err(format!("cannot run initdb: {e}")));
        let _ = fs::remove_file(&pwfile);
        let out = out?;
        if !out.status.success() {
            let hint = if user.is_some() {
                " (when posd runs as root, every directory above the data directory must be \
                 searchable by the postgres user; set POSD_DATA_DIR elsewhere if not)"
            } else {
                ""
            };
            return Err(err(format!(
                "initdb failed{hint}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(secrets)
    }

    fn wait_ready(&mut self, log: &Path) -> Result<(), EmbeddedError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = self.superuser_url("postgres");
        let url = format!("{}?connect_timeout=2", url.expose_secret());
        loop {
            if PgConnection::establish(&url).is_ok() {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited || Instant::now() > deadline {
                let tail = fs::read_to_string(log)
                    .map(|t| {
                        let lines: Vec<&str> = t.lines().collect();
                        lines[lines.len().saturating_sub(5)..].join("\n")
                    })
                    .unwrap_or_default();
                return Err(err(format!(
                    "postgres did not start ({}):\n{tail}",
                    if exited { "it exited" } else { "timed out" }
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Creates (or refreshes) the owner and app roles and posd's database.
    fn bootstrap(&self) -> Result<(), EmbeddedError> {
        let mut conn = PgConnection::establish(self.superuser_url("postgres").expose_secret())
            .map_err(|e| err(format!("cannot connect as superuser: {e}")))?;
        let s = &self.secrets;
        for (role, attrs, pw) in [
            (
                OWNER_ROLE,
                "LOGIN CREATEDB NOSUPERUSER NOBYPASSRLS",
                &s.owner_password,
            ),
            (
                APP_ROLE,
                "LOGIN NOCREATEDB NOSUPERUSER NOBYPASSRLS",
                &s.app_password,
            ),
        ] {
            let sql = format!(
                "DO $$ BEGIN
                   IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                     CREATE ROLE {role};
                   END IF;
                 END $$;
                 ALTER ROLE {role} WITH {attrs} PASSWORD '{}'",
                pw.expose_secret()
            );
            conn.batch_execute(&sql)
                .map_err(|e| err(format!("cannot create role {role}: {e}")))?;
        }
        let exists = diesel::sql_query(format!(
            "SELECT 1 AS one FROM pg_database WHERE datname = '{DATABASE}'"
        ))
        .execute(&mut conn)
        .map_err(|e| err(format!("{e}")))?;
        if exists == 0 {
            conn.batch_execute(&format!("CREATE DATABASE {DATABASE} OWNER {OWNER_ROLE}"))
                .map_err(|e| err(format!("cannot create database {DATABASE}: {e}")))?;
        }
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.secrets.port
    }

    pub fn superuser_url(&self, db: &str) -> SecretString {
        self.secrets
            .url("postgres", &self.secrets.superuser_password, db)
    }

    pub fn owner_url(&self, db: &str) -> SecretString {
        self.secrets
            .url(OWNER_ROLE, &self.secrets.owner_password, db)
    }

    pub fn app_url(&self, db: &str) -> SecretString {
        self.secrets.url(APP_ROLE, &self.secrets.app_password, db)
    }

    /// posd's configuration for this cluster, to be joined under the
    /// operator's own settings.
    pub fn provider(&self) -> Serialized<Dict> {
        let mut d = Dict::new();
        d.insert(
            "database_url".into(),
            self.owner_url(DATABASE).expose_secret().into(),
        );
        d.insert(
            "app_database_url".into(),
            self.app_url(DATABASE).expose_secret().into(),
        );
        // The cluster is reached directly: its LISTEN URL is the app URL,
        // whatever POSD_TRANSACTION_POOLER says.
        d.insert(
            "listen_database_url".into(),
            self.app_url(DATABASE).expose_secret().into(),
        );
        d.insert(
            "jwt_secret".into(),
            self.secrets.jwt_secret.expose_secret().into(),
        );
        d.insert(
            "encryption_keys".into(),
            self.secrets.encryption_keys.expose_secret().into(),
        );
        Serialized::from(d, Profile::Global)
    }

    /// Stops the cluster (fast shutdown) and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.stdin.take().is_some()
            && let Some(child) = self.child.as_mut()
        {
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}
