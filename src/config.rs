//! Typed configuration, read once at start-up from `Rocket.toml` and the
//! environment (`POSD_*`, plus `USE_TENANT_DB_ROUTING`).
//!
//! Policy: every setting is validated before anything else happens; a missing
//! or malformed value stops the process with one line naming the setting by
//! the name an operator sets it with. Secrets are wrapped in
//! [`secrecy::SecretString`] so they never reach a log line through `Debug`.

use std::time::Duration;

use rocket::figment::{
    Figment, Profile,
    providers::{Env, Format, Serialized, Toml},
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::crypto::Keyring;

/// Everything posd needs to run, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Owner/DDL role on the platform database: migrations and provisioning.
    pub database_url: SecretString,
    /// The non-superuser role that serves requests.
    pub app_database_url: SecretString,
    /// The connections that serve requests (`POSD_APP_DATABASE_URL` and
    /// dedicated databases) go through a pooler in transaction mode: they
    /// use unnamed statements only, and set nothing for the session.
    pub transaction_pooler: bool,
    /// A direct URL of the app role for the LISTEN connection (required
    /// with `transaction_pooler`; `app_database_url` otherwise).
    pub listen_database_url: Option<SecretString>,
    /// Owner URL of the server on which posd creates dedicated databases.
    pub dedicated_server_url: SecretString,
    pub jwt_secret: SecretString,
    pub keyring: Keyring,
    /// Kill switch: `false` routes every merchant to the shared tier.
    pub use_tenant_db_routing: bool,
    pub pool_size: u32,
    pub tenant_pool_size: u32,
    pub pool_connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_sweep_interval: Duration,
    pub max_tenant_pools: usize,
    pub connection_budget: u32,
    pub placement_cache_ttl: Duration,
    pub statement_timeout: Duration,
    pub token_ttl: Duration,
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
    /// Migrate every schema and dedicated tenant at boot (otherwise a tenant
    /// that is behind is migrated in the background, answering 503 until
    /// then).
    pub tenant_migrations_at_boot: bool,
    /// How long an `Idempotency-Key` and its stored response are kept.
    pub idempotency_retention: Duration,
    /// Test hook (debug builds only): provisioning fails once this many of
    /// its steps have completed. See `tenancy::provisioning`.
    pub provision_fail_after_step: Option<u32>,
    /// How many tenants a fleet migration (API or boot) migrates at once.
    pub migration_concurrency: u32,
    /// The longest a tier move may hold a merchant's writes at the flip.
    pub move_fence_timeout: Duration,
    /// How long a moved merchant's old placement is kept before cleanup
    /// may drop it.
    pub move_retention: Duration,
    /// The most captured changes one catch-up round of a tier move applies.
    pub move_round_batch: u32,
    /// How many streams (pairs of connections) copy a large table at once
    /// in a tier move.
    pub move_copy_streams: u32,
    /// Test hook (debug builds only): `fail:<phase>` makes every move fail
    /// once that phase has run; `stall:<phase>` makes its driver stop there
    /// as if posd had died. See `tenancy::moves`.
    pub move_fault: Option<String>,
    /// How old an offline bill may be when it arrives.
    pub offline_bill_max_age: Duration,
    /// Proxies whose `X-Forwarded-For` / `X-Real-IP` name the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Login attempts per merchant and email.
    pub login_account_limit: RateLimit,
    /// Login attempts per client address.
    pub login_address_limit: RateLimit,
    /// The share (0 to 1) of the global pool's connections one merchant's
    /// transactions may hold at once (see `tenancy::fair`); 1 is no cap.
    pub merchant_pool_share: f64,
    /// A merchant taking this share (0 to 1) of a busy global pool's
    /// database time is flagged noisy (see `tenancy::noisy`).
    pub noisy_share: f64,
    /// How often the isolation probe runs (`tenancy::probe`); `None`: off.
    pub isolation_probe_interval: Option<Duration>,
    /// Merchants named in the `posd_merchant_*` series of `/metrics` (the
    /// rest is `other`).
    pub metrics_top_merchants: usize,
    /// Merchants are reached at `<slug>.<base domain>`, and any host that
    /// names no merchant is 404 `unknown_host` (see `tenancy::hosts`).
    /// Lower-case, without a trailing dot.
    pub base_domain: Option<String>,
    /// How often usage counters are flushed to the control plane.
    pub usage_flush_interval: Duration,
    /// How often every merchant's storage is measured.
    pub usage_storage_interval: Duration,
    /// Background job workers in this instance (`tenancy::jobs`); 0: this
    /// instance runs no jobs.
    pub job_workers: usize,
    /// How often an idle worker looks for due jobs (a new job wakes it at
    /// once).
    pub job_poll_interval: Duration,
    /// How often the daily jobs are enqueued for the days that closed.
    pub job_schedule_interval: Duration,
    /// Runs a failing job gets before it is a dead letter.
    pub job_max_attempts: u32,
    /// Where export jobs write merchants' archives; `None`: no export jobs.
    pub export_dir: Option<std::path::PathBuf>,
    /// Test hook (debug builds): `hang` makes every job block, holding its
    /// claim, until posd is killed.
    pub job_fault: Option<String>,
}

