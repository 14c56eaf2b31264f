//! `posd tenants top`: a serving instance's merchants with the most load,
//! read from its `GET /admin/tenants/top` (the load is in that instance's
//! memory, not in the database).

use std::time::Duration;

use anyhow::{Context as _, bail};
use posd::tenancy::load::{Ranking, secs};

/// What to ask an instance for.
pub struct Query<'a> {
    /// The instance, `http://127.0.0.1:8000`.
    pub url: &'a str,
    pub token: &'a str,
    pub by: &'a str,
    pub window: &'a str,
    pub limit: u32,
}

/// Asks the instance and prints one line per merchant, then `other` and
/// the tiers.
#[expect(clippy::print_stdout, reason = "the table is the command's output")]
pub fn run(q: &Query<'_>) -> anyhow::Result<()> {
    let url = format!(
        "{}/api/v2/POS/admin/tenants/top",
        q.url.trim_end_matches('/')
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut res = agent
        .get(&url)
        .query("by", q.by)
        .query("window", q.window)
        .query("limit", q.limit.to_string())
        .header("Authorization", format!("Bearer {}", q.token))
        .call()
        .with_context(|| format!("cannot reach posd at {}", q.url))?;
    let status = res.status();
    if !status.is_success() {
        let body: serde_json::Value = res.body_mut().read_json().unwrap_or_default();
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or("no error message");
        bail!("{url}: {status}: {message}");
    }
    let top: Ranking = res
        .body_mut()
        .read_json()
        .context("cannot read the answer")?;
    print!("{}", render(&top));
    Ok(())
}

fn ms(us: u64) -> String {
    format!("{:.1}", secs(us) * 1000.0)
}

/// The ranking as a table.
pub fn render(top: &Ranking) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "last {} min on this instance: {} merchants\n{:<36}  {:<24}  {:<9}  {:>8}  {:>6}  {:>6}  {:>10}  {:>10}  {:>6}  heaviest route\n",
        top.window_minutes,
        top.merchants,
        "merchant",
        "slug",
        "tier",
        "requests",
        "5xx",
        "429",
        "db ms",
        "wait ms",
        "share",
    );
    for m in &top.items {
        let route = m.top_routes.first().map_or("-", |r| r.route.as_str());
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{:<36}  {:<24}  {:<9}  {:>8}  {:>6}  {:>6}  {:>10}  {:>10}  {:>5.0}%  {route}",
            m.merchant_id.to_string(),
            m.slug,
            m.tier,
            m.tally.requests,
            m.tally.errors,
            m.tally.throttled,
            ms(m.tally.db_time_us),
            ms(m.tally.wait_us),
            m.pool_share * 100.0,
        );
    }
    let totals = std::iter::once(("other".to_string(), top.other)).chain(
        top.by_tier
            .iter()
            .map(|t| (format!("tier {}", t.tier), t.tally)),
    );
    for (name, t) in totals {
        let _ = writeln!(
            out,
            "{name:<36}  {:<24}  {:<9}  {:>8}  {:>6}  {:>6}  {:>10}  {:>10}",
            "",
            "",
            t.requests,
            t.errors,
            t.throttled,
            ms(t.db_time_us),
            ms(t.wait_us),
        );
    }
    out
}
