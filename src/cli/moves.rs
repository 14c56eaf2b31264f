//! `posd tenants move`, `cleanup-moves`, `export` and `restore`: live tier
//! moves and archives from the command line (the same runs and format as the
//! admin routes).

use std::{io::IsTerminal, time::Duration};

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use posd::{
    app::App,
    db::{
        ids::MerchantId,
        kinds::MoveStatus,
        platform::{Platform, exports::TenantExport, merchants::Merchant, moves::Move},
        pool,
    },
    tenancy::{
        Tier,
        moves::{self, MoveRequest, archive},
        provisioning,
    },
};

/// A merchant named by its id or its slug.
pub fn resolve(app: &App, merchant: &str) -> anyhow::Result<Merchant> {
    let mut conn =
        pool::connect(&app.settings.database_url).context("cannot connect to POSD_DATABASE_URL")?;
    find_merchant(&mut Platform::new(&mut conn), merchant)
}

/// The merchant `merchant` names: its id, or its slug.
pub fn find_merchant(p: &mut Platform<'_>, merchant: &str) -> anyhow::Result<Merchant> {
    let found = match uuid::Uuid::parse_str(merchant) {
        Ok(id) => Merchant::find(p, MerchantId(id)),
        Err(_) => Merchant::find_by_slug(p, merchant),
    };
    match found {
        Ok(m) => Ok(m),
        Err(diesel::result::Error::NotFound) => bail!("no merchant {merchant}"),
        Err(e) => Err(e).context("cannot read the merchant"),
    }
}

fn find(app: &App, run: posd::db::ids::RunId) -> anyhow::Result<Move> {
    let mut conn =
        pool::connect(&app.settings.database_url).context("cannot connect to POSD_DATABASE_URL")?;
    Move::find(&mut Platform::new(&mut conn), run)?.context("the move vanished")
}

/// Starts moving `merchant` to `tier`; with `wait`, follows it to its end
/// (a progress bar on a terminal, one line per phase otherwise). This
/// process drives the move unless a serving posd already does.
#[expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the run id and the outcome are the command's output, progress goes to stderr"
)]
pub fn start(
    app: &App,
    merchant: &str,
    tier: Tier,
    database_url: Option<&str>,
    wait: bool,
) -> anyhow::Result<()> {
    let m = resolve(app, merchant)?;
    let database_url = database_url
        .map(provisioning::parse_database_url)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--database-url: {e}"))?;
    let mv = moves::start(
        &app.tenancy,
        &MoveRequest {
            merchant: m.id,
            tier,
            database_url,
            run_id: None,
            server: None,
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    app.mover.wake();
    println!(
        "move {} of {} ({}): {} -> {}",
        mv.id, m.slug, m.id, mv.source_tier, mv.target_tier
    );
    if !wait {
        eprintln!(
            "a serving posd drives it; follow it with `posd tenants list` or GET /api/v2/POS/admin/tenants/{}/moves/{}",
            m.id, mv.id
        );
        return Ok(());
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(1);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} rows {msg}",
        ) {
            bar.set_style(style);
        }
        bar
    });
    let mut phase = None;
    let done = loop {
        let now = find(app, mv.id)?;
        let (rows, total) = copied(&now);
        match &bar {
            Some(bar) => {
                bar.set_length(total.max(1));
                bar.set_position(rows);
                bar.set_message(format!("{} (backlog {})", now.phase, now.backlog));
            }
            None if phase != Some(now.phase) => {
                eprintln!(
                    "phase {} ({rows}/{total} rows copied, backlog {})",
                    now.phase, now.backlog
                );
            }
            None => {}
        }
        phase = Some(now.phase);
        if !now.is_active() {
            break now;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match done.status {
        MoveStatus::Done => {
            println!(
                "moved {} to the {} tier; its writes were held {} ms; the old placement is kept as {} until {}",
                m.slug,
                done.target_tier,
                done.fence_ms.unwrap_or_default(),
                done.retired_as.as_deref().unwrap_or("-"),
                done.retain_until
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default()
            );
            Ok(())
        }
        status => bail!(
            "the move {status}: {} ({}); {} stays on the {} tier",
            done.error.as_deref().unwrap_or("no reason recorded"),
            done.error_code.as_deref().unwrap_or("-"),
            m.slug,
            done.source_tier
        ),
    }
}

/// Rows copied and the snapshot's total, over every table.
fn copied(mv: &Move) -> (u64, u64) {
    mv.tables.as_array().map_or((0, 0), |tables| {
        tables.iter().fold((0, 0), |(r, t), e| {
            (
                r + e["rows"].as_u64().unwrap_or(0),
                t + e["total"].as_u64().unwrap_or(0),
            )
        })
    })
}

/// Drops the old placements that finished moves kept.
#[expect(
    clippy::print_stdout,
    reason = "what was dropped is the command's output"
)]
pub fn cleanup(app: &App, all: bool) -> anyhow::Result<()> {
    let cleaned = moves::cleanup(&app.tenancy, all).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut failed = 0;
    for c in &cleaned {
        match &c.error {
            None => println!(
                "dropped    {} (merchant {}, move {})",
                c.dropped, c.merchant_id, c.run
            ),
            Some(e) => {
                failed += 1;
                println!(
                    "failed     {} (merchant {}, move {}): {e}",
                    c.dropped, c.merchant_id, c.run
                );
            }
        }
    }
    println!(
        "{} old placement(s) dropped, {failed} failed",
        cleaned.len() - failed
    );
    if failed > 0 {
        bail!("{failed} old placement(s) could not be dropped; run again");
    }
    Ok(())
}

