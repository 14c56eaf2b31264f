//! `posd plans ...` and `posd flags ...`: plans, merchants' plans and limit
//! overrides, feature flags and merchants' flag overrides, on the control
//! plane (as the owner role). Every serving instance learns of a change by
//! NOTIFY; each change is recorded in the admin audit as the operator
//! `cli`.

use anyhow::{Context as _, bail};
use posd::{
    config::Settings,
    db::{
        platform::{
            Platform, audit,
            plans::{
                FeatureFlag, FlagChanges, LimitKind, LimitOverrides, MerchantPlan, NewFeatureFlag,
                Plan,
            },
        },
        pool,
    },
    tenancy::context,
};
use serde_json::json;

/// The operator the audit records for these commands.
const ACTOR: &str = "cli";

fn owner(settings: &Settings) -> anyhow::Result<diesel::PgConnection> {
    pool::connect(&settings.database_url).context("cannot connect to POSD_DATABASE_URL")
}

fn show(limit: Option<i64>) -> String {
    limit.map_or_else(|| "-".to_string(), |n| n.to_string())
}

/// One line per plan, by rank; `-` is unlimited.
#[expect(clippy::print_stdout, reason = "the listing is the command's output")]
pub fn list_plans(settings: &Settings) -> anyhow::Result<()> {
    let mut conn = owner(settings)?;
    let plans = Plan::list(&mut Platform::new(&mut conn)).context("cannot list the plans")?;
    println!(
        "{:<16} {:<20} {:>6} {:>10} {:>12} {:>10} {:>14}",
        "KEY", "NAME", "RANK", "MAX_STAFF", "MAX_PRODUCTS", "REQ/MIN", "STORAGE_BYTES"
    );
    for p in plans {
        println!(
            "{:<16} {:<20} {:>6} {:>10} {:>12} {:>10} {:>14}",
            p.key,
            p.name,
            p.rank,
            show(p.max_staff),
            show(p.max_products),
            show(p.requests_per_minute),
            show(p.max_storage_bytes)
        );
    }
    Ok(())
}

/// A `--limit` argument: `maxProducts=500`, `max_products=unlimited`.
pub fn parse_limit(s: &str) -> Result<(LimitKind, Option<i64>), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected NAME=VALUE, such as maxProducts=500"))?;
    let kind = LimitKind::ALL
        .into_iter()
        .find(|k| k.field() == name || k.column() == name)
        .ok_or_else(|| {
            format!(
                "`{name}` is not a limit (one of {})",
                LimitKind::ALL.map(LimitKind::field).join(", ")
            )
        })?;
    let value = match value {
        "unlimited" => None,
        v => Some(
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("`{v}`: a whole number >= 0, or `unlimited`"))?,
        ),
    };
    Ok((kind, value))
}

/// Puts a merchant on a plan and/or changes its limit overrides, then
/// prints its effective limits.
#[expect(clippy::print_stdout, reason = "the result is the command's output")]
pub fn set_plan(
    settings: &Settings,
    who: &str,
    plan: Option<&str>,
    limits: &[(LimitKind, Option<i64>)],
    clear_limits: bool,
) -> anyhow::Result<()> {
    let mut conn = owner(settings)?;
    let p = &mut Platform::new(&mut conn);
    let m = super::moves::find_merchant(p, who)?;
    let ctx = p.transaction(|p| -> anyhow::Result<_> {
        let current = MerchantPlan::find(p, m.id).context("cannot read the merchant")?;
        if let Some(plan) = plan {
            Plan::find(p, plan).map_err(|e| match e {
                diesel::result::Error::NotFound => {
                    anyhow::anyhow!("no plan {plan} (see `posd plans list`)")
                }
                e => anyhow::Error::new(e).context("cannot read the plan"),
            })?;
            MerchantPlan::set_plan(p, m.id, plan).context("cannot set the plan")?;
        }
        if clear_limits || !limits.is_empty() {
            let mut overrides = if clear_limits {
                LimitOverrides::default()
            } else {
                LimitOverrides::from_json(&current.limit_overrides).map_err(anyhow::Error::msg)?
            };
            overrides.0.extend(limits.iter().copied());
            MerchantPlan::set_limit_overrides(p, m.id, &overrides)
                .context("cannot set the limit overrides")?;
        }
        let after = MerchantPlan::find(p, m.id).context("cannot read the merchant")?;
        audit::record(
            p,
            ACTOR,
            "merchant.plan",
            Some(m.id),
            json!({ "plan": after.plan, "limitOverrides": after.limit_overrides }),
        )?;
        context::load(p, m.id)?.context("the merchant vanished")
    })?;
    println!(
        "{} is on plan {}; limits: maxStaff {}, maxProducts {}, requestsPerMinute {}, maxStorageBytes {}",
        m.slug,
        ctx.plan.key,
        show(ctx.limits.max_staff),
        show(ctx.limits.max_products),
        show(ctx.limits.requests_per_minute),
        show(ctx.limits.max_storage_bytes)
    );
    Ok(())
}

/// One line per flag.
#[expect(clippy::print_stdout, reason = "the listing is the command's output")]
pub fn list_flags(settings: &Settings) -> anyhow::Result<()> {
    let mut conn = owner(settings)?;
    let flags =
        FeatureFlag::list(&mut Platform::new(&mut conn)).context("cannot list the flags")?;
    println!(
        "{:<24} {:<8} {:<12} {:<8} DESCRIPTION",
        "KEY", "DEFAULT", "MIN_PLAN", "ROLLOUT"
    );
    for f in flags {
        println!(
            "{:<24} {:<8} {:<12} {:<8} {}",
            f.key,
            if f.default_on { "on" } else { "off" },
            f.min_plan.as_deref().unwrap_or("-"),
            f.rollout_percent
                .map_or_else(|| "-".to_string(), |r| format!("{r}%")),
            f.description
        );
    }
    Ok(())
}

