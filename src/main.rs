//! The `posd` command: serve the API, run migrations, mint operator tokens.

use std::{process::ExitCode, time::Duration};

use anyhow::{Context as _, anyhow, bail};
use clap::{Parser, Subcommand};

mod cli;
use posd::{config, embedded};
use rocket::figment::Figment;
use secrecy::{ExposeSecret, SecretString};

#[derive(Parser)]
#[command(
    name = "posd",
    version,
    about = "Hybrid multi-tenant point-of-sale backend"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
#[expect(
    clippy::doc_markdown,
    reason = "the doc comments are the --help text, shown as written"
)]
enum Cmd {
    /// Serve the API. Without POSD_DATABASE_URL, runs on a private
    /// PostgreSQL cluster in POSD_DATA_DIR.
    Serve,
    /// Run platform migrations and bring the shared tier up to date.
    Migrate,
    /// Tenant operations: list tenants, migrate schema and dedicated tenants.
    Tenants {
        #[command(subcommand)]
        command: TenantsCmd,
    },
    /// Plans: list them, put a merchant on one, override its limits.
    Plans {
        #[command(subcommand)]
        command: PlansCmd,
    },
    /// Feature flags: list, create or change them, override one for a merchant.
    Flags {
        #[command(subcommand)]
        command: FlagsCmd,
    },
    /// Encryption keys: generate one, re-seal every stored credential.
    Keys {
        #[command(subcommand)]
        command: KeysCmd,
    },
    /// Print a platform operator token (and nothing else) on stdout.
    AdminToken {
        /// How long the token is valid, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// The operator's name, recorded as the token's subject.
        #[arg(long, default_value = "operator")]
        subject: String,
    },
}