/// Writes the merchant's archive to `out` (standard output when `None`) and
/// records the export (deprovisioning requires one).
#[expect(
    clippy::print_stderr,
    reason = "the summary goes to stderr, the archive may be on stdout"
)]
pub fn export(app: &App, merchant: &str, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    let m = resolve(app, merchant)?;
    let manifest = match out {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let mut w = std::io::BufWriter::with_capacity(64 << 10, file);
            archive::export(&app.tenancy, m.id, &mut w).map_err(|e| anyhow::anyhow!("{e}"))?
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::with_capacity(64 << 10, stdout.lock());
            archive::export(&app.tenancy, m.id, &mut w).map_err(|e| anyhow::anyhow!("{e}"))?
        }
    };
    let mut conn =
        pool::connect(&app.settings.database_url).context("cannot connect to POSD_DATABASE_URL")?;
    TenantExport::record(&mut Platform::new(&mut conn), m.id, manifest.tier, "cli")
        .context("the export is complete but could not be recorded")?;
    let rows: i64 = manifest.tables.iter().map(|t| t.rows).sum();
    eprintln!(
        "exported {} ({} tier, tenant version {}): {rows} rows in {} tables",
        m.slug,
        manifest.tier,
        manifest.tenant_version,
        manifest.tables.len()
    );
    Ok(())
}

/// Loads an archive into `merchant` at its placement (which must hold none
/// of its data), verified by the archive's manifest.
#[expect(clippy::print_stdout, reason = "the summary is the command's output")]
pub fn restore(app: &App, file: &std::path::Path, merchant: &str) -> anyhow::Result<()> {
    let m = resolve(app, merchant)?;
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut r = std::io::BufReader::with_capacity(64 << 10, f);
    let manifest =
        archive::restore(&app.tenancy, m.id, &mut r).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rows: i64 = manifest.tables.iter().map(|t| t.rows).sum();
    println!(
        "restored {rows} rows of {} (exported {}) into {} on the {} tier; counts and checksums verified",
        manifest.slug,
        manifest.exported_at.to_rfc3339(),
        m.slug,
        m.tier
    );
    Ok(())
}