/// What `posd flags set` changes; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct FlagSet {
    pub description: Option<String>,
    pub default_on: Option<bool>,
    pub min_plan: Option<MinPlan>,
    pub rollout_percent: Option<Rollout>,
}

/// `on`/`off`, for `--default`.
pub fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("`{s}`: on or off")),
    }
}

/// `--min-plan`: a plan's key, or `none` (no gate).
#[derive(Debug, Clone)]
pub struct MinPlan(pub Option<String>);

pub fn parse_min_plan(s: &str) -> Result<MinPlan, String> {
    if s == "none" {
        return Ok(MinPlan(None));
    }
    let valid = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
        && !s.starts_with(['-', '_']);
    if valid {
        Ok(MinPlan(Some(s.to_string())))
    } else {
        Err(format!(
            "`{s}` is not a plan's key (see `posd plans list`), nor `none`"
        ))
    }
}

/// `--rollout`: 0 to 100, or `none` (no rollout).
#[derive(Debug, Clone, Copy)]
pub struct Rollout(pub Option<i16>);

pub fn parse_rollout(s: &str) -> Result<Rollout, String> {
    if s == "none" {
        return Ok(Rollout(None));
    }
    s.trim_end_matches('%')
        .parse::<i16>()
        .ok()
        .filter(|n| (0..=100).contains(n))
        .map(|n| Rollout(Some(n)))
        .ok_or_else(|| format!("`{s}`: a percentage from 0 to 100, or `none`"))
}

/// Creates the flag, or changes the fields given of an existing one.
#[expect(clippy::print_stdout, reason = "the result is the command's output")]
pub fn set_flag(settings: &Settings, key: &str, set: &FlagSet) -> anyhow::Result<()> {
    let valid = key.len() <= 64
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
    if !valid {
        bail!(
            "`{key}`: a flag's key is 1 to 64 lowercase letters, digits or '_', starting with a letter"
        );
    }
    let mut conn = owner(settings)?;
    let p = &mut Platform::new(&mut conn);
    let flag = p.transaction(|p| -> anyhow::Result<_> {
        let min_plan = set.min_plan.clone().map(|m| m.0);
        let rollout = set.rollout_percent.map(|r| r.0);
        if let Some(Some(plan)) = &min_plan {
            Plan::find(p, plan).map_err(|e| match e {
                diesel::result::Error::NotFound => {
                    anyhow::anyhow!("no plan {plan} (see `posd plans list`)")
                }
                e => anyhow::Error::new(e).context("cannot read the plan"),
            })?;
        }
        let (flag, action) = match FeatureFlag::find(p, key) {
            Err(diesel::result::Error::NotFound) => (
                FeatureFlag::insert(
                    p,
                    &NewFeatureFlag {
                        key,
                        description: set.description.as_deref().unwrap_or(""),
                        default_on: set.default_on.unwrap_or(false),
                        min_plan: min_plan.clone().flatten().as_deref(),
                        rollout_percent: rollout.flatten(),
                    },
                )
                .context("cannot create the flag")?,
                "flag.create",
            ),
            Err(e) => return Err(anyhow::Error::new(e).context("cannot read the flag")),
            Ok(_) => (
                FeatureFlag::update(
                    p,
                    key,
                    &FlagChanges {
                        description: set.description.clone(),
                        default_on: set.default_on,
                        min_plan: min_plan.clone(),
                        rollout_percent: rollout,
                    },
                )
                .context("cannot change the flag")?,
                "flag.update",
            ),
        };
        audit::record(p, ACTOR, action, None, json!(flag))?;
        Ok(flag)
    })?;
    println!(
        "flag {}: default {}, min plan {}, rollout {}",
        flag.key,
        if flag.default_on { "on" } else { "off" },
        flag.min_plan.as_deref().unwrap_or("-"),
        flag.rollout_percent
            .map_or_else(|| "-".to_string(), |r| format!("{r}%"))
    );
    Ok(())
}

/// Sets (`Some`) or removes (`None`) a merchant's override of a flag, then
/// says whether the flag is on for it.
#[expect(clippy::print_stdout, reason = "the result is the command's output")]
pub fn override_flag(
    settings: &Settings,
    who: &str,
    key: &str,
    enabled: Option<bool>,
) -> anyhow::Result<()> {
    let mut conn = owner(settings)?;
    let p = &mut Platform::new(&mut conn);
    let m = super::moves::find_merchant(p, who)?;
    let ctx = p.transaction(|p| -> anyhow::Result<_> {
        match FeatureFlag::find(p, key) {
            Err(diesel::result::Error::NotFound) => bail!("no flag {key} (see `posd flags list`)"),
            Err(e) => return Err(anyhow::Error::new(e).context("cannot read the flag")),
            Ok(_) => {}
        }
        match enabled {
            Some(on) => FeatureFlag::set_override(p, m.id, key, on)?,
            None => {
                FeatureFlag::clear_override(p, m.id, key)?;
            }
        }
        audit::record(
            p,
            ACTOR,
            if enabled.is_some() {
                "flag.override"
            } else {
                "flag.override.clear"
            },
            Some(m.id),
            json!({ "flag": key, "enabled": enabled }),
        )?;
        context::load(p, m.id)?.context("the merchant vanished")
    })?;
    println!(
        "{key} is {} for {}",
        if ctx.enabled(key) { "on" } else { "off" },
        m.slug
    );
    Ok(())
}