#[derive(Subcommand)]
#[expect(
    clippy::doc_markdown,
    reason = "the doc comments are the --help text, shown as written"
)]
enum TenantsCmd {
    /// Show every merchant's tier, status and tenant migration version.
    List,
    /// Apply pending tenant migrations to schema and dedicated tenants.
    Migrate {
        /// Only this merchant (repeatable).
        #[arg(long = "merchant-id")]
        merchant_ids: Vec<uuid::Uuid>,
        /// Only tenants on this tier (schema or dedicated).
        #[arg(long, value_parser = ["schema", "dedicated"])]
        tier: Option<String>,
        /// Every schema and dedicated tenant (the default when nothing else is selected).
        #[arg(long)]
        all: bool,
        /// How many tenants to migrate at once (bounded by POSD_CONNECTION_BUDGET).
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Report what would be migrated without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Move a merchant's data to another tier while it keeps trading.
    Move {
        /// The merchant: its id or its slug.
        merchant: String,
        /// Where its data goes: shared, schema or dedicated.
        #[arg(long, value_parser = ["shared", "schema", "dedicated"])]
        to: String,
        /// A database the merchant brings (with --to dedicated); otherwise
        /// posd creates one on POSD_DEDICATED_SERVER_URL.
        #[arg(long, env = "POSD_MOVE_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// Follow the move to its end (this process drives it unless a
        /// serving posd does); without it, a serving posd drives it.
        #[arg(long)]
        wait: bool,
    },
    /// Write a merchant's data (every tier) as an archive: one snapshot,
    /// streamed, with a manifest of row counts and checksums.
    Export {
        /// The merchant: its id or its slug.
        merchant: String,
        /// The file to write (standard output by default).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Load an archive into a merchant that has no data at its placement
    /// (the same merchant or another; provision it first to restore onto its
    /// own schema or database). Verified by the archive's manifest.
    Restore {
        /// The archive (`posd tenants export`).
        file: std::path::PathBuf,
        /// The merchant to load it into: its id or its slug.
        #[arg(long)]
        merchant: String,
    },
    /// Drop the old placements that finished moves kept: those past
    /// POSD_MOVE_RETENTION, or every one with --all.
    CleanupMoves {
        #[arg(long)]
        all: bool,
    },
    /// List a merchant's custom domains, or register one (pending), verify
    /// it (from then on it routes to the merchant) or remove it.
    Domains {
        /// The merchant: its id or its slug.
        merchant: String,
        /// Register this domain, pending verification.
        #[arg(long, conflicts_with_all = ["verify", "remove"])]
        add: Option<String>,
        /// Mark this domain verified: the operator has confirmed that the
        /// merchant owns it.
        #[arg(long, conflicts_with = "remove")]
        verify: Option<String>,
        /// Remove this domain.
        #[arg(long)]
        remove: Option<String>,
    },
    /// Show a serving instance's merchants with the most load over the
    /// last minutes (requests, 5xx, 429s, database and pool-wait time,
    /// share of the pool, heaviest route). The load lives in each
    /// instance's memory: this asks one instance over HTTP, with an
    /// operator token signed with POSD_JWT_SECRET.
    Top {
        /// Rank by db_time, requests or errors.
        #[arg(long, default_value = "db_time", value_parser = ["db_time", "requests", "errors"])]
        by: String,
        /// Whole minutes, 1m to 15m.
        #[arg(long, default_value = "5m")]
        window: String,
        /// Merchants listed.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// The instance (default: the address and port posd serves on,
        /// from ROCKET_ADDRESS / ROCKET_PORT or Rocket.toml).
        #[arg(long)]
        url: Option<String>,
    },
    /// Show a merchant's usage per UTC day (API calls, orders, database
    /// time, rows and bytes stored), as recorded in the control plane
    /// (serving instances flush theirs every POSD_USAGE_FLUSH_INTERVAL).
    Usage {
        /// The merchant: its id or its slug.
        merchant: String,
        /// First day, YYYY-MM-DD (29 days before --to by default).
        #[arg(long)]
        from: Option<chrono::NaiveDate>,
        /// Last day, YYYY-MM-DD (today by default).
        #[arg(long)]
        to: Option<chrono::NaiveDate>,
        /// Print CSV with a header row, for billing.
        #[arg(long)]
        csv: bool,
    },
}

#[derive(Subcommand)]
enum PlansCmd {
    /// Show every plan and its limits (`-`: unlimited).
    List,
    /// Put a merchant on a plan and/or override its limits; they apply at
    /// once on every serving instance.
    Set {
        /// The merchant: its id or its slug.
        merchant: String,
        /// The plan's key (see `posd plans list`).
        plan: Option<String>,
        /// A limit of the merchant's own, replacing the plan's:
        /// NAME=VALUE or NAME=unlimited (repeatable), NAME one of maxStaff,
        /// maxProducts, requestsPerMinute, maxStorageBytes.
        #[arg(long = "limit", value_parser = cli::plans::parse_limit)]
        limits: Vec<(posd::db::platform::plans::LimitKind, Option<i64>)>,
        /// Remove the merchant's limit overrides first (it follows its plan).
        #[arg(long)]
        clear_limits: bool,
    },
}

#[derive(Subcommand)]
enum FlagsCmd {
    /// Show every feature flag.
    List,
    /// Create a flag, or change the fields given of an existing one.
    Set {
        /// The flag's key: lowercase letters, digits and '_'.
        key: String,
        /// What merchants get when no override, gate or rollout decides.
        #[arg(long = "default", value_parser = cli::plans::parse_on_off)]
        default_on: Option<bool>,
        /// Off for merchants on a plan ranked below this one; `none` removes the gate.
        #[arg(long, value_parser = cli::plans::parse_min_plan)]
        min_plan: Option<cli::plans::MinPlan>,
        /// On for this share of merchants (0 to 100), instead of the
        /// default; `none` removes the rollout.
        #[arg(long, value_parser = cli::plans::parse_rollout)]
        rollout: Option<cli::plans::Rollout>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Turn a flag on or off for one merchant, or `clear` its override.
    Override {
        /// The merchant: its id or its slug.
        merchant: String,
        /// The flag's key.
        flag: String,
        #[arg(value_parser = ["on", "off", "clear"])]
        state: String,
    },
}

#[derive(Subcommand)]
#[expect(
    clippy::doc_markdown,
    reason = "the doc comments are the --help text, shown as written"
)]
enum KeysCmd {
    /// Print a new random AES-256 key as `id:base64`, for POSD_ENCRYPTION_KEYS.
    Generate {
        /// The new key's id (1 to 32 letters, digits, `-` or `_`).
        #[arg(long)]
        id: String,
    },
    /// Re-seal every stored credential under the active (first) key of
    /// POSD_ENCRYPTION_KEYS. Resumable: run it again after a failure.
    Rotate,
}

/// posd's own events at INFO (one access line per request among them).
const DEFAULT_LOG_FILTER: &str = "info,hyper=warn";

/// Logs go to stderr, filtered by `POSD_LOG` (a tracing filter such as
/// `debug` or `info,posd::access=warn`), by default [`DEFAULT_LOG_FILTER`].
///
/// Rocket logs through the `log` crate, and its lines reach this subscriber
/// too: the launch banner at WARN, and for every refused request a WARN
/// "data guard failed" and the catcher it chose, none of which is news (the
/// access line says it, and the answer's JSON says why). Without `POSD_LOG`
/// only the errors among them are kept; with `POSD_LOG` the filter decides
/// for them as for posd's own events.
fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::{EnvFilter, Layer, filter::filter_fn, prelude::*};

