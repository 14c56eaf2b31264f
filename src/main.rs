//! The `posd` command: serve the API, run migrations, mint operator tokens.

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
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
enum Cmd {
    /// Serve the API. Without POSD_DATABASE_URL, runs on a private
    /// PostgreSQL cluster in POSD_DATA_DIR.
    Serve,
    /// Run platform migrations and bring the shared tier up to date.
    Migrate,
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("POSD_LOG")
                .unwrap_or_else(|_| "info,rocket=warn,hyper=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("posd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration, with the embedded cluster started when no database
/// URL is configured.
fn configure() -> Result<(Figment, Option<embedded::Cluster>), String> {
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
    let cluster =
        embedded::Cluster::start(&dir, &embedded::Options::default()).map_err(|e| e.to_string())?;
    eprintln!(
        "posd: embedded PostgreSQL listening on 127.0.0.1:{} (credentials in {}/secrets.env)",
        cluster.port(),
        cluster.data_dir.display()
    );
    let figment = figment.join(cluster.provider());
    Ok((figment, Some(cluster)))
}

fn run(cmd: Cmd) -> Result<(), String> {
    match cmd {
        Cmd::Serve => {
            let (figment, cluster) = configure()?;
            let settings = config::Settings::from_figment(&figment).map_err(|e| e.to_string())?;
            let app = posd::boot(settings).map_err(|e| e.to_string())?;
            let result = rocket::execute(posd::rocket(app, figment).launch());
            drop(cluster);
            result.map(drop).map_err(|e| e.to_string())
        }
        Cmd::Migrate => {
            let (figment, _cluster) = configure()?;
            let settings = config::Settings::from_figment(&figment).map_err(|e| e.to_string())?;
            posd::app::migrate(&settings).map_err(|e| e.to_string())?;
            eprintln!("posd: migrations applied");
            Ok(())
        }
        Cmd::AdminToken { ttl, subject } => {
            let mut figment = config::figment();
            if !config::has_database_url(&figment) {
                let secrets = embedded::Secrets::load(&embedded::default_data_dir())
                    .map_err(|e| format!("{e} (run `posd serve` once, or set POSD_JWT_SECRET)"))?;
                figment = figment.join(secrets.provider());
            }
            let secret: SecretString = figment
                .extract_inner::<String>("jwt_secret")
                .map_err(|_| "configuration: POSD_JWT_SECRET: is not set".to_string())?
                .into();
            if secret.expose_secret().len() < 32 {
                return Err("configuration: POSD_JWT_SECRET: must be at least 32 bytes".into());
            }
            let token = posd::auth::jwt::JwtKeys::new(&secret)
                .issue_admin(&subject, ttl)
                .map_err(|e| e.to_string())?;
            println!("{token}");
            Ok(())
        }
    }
}