/// A token bucket: `burst` at once, then one more per `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub burst: u32,
    pub interval: Duration,
}

impl RateLimit {
    /// Parses `<burst>/<interval>`, e.g. `10/30s`.
    fn parse(s: &str, key: &str) -> Result<RateLimit, ConfigError> {
        let err = || {
            ConfigError::new(
                key,
                "must be <burst>/<interval>, e.g. 10/30s: at least 1 attempt, then one per interval",
            )
        };
        let (burst, interval) = s.split_once('/').ok_or_else(err)?;
        let burst: u32 = burst.trim().parse().map_err(|_| err())?;
        let interval = humantime::parse_duration(interval.trim()).map_err(|_| err())?;
        if burst == 0 || interval.is_zero() {
            return Err(err());
        }
        Ok(RateLimit { burst, interval })
    }
}

/// The raw, serde-facing shape. Field names are the figment keys; the
/// environment variable for `foo` is `POSD_FOO`.
#[derive(Deserialize)]
struct Raw {
    database_url: Option<SecretString>,
    app_database_url: Option<SecretString>,
    dedicated_server_url: Option<SecretString>,
    jwt_secret: Option<SecretString>,
    encryption_keys: Option<SecretString>,
    use_tenant_db_routing: Option<bool>,
    transaction_pooler: Option<bool>,
    listen_database_url: Option<SecretString>,
    pool_size: Option<u32>,
    tenant_pool_size: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pool_connect_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pool_idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pool_sweep_interval: Option<Duration>,
    max_tenant_pools: Option<usize>,
    connection_budget: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    placement_cache_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    statement_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    token_ttl: Option<Duration>,
    breaker_threshold: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    breaker_cooldown: Option<Duration>,
    tenant_migrations_at_boot: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    idempotency_retention: Option<Duration>,
    provision_fail_after_step: Option<u32>,
    migration_concurrency: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    move_fence_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    move_retention: Option<Duration>,
    move_round_batch: Option<u32>,
    move_copy_streams: Option<u32>,
    move_fault: Option<String>,
    #[serde(default, with = "humantime_serde")]
    offline_bill_max_age: Option<Duration>,
    trusted_proxies: Option<String>,
    login_account_limit: Option<String>,
    login_address_limit: Option<String>,
    metrics_top_merchants: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    isolation_probe_interval: Option<Duration>,
    merchant_pool_share: Option<f64>,
    noisy_share: Option<f64>,
    base_domain: Option<String>,
    #[serde(default, with = "humantime_serde")]
    usage_flush_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    usage_storage_interval: Option<Duration>,
    job_workers: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    job_poll_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    job_schedule_interval: Option<Duration>,
    job_max_attempts: Option<u32>,
    job_fault: Option<String>,
    export_dir: Option<String>,
}

/// A configuration error: names the setting and says what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {setting}: {reason}")]
pub struct ConfigError {
    pub setting: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: &str, reason: impl Into<String>) -> Self {
        Self {
            setting: env_name(key),
            reason: reason.into(),
        }
    }
}