    let explicit = std::env::var("POSD_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = explicit
        .as_deref()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_LOG_FILTER));
    let quiet_log_crate = explicit.is_none();
    let log_crate = filter_fn(move |meta| {
        !(quiet_log_crate
            && meta.fields().field("log.target").is_some()
            && *meta.level() > tracing::Level::ERROR)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(log_crate),
        )
        .init();
}

/// Set by the benchmark suite (`bench/`) on the posd it starts, and by
/// nothing else.
const BENCH_SUITE_VAR: &str = "POSD_BENCH_SUITE";

/// A binary built with `--features bench-control` serves an unauthenticated
/// route that reads any merchant's catalog, bypassing row-level security
/// (`src/api/bench_control.rs`). Such a binary serves only when the
/// benchmark suite starts it.
fn bench_control_check(built_with_bench_control: bool, suite: Option<&str>) -> anyhow::Result<()> {
    if built_with_bench_control && suite != Some("1") {
        bail!(
            "this binary was built with --features bench-control (an unauthenticated route that bypasses row-level security) and serves only under the benchmark suite ({BENCH_SUITE_VAR}=1); build posd with `cargo build --release` to serve"
        );
    }
    Ok(())
}

#[expect(clippy::print_stderr, reason = "the command's error, for the operator")]
fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain: each context, then its cause.
            eprintln!("posd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration, with the embedded cluster started when no database
/// URL is configured.
#[expect(
    clippy::print_stderr,
    reason = "tells the operator which database is used"
)]
fn configure() -> anyhow::Result<(Figment, Option<embedded::Cluster>)> {
    let figment = config::figment();
    if config::has_database_url(&figment) {
        return Ok((figment, None));
    }
    let dir = embedded::default_data_dir();
    eprintln!(
        "posd: no POSD_DATABASE_URL set: using the embedded PostgreSQL in {}\n\
         posd: (to use your own server, set POSD_DATABASE_URL, POSD_APP_DATABASE_URL, \
         POSD_JWT_SECRET and POSD_ENCRYPTION_KEYS; see README.md)",
        dir.display()
    );
    let cluster = embedded::Cluster::start(&dir, &embedded::Options::default())?;
    eprintln!(
        "posd: embedded PostgreSQL listening on 127.0.0.1:{} (credentials in {}/secrets.env)",
        cluster.port(),
        cluster.data_dir.display()
    );
    let figment = figment.join(cluster.provider());
    Ok((figment, Some(cluster)))
}

