//! `posd tenants ...`: the operator's view of the fleet.

use std::io::IsTerminal;

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use posd::{
    app::url_user,
    config::Settings,
    db::{
        platform::{Platform, merchants::Merchant, migration_state::schema_versions, moves::Move},
        pool,
    },
    tenancy::{
        SHARED_SCHEMA,
        fleet::{self, Outcome, OutcomeStatus, Selection},
        migrations::latest_tenant_version,
    },
};

fn owner(settings: &Settings) -> anyhow::Result<diesel::PgConnection> {
    pool::connect(&settings.database_url).context("cannot connect to POSD_DATABASE_URL")
}

/// Prints one line per merchant: slug, id, tier, status, version, and the
/// tier move under way, if any.
#[expect(clippy::print_stdout, reason = "the listing is the command's output")]
pub fn list(settings: &Settings) -> anyhow::Result<()> {
    let mut conn = owner(settings)?;
    let mut p = Platform::new(&mut conn);
    let mut merchants = Merchant::list(&mut p).context("cannot list the merchants")?;
    merchants.retain(|m| !m.probe);
    let targets = fleet::targets(&mut p, &Selection::default())?;
    let shared = schema_versions(&mut p, &[SHARED_SCHEMA.to_string()])
        .context("cannot read the shared tier's version")?
        .pop()
        .and_then(|(_, v)| v);
    let latest = latest_tenant_version();
    let moving: std::collections::HashMap<_, _> = Move::all_active(&mut p)
        .context("cannot list the tier moves")?
        .into_iter()
        .map(|m| (m.merchant_id, m))
        .collect();
    println!(
        "{:<24} {:<36} {:<9} {:<9} {:<16} {:<7} MOVE",
        "SLUG", "MERCHANT ID", "TIER", "STATUS", "VERSION", "PENDING"
    );
    for m in merchants {
        let version = if m.tier == posd::tenancy::Tier::Shared {
            shared.clone()
        } else {
            targets
                .iter()
                .find(|t| t.merchant == m.id)
                .and_then(|t| t.before.clone())
        };
        let pending = if version.as_deref() == Some(latest.as_str()) {
            "-"
        } else {
            "yes"
        };
        let moving = moving.get(&m.id).map_or_else(
            || "-".to_string(),
            |mv| {
                format!(
                    "to {} ({}, {}, run {})",
                    mv.target_tier, mv.status, mv.phase, mv.id
                )
            },
        );
        println!(
            "{:<24} {:<36} {:<9} {:<9} {:<16} {:<7} {}",
            m.slug,
            m.id,
            m.tier,
            m.status,
            version.as_deref().unwrap_or("none"),
            pending,
            moving
        );
    }
    Ok(())
}

fn line(o: &Outcome) -> String {
    format!(
        "{:<10} {:<24} {} {:<9} {} -> {} {}ms{}",
        o.status,
        o.slug,
        o.merchant_id,
        o.tier.as_str(),
        o.before.as_deref().unwrap_or("none"),
        o.after.as_deref().unwrap_or("none"),
        o.duration_ms,
        o.error
            .as_deref()
            .map(|e| format!(" error: {e}"))
            .unwrap_or_default()
    )
}

/// Runs a fleet migration with a progress bar on a terminal and one line
/// per tenant otherwise. Fails when any tenant failed.
#[expect(
    clippy::print_stdout,
    reason = "the per-tenant lines and the summary are the command's output"
)]
pub fn migrate(
    settings: &Settings,
    selection: &Selection,
    concurrency: usize,
    dry_run: bool,
) -> anyhow::Result<()> {
    let app_role = url_user(&settings.app_database_url)
        .context("POSD_APP_DATABASE_URL: the URL names no user")?;
    let total = {
        let mut conn = owner(settings)?;
        fleet::targets(&mut Platform::new(&mut conn), selection)?.len()
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(u64::try_from(total).unwrap_or(u64::MAX));
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} tenants {msg}",
        ) {
            bar.set_style(style);
        }
        bar
    });
    let report = fleet::migrate(
        settings,
        &app_role,
        "cli",
        selection,
        concurrency,
        dry_run,
        &|o| match &bar {
            Some(bar) => {
                if o.error.is_some() {
                    bar.println(line(o));
                }
                bar.inc(1);
            }
            None => println!("{}", line(o)),
        },
    )?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let r = &report.run;
    let pending = report
        .outcomes
        .iter()
        .filter(|o| o.status == OutcomeStatus::Pending)
        .count();
    println!(
        "tenant migrations to {}: {} tenants, {} migrated, {} failed, {} up to date{} (run {})",
        r.target_version,
        r.total,
        r.migrated,
        r.failed,
        r.skipped,
        if dry_run {
            format!(", {pending} pending (dry run)")
        } else {
            String::new()
        },
        r.id
    );
    if r.failed > 0 {
        bail!("{} tenant(s) failed; fix them and run again", r.failed);
    }
    Ok(())
}

/// Prints a merchant's usage per day, as a table or as CSV.
#[expect(clippy::print_stdout, reason = "the usage is the command's output")]
pub fn usage(
    settings: &Settings,
    merchant: &str,
    from: Option<chrono::NaiveDate>,
    to: Option<chrono::NaiveDate>,
    csv: bool,
) -> anyhow::Result<()> {
    use posd::{db::platform::usage::UsageDay, tenancy::usage};

    let (from, to) = usage::range(from, to, chrono::Utc::now().date_naive())
        .map_err(|e| anyhow::anyhow!("--{e}"))?;
    let mut conn = owner(settings)?;
    let p = &mut Platform::new(&mut conn);
    let m = super::moves::find_merchant(p, merchant)?;
    let days = UsageDay::list(p, m.id, from, to).context("cannot read the merchant's usage")?;
    if csv {
        print!("{}", usage::csv(m.id, &days));
        return Ok(());
    }
    println!(
        "{:<10} {:>10} {:>8} {:>12} {:>12} {:>14}",
        "DAY", "API CALLS", "ORDERS", "DB TIME MS", "ROWS", "BYTES"
    );
    let gauge = |v: Option<i64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    for d in &days {
        println!(
            "{:<10} {:>10} {:>8} {:>12.1} {:>12} {:>14}",
            d.day,
            d.api_calls,
            d.orders,
            usage::db_time_ms(d.db_time_us),
            gauge(d.rows_stored),
            gauge(d.bytes_stored)
        );
    }
    Ok(())
}