/// The environment variable an operator uses for the figment key `key`.
pub fn env_name(key: &str) -> String {
    if key == "use_tenant_db_routing" {
        "USE_TENANT_DB_ROUTING".into()
    } else {
        format!("POSD_{}", key.to_ascii_uppercase())
    }
}

/// Rocket's own figment (Rocket.toml, `ROCKET_*`) plus posd's environment.
/// The keys posd reads (each also `POSD_<KEY>` in the environment).
/// Streams copying a large table in a tier move, by default (as many
/// table jobs as pgcopydb runs by default).
const MOVE_COPY_STREAMS: u32 = 4;
/// The most streams a move may copy with (each is two connections).
const MAX_MOVE_COPY_STREAMS: u32 = 16;

/// The most merchants `/metrics` may name (each costs four series).
const MAX_METRICS_TOP_MERCHANTS: u32 = 1000;

/// The most job workers one instance may run (each holds up to two
/// connections while it works).
const MAX_JOB_WORKERS: u32 = 32;
/// The most runs a job may get.
const MAX_JOB_ATTEMPTS: u32 = 100;

const KEYS: &[&str] = &[
    "database_url",
    "app_database_url",
    "dedicated_server_url",
    "jwt_secret",
    "encryption_keys",
    "use_tenant_db_routing",
    "transaction_pooler",
    "listen_database_url",
    "pool_size",
    "tenant_pool_size",
    "pool_connect_timeout",
    "pool_idle_timeout",
    "pool_sweep_interval",
    "max_tenant_pools",
    "connection_budget",
    "placement_cache_ttl",
    "statement_timeout",
    "token_ttl",
    "breaker_threshold",
    "breaker_cooldown",
    "tenant_migrations_at_boot",
    "idempotency_retention",
    "provision_fail_after_step",
    "migration_concurrency",
    "move_fence_timeout",
    "move_retention",
    "move_round_batch",
    "move_copy_streams",
    "move_fault",
    "offline_bill_max_age",
    "trusted_proxies",
    "login_account_limit",
    "login_address_limit",
    "metrics_top_merchants",
    "isolation_probe_interval",
    "merchant_pool_share",
    "noisy_share",
    "base_domain",
    "usage_flush_interval",
    "usage_storage_interval",
    "job_workers",
    "job_poll_interval",
    "job_schedule_interval",
    "job_max_attempts",
    "job_fault",
    "export_dir",
];

/// `POSD_*` variables that are not settings but are read elsewhere: by posd
/// itself (logging, the embedded cluster, the URL of a database a merchant
/// brings to `posd tenants move`, kept off the command line) or by the
/// project's own test, benchmark and fuzzing tooling, whose prefixes are
/// reserved.
const OTHER_VARS: &[&str] = &["LOG", "DATA_DIR", "PG_BINDIR", "BIN", "MOVE_DATABASE_URL"];
const TOOLING_PREFIXES: &[&str] = &["TEST_", "BENCH_", "FUZZ_"];