#[expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the commands' output: keys, tokens and reports on stdout, progress on stderr"
)]
#[expect(clippy::too_many_lines, reason = "one arm per command")]
fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Serve => {
            bench_control_check(
                cfg!(feature = "bench-control"),
                std::env::var(BENCH_SUITE_VAR).ok().as_deref(),
            )?;
            let (figment, cluster) = configure()?;
            let settings = config::Settings::from_figment(&figment)?;
            let app = posd::boot(settings)?;
            let result = rocket::execute(posd::rocket(app, figment).launch());
            drop(cluster);
            // Rocket's error panics when dropped unseen: it is written out
            // here, at once.
            result.map(drop).map_err(|e| anyhow!(e.to_string()))
        }
        Cmd::Migrate => {
            let (figment, _cluster) = configure()?;
            let settings = config::Settings::from_figment(&figment)?;
            posd::app::migrate(&settings)?;
            eprintln!("posd: migrations applied");
            Ok(())
        }
        Cmd::Tenants {
            command:
                TenantsCmd::Top {
                    by,
                    window,
                    limit,
                    url,
                },
        } => {
            let url = match url {
                Some(u) => u,
                None => {
                    let rocket: rocket::Config = config::figment()
                        .extract()
                        .context("cannot read the address posd serves on")?;
                    format!("http://{}:{}", rocket.address, rocket.port)
                }
            };
            let token = operator_token("posd tenants top", Duration::from_secs(300))?;
            cli::top::run(&cli::top::Query {
                url: &url,
                token: token.expose_secret(),
                by: &by,
                window: &window,
                limit,
            })
        }
        Cmd::Tenants { command } => {
            let (figment, _cluster) = configure()?;
            let settings = config::Settings::from_figment(&figment)?;
            posd::app::migrate(&settings)?;
            match command {
                TenantsCmd::List => cli::tenants::list(&settings),
                TenantsCmd::Migrate {
                    merchant_ids,
                    tier,
                    all,
                    concurrency,
                    dry_run,
                } => {
                    if all && (!merchant_ids.is_empty() || tier.is_some()) {
                        bail!("--all cannot be combined with --merchant-id or --tier");
                    }
                    let selection = posd::tenancy::fleet::Selection {
                        merchants: merchant_ids
                            .into_iter()
                            .map(posd::db::ids::MerchantId)
                            .collect(),
                        tier: tier.as_deref().and_then(posd::tenancy::Tier::parse),
                    };
                    cli::tenants::migrate(&settings, &selection, concurrency, dry_run)
                }
                TenantsCmd::Move {
                    merchant,
                    to,
                    database_url,
                    wait,
                } => {
                    let tier = posd::tenancy::Tier::parse(&to).context("--to: unknown tier")?;
                    let app = posd::boot(settings)?;
                    cli::moves::start(&app, &merchant, tier, database_url.as_deref(), wait)
                }
                TenantsCmd::Export { merchant, out } => {
                    let app = posd::boot(settings)?;
                    cli::moves::export(&app, &merchant, out.as_deref())
                }
                TenantsCmd::Restore { file, merchant } => {
                    let app = posd::boot(settings)?;
                    cli::moves::restore(&app, &file, &merchant)
                }
                TenantsCmd::CleanupMoves { all } => {
                    let app = posd::boot(settings)?;
                    cli::moves::cleanup(&app, all)
                }
                TenantsCmd::Domains {
                    merchant,
                    add,
                    verify,
                    remove,
                } => {
                    use cli::domains::Change;
                    let change = add
                        .map(|d| (Change::Add, d))
                        .or(verify.map(|d| (Change::Verify, d)))
                        .or(remove.map(|d| (Change::Remove, d)));
                    cli::domains::run(
                        &settings,
                        &merchant,
                        change.as_ref().map(|(c, d)| (*c, d.as_str())),
                    )
                }
                TenantsCmd::Usage {
                    merchant,
                    from,
                    to,
                    csv,
                } => cli::tenants::usage(&settings, &merchant, from, to, csv),
                TenantsCmd::Top { .. } => bail!("posd tenants top is answered without a database"),
            }
        }
        Cmd::Plans { command } => {
            let (figment, _cluster) = configure()?;
            let settings = config::Settings::from_figment(&figment)?;
            posd::app::migrate(&settings)?;
            match command {
                PlansCmd::List => cli::plans::list_plans(&settings),
                PlansCmd::Set {
                    merchant,
                    plan,
                    limits,
                    clear_limits,
                } => cli::plans::set_plan(
                    &settings,
                    &merchant,
                    plan.as_deref(),
                    &limits,
                    clear_limits,
                ),
            }
        }
        Cmd::Flags { command } => {
            let (figment, _cluster) = configure()?;
            let settings = config::Settings::from_figment(&figment)?;
            posd::app::migrate(&settings)?;
            match command {
                FlagsCmd::List => cli::plans::list_flags(&settings),
                FlagsCmd::Set {
                    key,
                    default_on,
                    min_plan,
                    rollout,
                    description,
                } => cli::plans::set_flag(
                    &settings,
                    &key,
                    &cli::plans::FlagSet {
                        description,
                        default_on,
                        min_plan,
                        rollout_percent: rollout,
                    },
                ),
                FlagsCmd::Override {
                    merchant,
                    flag,
                    state,
                } => {
                    let enabled = match state.as_str() {
                        "on" => Some(true),
                        "off" => Some(false),
                        _ => None,
                    };
                    cli::plans::override_flag(&settings, &merchant, &flag, enabled)
                }
            }
        }
        Cmd::Keys {
            command: KeysCmd::Generate { id },
        } => {
            let spec = posd::crypto::Keyring::generate_spec(&id);
            posd::crypto::Keyring::parse(&spec)?;
            println!("{spec}");
            Ok(())
        }
        Cmd::Keys {
            command: KeysCmd::Rotate,
        } => {
            let (figment, _cluster) = configure()?;
            let settings = config::Settings::from_figment(&figment)?;
            posd::app::migrate(&settings)?;
            let r = posd::tenancy::keys::rotate(&settings)?;
            for f in &r.failures {
                let merchant = f
                    .merchant_id
                    .map_or_else(|| "platform".to_string(), |m| m.to_string());
                println!(
                    "failed     {} merchant {merchant}: {}",
                    f.credential, f.error
                );
            }
            println!(
                "credentials under key {}: {} total, {} re-sealed, {} already current, {} failed",
                r.active_key, r.total, r.resealed, r.already_current, r.failed
            );
            if r.failed > 0 {
                bail!(
                    "{} credential(s) not re-sealed; fix and run again",
                    r.failed
                );
            }
            Ok(())
        }
        Cmd::AdminToken { ttl, subject } => {
            println!("{}", operator_token(&subject, ttl)?.expose_secret());
            Ok(())
        }
    }
}

