//! `posd tenants domains ...`: a merchant's custom domains, as the admin
//! routes manage them (register pending, verify, remove), on the control
//! plane as the owner role. Serving instances learn of a change by NOTIFY;
//! each change is recorded in the admin audit as the operator `cli`.

use anyhow::{Context as _, bail};
use posd::{
    config::{Settings, is_dns_name},
    db::{
        platform::{Platform, audit, domains::MerchantDomain},
        pool,
    },
    tenancy::hosts::under_base,
};
use serde_json::json;

/// A change to one of the merchant's domains.
#[derive(Clone, Copy)]
pub enum Change {
    Add,
    Verify,
    Remove,
}

/// The operator the audit records for these commands.
const ACTOR: &str = "cli";

/// A domain as given, checked as the admin route checks it.
fn checked(settings: &Settings, domain: &str) -> anyhow::Result<String> {
    let domain = domain.to_ascii_lowercase();
    let domain = domain.strip_suffix('.').unwrap_or(&domain).to_string();
    if !domain.contains('.') || !is_dns_name(&domain) {
        bail!("{domain} is not a domain name such as shop.example.com");
    }
    if let Some(base) = settings.base_domain.as_deref()
        && under_base(&domain, base)
    {
        bail!(
            "{domain} is under POSD_BASE_DOMAIN ({base}): merchants are reached at <slug>.{base}"
        );
    }
    Ok(domain)
}

#[expect(clippy::print_stdout, reason = "the domains are the command's output")]
fn print(rows: &[MerchantDomain]) {
    for d in rows {
        let state = d
            .verified_at
            .map_or_else(|| "pending".to_string(), |at| format!("verified {at}"));
        println!("{:<48} {state}", d.domain);
    }
}

/// Makes `change` to `domain` of `merchant` (its id or its slug), if
/// given, then prints the merchant's domains.
pub fn run(
    settings: &Settings,
    merchant: &str,
    change: Option<(Change, &str)>,
) -> anyhow::Result<()> {
    let mut conn =
        pool::connect(&settings.database_url).context("cannot connect to POSD_DATABASE_URL")?;
    let p = &mut Platform::new(&mut conn);
    let m = super::moves::find_merchant(p, merchant)?;
    if let Some((change, domain)) = change {
        let domain = checked(settings, domain)?;
        p.transaction(|p| -> anyhow::Result<()> {
            let action = match change {
                Change::Add => {
                    if MerchantDomain::insert(p, m.id, &domain)?.is_none() {
                        return match MerchantDomain::find(p, &domain)? {
                            Some(d) if d.merchant_id == m.id => Ok(()),
                            _ => bail!("another merchant has {domain}"),
                        };
                    }
                    "domain.add"
                }
                Change::Verify => match MerchantDomain::verify(p, m.id, &domain) {
                    Ok(_) => "domain.verify",
                    Err(diesel::result::Error::NotFound) => {
                        bail!("{} has no domain {domain}", m.slug)
                    }
                    Err(e) => return Err(e.into()),
                },
                Change::Remove => {
                    if !MerchantDomain::delete(p, m.id, &domain)? {
                        bail!("{} has no domain {domain}", m.slug);
                    }
                    "domain.remove"
                }
            };
            audit::record(p, ACTOR, action, Some(m.id), json!({ "domain": domain }))?;
            Ok(())
        })?;
    }
    print(&MerchantDomain::list(p, m.id)?);
    Ok(())
}