/// Refuses a `POSD_*` variable that posd does not read (a misspelt setting
/// would otherwise be ignored without a word). Names are compared as the
/// figment reads them, ignoring case.
fn refuse_unknown_variables(
    vars: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<(), ConfigError> {
    for name in vars {
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name
            .get(..5)
            .filter(|p| p.eq_ignore_ascii_case("POSD_"))
            .and_then(|_| name.get(5..))
        else {
            continue;
        };
        let known = KEYS
            .iter()
            .chain(OTHER_VARS)
            .any(|k| rest.eq_ignore_ascii_case(k))
            || TOOLING_PREFIXES.iter().any(|p| {
                rest.get(..p.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(p))
            });
        if !known {
            return Err(ConfigError {
                setting: name.to_string(),
                reason: "is not a setting".into(),
            });
        }
    }
    Ok(())
}

/// Rocket's settings that posd depends on, so that they hold even without
/// a `Rocket.toml`: JSON bodies of at most 64 KiB, and a shutdown grace
/// longer than the statement timeout.
fn rocket_defaults() -> Serialized<serde_json::Value> {
    Serialized::defaults(serde_json::json!({
        "ident": "posd",
        "log_level": "critical",
        // The client address is the peer's, unless a trusted proxy names
        // another (see `api::client`): never a header anyone can send.
        "ip_header": false,
        "limits": { "json": "64 KiB", "json/offline_bills": "1 MiB" },
        "shutdown": { "grace": 15, "mercy": 5 },
    }))
}

/// Rocket's figment (its defaults, `Rocket.toml` or `ROCKET_CONFIG`,
/// `ROCKET_*`) with posd's defaults beneath the file and posd's environment
/// on top.
pub fn figment() -> Figment {
    Figment::from(rocket::Config::default())
        .merge(rocket_defaults())
        .merge(Toml::file(Env::var_or("ROCKET_CONFIG", "Rocket.toml")).nested())
        .merge(Env::prefixed("ROCKET_").ignore(&["PROFILE"]).global())
        .select(Profile::from_env_or(
            "ROCKET_PROFILE",
            rocket::Config::DEFAULT_PROFILE,
        ))
        .merge(
            Env::prefixed("POSD_")
                .filter(|k| KEYS.iter().any(|key| k.as_str().eq_ignore_ascii_case(key)))
                .global(),
        )
        .merge(Env::raw().only(&["USE_TENANT_DB_ROUTING"]).global())
}

/// Whether the figment names a platform database; without one posd runs its
/// embedded PostgreSQL.
pub fn has_database_url(figment: &Figment) -> bool {
    figment.contains("database_url")
}

impl Settings {
    /// Extracts and validates every setting.
    #[expect(
        clippy::too_many_lines,
        reason = "one check per setting, in the order of the struct"
    )]
    pub fn from_figment(figment: &Figment) -> Result<Self, ConfigError> {
        refuse_unknown_variables(std::env::vars_os().map(|(name, _)| name))?;
        let raw: Raw = figment.extract().map_err(|e| {
            let key = e.path.last().cloned().unwrap_or_else(|| "config".into());
            ConfigError::new(&key, e.kind.to_string())
        })?;
        let database_url = required(raw.database_url, "database_url")?;
        validate_url(&database_url, "database_url")?;
        let app_database_url = required(raw.app_database_url, "app_database_url")?;
        validate_url(&app_database_url, "app_database_url")?;
        let transaction_pooler = raw.transaction_pooler.unwrap_or(false);
        let listen_database_url = raw.listen_database_url;
        if let Some(u) = &listen_database_url {
            validate_url(u, "listen_database_url")?;
        } else if transaction_pooler {
            return Err(ConfigError::new(
                "listen_database_url",
                "is required with POSD_TRANSACTION_POOLER=true: LISTEN cannot go through a transaction-mode pooler; give a direct URL of the app role",
            ));
        }
        let dedicated_server_url = raw
            .dedicated_server_url
            .unwrap_or_else(|| database_url.clone());
        validate_url(&dedicated_server_url, "dedicated_server_url")?;
        let jwt_secret = required(raw.jwt_secret, "jwt_secret")?;
        if jwt_secret.expose_secret().len() < 32 {
            return Err(ConfigError::new(
                "jwt_secret",
                "must be at least 32 bytes (generate one with `openssl rand -base64 48`)",
            ));
        }
        let keys = required(raw.encryption_keys, "encryption_keys")?;
        let keyring = Keyring::parse(keys.expose_secret())
            .map_err(|reason| ConfigError::new("encryption_keys", reason.to_string()))?;

        let pool_size = positive(raw.pool_size.unwrap_or(10), "pool_size")?;
        let tenant_pool_size = positive(raw.tenant_pool_size.unwrap_or(4), "tenant_pool_size")?;
        let connection_budget = positive(raw.connection_budget.unwrap_or(60), "connection_budget")?;
        if connection_budget < tenant_pool_size {
            return Err(ConfigError::new(
                "connection_budget",
                format!("must be at least POSD_TENANT_POOL_SIZE ({tenant_pool_size})"),
            ));
        }
        let max_tenant_pools = raw.max_tenant_pools.unwrap_or(500);
        if max_tenant_pools == 0 {
            return Err(ConfigError::new("max_tenant_pools", "must be at least 1"));
        }
        if raw.move_fault.is_some() && !cfg!(debug_assertions) {
            return Err(ConfigError::new(
                "move_fault",
                "is a test hook, honoured only by debug builds; unset it",
            ));
        }
        if raw.job_fault.is_some() && !cfg!(debug_assertions) {
            return Err(ConfigError::new(
                "job_fault",
                "is a test hook, honoured only by debug builds; unset it",
            ));
        }
        if raw.provision_fail_after_step.is_some() && !cfg!(debug_assertions) {
            return Err(ConfigError::new(
                "provision_fail_after_step",
                "is a test hook, honoured only by debug builds; unset it",
            ));
        }
        Ok(Settings {
            database_url,
            app_database_url,
            dedicated_server_url,
            jwt_secret,
            keyring,
            use_tenant_db_routing: raw.use_tenant_db_routing.unwrap_or(true),
            transaction_pooler,
            listen_database_url,
            pool_size,
            tenant_pool_size,
            pool_connect_timeout: raw.pool_connect_timeout.unwrap_or(Duration::from_secs(3)),
            pool_idle_timeout: nonzero(
                raw.pool_idle_timeout
                    .unwrap_or(Duration::from_secs(30 * 60)),
                "pool_idle_timeout",
            )?,
            pool_sweep_interval: nonzero(
                raw.pool_sweep_interval
                    .unwrap_or(Duration::from_secs(5 * 60)),
                "pool_sweep_interval",
            )?,
            max_tenant_pools,
            connection_budget,
            placement_cache_ttl: raw
                .placement_cache_ttl
                .unwrap_or(Duration::from_secs(5 * 60)),
            statement_timeout: raw.statement_timeout.unwrap_or(Duration::from_secs(10)),
            token_ttl: nonzero(
                raw.token_ttl.unwrap_or(Duration::from_secs(12 * 3600)),
                "token_ttl",
            )?,
            breaker_threshold: positive(raw.breaker_threshold.unwrap_or(3), "breaker_threshold")?,
            breaker_cooldown: nonzero(
                raw.breaker_cooldown.unwrap_or(Duration::from_secs(10)),
                "breaker_cooldown",
            )?,
            tenant_migrations_at_boot: raw.tenant_migrations_at_boot.unwrap_or(false),
            idempotency_retention: nonzero(
                raw.idempotency_retention
                    .unwrap_or(Duration::from_secs(24 * 3600)),
                "idempotency_retention",
            )?,
            provision_fail_after_step: raw.provision_fail_after_step,
            migration_concurrency: positive(
                raw.migration_concurrency.unwrap_or(4),
                "migration_concurrency",
            )?,
            move_fence_timeout: nonzero(
                raw.move_fence_timeout.unwrap_or(Duration::from_secs(1)),
                "move_fence_timeout",
            )?,
            move_retention: raw
                .move_retention
                .unwrap_or(Duration::from_secs(7 * 24 * 3600)),
            move_round_batch: positive(raw.move_round_batch.unwrap_or(10_000), "move_round_batch")?,
            move_copy_streams: match raw.move_copy_streams.unwrap_or(MOVE_COPY_STREAMS) {
                n @ 1..=MAX_MOVE_COPY_STREAMS => n,
                _ => {
                    return Err(ConfigError::new(
                        "move_copy_streams",
                        format!("must be between 1 and {MAX_MOVE_COPY_STREAMS}"),
                    ));
                }
            },
            move_fault: raw.move_fault,
            offline_bill_max_age: nonzero(
                raw.offline_bill_max_age
                    .unwrap_or(Duration::from_secs(7 * 24 * 3600)),
                "offline_bill_max_age",
            )?,
            trusted_proxies: raw
                .trusted_proxies
                .as_deref()
                .map(proxies)
                .transpose()?
                .unwrap_or_default(),
            login_account_limit: RateLimit::parse(
                raw.login_account_limit.as_deref().unwrap_or("10/30s"),
                "login_account_limit",
            )?,
            login_address_limit: RateLimit::parse(
                raw.login_address_limit.as_deref().unwrap_or("100/500ms"),
                "login_address_limit",
            )?,
            merchant_pool_share: share(
                raw.merchant_pool_share.unwrap_or(0.5),
                "merchant_pool_share",
            )?,
            noisy_share: share(raw.noisy_share.unwrap_or(0.5), "noisy_share")?,
            isolation_probe_interval: raw
                .isolation_probe_interval
                .map(|d| nonzero(d, "isolation_probe_interval"))
                .transpose()?,
            metrics_top_merchants: match raw.metrics_top_merchants.unwrap_or(20) {
                n @ 1..=MAX_METRICS_TOP_MERCHANTS => usize::try_from(n).unwrap_or(usize::MAX),
                _ => {
                    return Err(ConfigError::new(
                        "metrics_top_merchants",
                        format!("must be between 1 and {MAX_METRICS_TOP_MERCHANTS}"),
                    ));
                }
            },
            base_domain: raw
                .base_domain
                .as_deref()
                .filter(|v| !v.trim().is_empty())
                .map(base_domain)
                .transpose()?,
            usage_flush_interval: nonzero(
                raw.usage_flush_interval.unwrap_or(Duration::from_secs(10)),
                "usage_flush_interval",
            )?,
            usage_storage_interval: nonzero(
                raw.usage_storage_interval
                    .unwrap_or(Duration::from_secs(3600)),
                "usage_storage_interval",
            )?,
            job_workers: match raw.job_workers.unwrap_or(2) {
                n @ 0..=MAX_JOB_WORKERS => usize::try_from(n).unwrap_or(usize::MAX),
                _ => {
                    return Err(ConfigError::new(
                        "job_workers",
                        format!("must be between 0 and {MAX_JOB_WORKERS}"),
                    ));
                }
            },
            job_poll_interval: nonzero(
                raw.job_poll_interval.unwrap_or(Duration::from_secs(5)),
                "job_poll_interval",
            )?,
            job_schedule_interval: nonzero(
                raw.job_schedule_interval
                    .unwrap_or(Duration::from_secs(300)),
                "job_schedule_interval",
            )?,
            job_max_attempts: match raw.job_max_attempts.unwrap_or(5) {
                n @ 1..=MAX_JOB_ATTEMPTS => n,
                _ => {
                    return Err(ConfigError::new(
                        "job_max_attempts",
                        format!("must be between 1 and {MAX_JOB_ATTEMPTS}"),
                    ));
                }
            },
            job_fault: raw.job_fault,
            export_dir: raw
                .export_dir
                .filter(|d| !d.trim().is_empty())
                .map(std::path::PathBuf::from),
        })
    }
}