/// An operator token for `subject`, valid `ttl`, signed with
/// `POSD_JWT_SECRET` (or the embedded cluster's secret).
fn operator_token(subject: &str, ttl: Duration) -> anyhow::Result<SecretString> {
    let mut figment = config::figment();
    if !config::has_database_url(&figment) {
        let secrets = embedded::Secrets::load(&embedded::default_data_dir())
            .map_err(|e| anyhow!("{e} (run `posd serve` once, or set POSD_JWT_SECRET)"))?;
        figment = figment.join(secrets.provider());
    }
    let secret: SecretString = figment
        .extract_inner::<String>("jwt_secret")
        .map_err(|_| anyhow!("configuration: POSD_JWT_SECRET: is not set"))?
        .into();
    if secret.expose_secret().len() < 32 {
        bail!("configuration: POSD_JWT_SECRET: must be at least 32 bytes");
    }
    posd::auth::jwt::JwtKeys::new(&secret)
        .issue_admin(subject, ttl)
        .map(SecretString::from)
        .context("cannot sign the token")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use super::bench_control_check;

    #[test]
    fn a_bench_control_binary_serves_only_under_the_benchmark_suite() {
        let refused = bench_control_check(true, None)
            .expect_err("refused without the variable")
            .to_string();
        assert!(refused.contains("bench-control"), "{refused}");
        assert!(refused.contains("POSD_BENCH_SUITE=1"), "{refused}");
        assert!(!refused.contains('\n'), "one line: {refused}");
        assert!(bench_control_check(true, Some("0")).is_err());
        assert!(bench_control_check(true, Some("")).is_err());
        assert!(bench_control_check(true, Some("1")).is_ok());
    }

    #[test]
    fn a_normal_binary_ignores_the_variable() {
        assert!(bench_control_check(false, None).is_ok());
        assert!(bench_control_check(false, Some("1")).is_ok());
    }

    #[test]
    fn this_binary_follows_its_feature() {
        assert_eq!(
            bench_control_check(cfg!(feature = "bench-control"), None).is_err(),
            cfg!(feature = "bench-control")
        );
    }
}