/// A comma-separated list of CIDRs (`10.0.0.0/8, ::1/128`) or addresses.
fn proxies(v: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ConfigError::new(
                        "trusted_proxies",
                        format!("`{s}` is not a CIDR such as 10.0.0.0/8 or an address"),
                    )
                })
        })
        .collect()
}

/// Whether `s` is `min_len` to 63 lowercase letters, digits or `-`, not
/// starting with `-`: a merchant's slug (at least 2), a database server's
/// name (at least 1).
pub fn is_slug(s: &str, min_len: usize) -> bool {
    (min_len..=63).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !s.starts_with('-')
}

/// Whether `name` is a lower-case DNS name: labels of 1 to 63 letters,
/// digits and inner hyphens, 253 characters at most, and a last label that
/// starts with a letter (as every top-level domain does: no IPv4 address
/// passes).
pub fn is_dns_name(name: &str) -> bool {
    let label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.len() <= 253
        && name.split('.').all(label)
        && name
            .rsplit('.')
            .next()
            .is_some_and(|l| l.starts_with(|c: char| c.is_ascii_lowercase()))
}

/// `POSD_BASE_DOMAIN`, lower-cased and without a trailing dot.
fn base_domain(v: &str) -> Result<String, ConfigError> {
    let name = v.trim().trim_end_matches('.').to_ascii_lowercase();
    if is_dns_name(&name) {
        Ok(name)
    } else {
        Err(ConfigError::new(
            "base_domain",
            format!("`{v}` is not a DNS name such as pos.example.com"),
        ))
    }
}

fn required(v: Option<SecretString>, key: &str) -> Result<SecretString, ConfigError> {
    match v {
        Some(v) if !v.expose_secret().trim().is_empty() => Ok(v),
        _ => Err(ConfigError::new(key, "is not set")),
    }
}

/// A share: more than 0, at most 1.
fn share(v: f64, key: &str) -> Result<f64, ConfigError> {
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(ConfigError::new(
            key,
            "must be a share above 0 and at most 1, e.g. 0.5",
        ))
    }
}

fn positive(v: u32, key: &str) -> Result<u32, ConfigError> {
    if v == 0 {
        Err(ConfigError::new(key, "must be at least 1"))
    } else {
        Ok(v)
    }
}

fn nonzero(v: Duration, key: &str) -> Result<Duration, ConfigError> {
    if v.is_zero() {
        Err(ConfigError::new(key, "must be longer than zero"))
    } else {
        Ok(v)
    }
}

impl Settings {
    /// Where the LISTEN connection goes: `POSD_LISTEN_DATABASE_URL`, or the
    /// app URL.
    pub fn listen_url(&self) -> &SecretString {
        self.listen_database_url
            .as_ref()
            .unwrap_or(&self.app_database_url)
    }
}

fn validate_url(v: &SecretString, key: &str) -> Result<(), ConfigError> {
    let url = url::Url::parse(v.expose_secret())
        .map_err(|e| ConfigError::new(key, format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(ConfigError::new(
            key,
            "must be a postgres:// or postgresql:// URL",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{ConfigError, base_domain, is_dns_name, refuse_unknown_variables};

    #[test]
    fn dns_names() {
        for ok in [
            "pos.example.com",
            "a.b",
            "localhost",
            "x-1.example",
            "9lives.shop",
        ] {
            assert!(is_dns_name(ok), "{ok}");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = format!("{}a.com", "a.".repeat(125));
        for bad in [
            "",
            "Pos.example.com",
            "a..b",
            ".a.b",
            "a.b.",
            "-a.b",
            "a-.b",
            "a_b.c",
            "1.2.3.4",
            "shop.example.123",
            "shop.example.9x",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(!is_dns_name(bad), "{bad}");
        }
        assert_eq!(
            base_domain(" POS.Example.com. ").unwrap(),
            "pos.example.com"
        );
        assert_eq!(
            base_domain("pos example").unwrap_err().to_string(),
            "configuration: POSD_BASE_DOMAIN: `pos example` is not a DNS name such as pos.example.com"
        );
    }

    fn check(names: &[&str]) -> Result<(), ConfigError> {
        refuse_unknown_variables(names.iter().map(Into::into))
    }

    #[test]
    fn an_unknown_posd_variable_is_named() {
        assert_eq!(
            check(&["PATH", "POSD_POOL_SIZE", "POSD_MIGRATON_CONCURRENCY"])
                .unwrap_err()
                .to_string(),
            "configuration: POSD_MIGRATON_CONCURRENCY: is not a setting"
        );
        assert!(check(&["posd_pool_sise"]).is_err(), "case does not hide it");
        assert!(check(&["POSD_"]).is_err());
    }

    #[test]
    fn settings_and_the_variables_read_elsewhere_pass() {
        check(&[
            "POSD_MIGRATION_CONCURRENCY",
            "posd_pool_size",
            "POSD_LOG",
            "POSD_DATA_DIR",
            "POSD_PG_BINDIR",
            "POSD_TEST_DATABASE_URL",
            "POSD_FUZZ_SEED",
            "POSD_BENCH_SUITE",
            "ROCKET_PORT",
            "USE_TENANT_DB_ROUTING",
        ])
        .unwrap();
    }
}
