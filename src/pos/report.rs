//! The daily report, in the merchant's time zone.
//!
//! A day is the merchant's local business day, `[local midnight, next local
//! midnight)` by default, or from the merchant's `businessDayCutoffHour`
//! to the same hour the next day (a bar open past midnight sets 4: its
//! sales until 04:00 count on the evening's day); 23 or 25 hours long
//! across a DST change. Sales count
//! on the day the order was made; refunds on the day they were given. The
//! figures are sums over the rows they cover: `salesMinor` is the sum of
//! the orders' totals (gross − discounts + tax for tax-exclusive orders,
//! gross − discounts for tax-inclusive ones, whose tax is within),
//! `roundingMinor` the sum of their cash rounding, the payments per method
//! add up to sales + rounding, and `netMinor` = sales + rounding −
//! refunds. Sums are computed in `numeric` and `i128`,
//! so no number of orders can overflow them. An offline bill counts on the
//! day it was made, even when it arrives after the day closed:
//! `lateOrderCount` says how many of a day's orders did.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::Serialize;

use crate::{
    db::{
        kinds::Method,
        tenant::{TenantTx, reports},
    },
    error::{ApiError, ApiResult},
};

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DailyReport {
    pub date: NaiveDate,
    pub timezone: String,
    pub currency: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub order_count: i64,
    pub voided_count: i64,
    /// Orders of the day recorded after it ended (offline bills that
    /// arrived late): a day's figures can change after it closes, and this
    /// says by how many orders.
    pub late_order_count: i64,
    #[schema(value_type = i64)]
    pub gross_sales_minor: i128,
    #[schema(value_type = i64)]
    pub discounts_minor: i128,
    #[schema(value_type = i64)]
    pub tax_minor: i128,
    /// The sum of the orders' totals.
    #[schema(value_type = i64)]
    pub sales_minor: i128,
    /// The orders' cash rounding: what rounding cash payments to the
    /// merchant's `cashRounding` step added (negative: took off). The
    /// payments per method add up to sales + rounding.
    #[schema(value_type = i64)]
    pub rounding_minor: i128,
    #[schema(value_type = i64)]
    pub refunds_minor: i128,
    pub refund_count: i64,
    /// Sales + rounding − refunds.
    #[schema(value_type = i64)]
    pub net_minor: i128,
    #[schema(value_type = BTreeMap<Method, i64>)]
    pub payments_by_method: BTreeMap<Method, i128>,
    #[schema(value_type = BTreeMap<Method, i64>)]
    pub refunds_by_method: BTreeMap<Method, i128>,
}

/// The first instant of business day `date` in `tz`: local midnight, or
/// `cutoff_hour` (0 to 23) past it.
pub fn day_start(tz: chrono_tz::Tz, date: NaiveDate, cutoff_hour: u32) -> ApiResult<DateTime<Utc>> {
    let start = date
        .and_hms_opt(cutoff_hour.min(23), 0, 0)
        .ok_or_else(|| ApiError::invalid("date", "is out of range"))?;
    // Where that time does not exist (a DST gap), the day starts at the
    // first local time that does.
    (0..=3)
        .find_map(|h| {
            start
                .checked_add_signed(chrono::Duration::hours(h))
                .and_then(|t| tz.from_local_datetime(&t).earliest())
        })
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| ApiError::invalid("date", "is not a day in the merchant's time zone"))
}

/// The business day `now` falls in, in `tz` with the day starting at
/// `cutoff_hour`.
pub fn business_day(tz: chrono_tz::Tz, now: DateTime<Utc>, cutoff_hour: u32) -> NaiveDate {
    let local = now.with_timezone(&tz).naive_local();
    local
        .checked_sub_signed(chrono::Duration::hours(i64::from(cutoff_hour)))
        .unwrap_or(local)
        .date()
}

pub fn daily(
    tx: &mut TenantTx<'_>,
    date: NaiveDate,
    tz: chrono_tz::Tz,
    cutoff_hour: u32,
    currency: &str,
) -> ApiResult<DailyReport> {
    let next = date
        .succ_opt()
        .ok_or_else(|| ApiError::invalid("date", "is out of range"))?;
    let (from, to) = (
        day_start(tz, date, cutoff_hour)?,
        day_start(tz, next, cutoff_hour)?,
    );
    let s = reports::sales(tx, from, to)?;
    let payments = reports::payments(tx, from, to)?;
    let refunds = reports::refunds(tx, from, to)?;
    let refunds_minor: i128 = refunds.iter().map(|r| r.amount.0).sum();
    Ok(DailyReport {
        date,
        timezone: tz.name().to_string(),
        currency: currency.to_string(),
        from,
        to,
        order_count: s.orders,
        voided_count: s.voided,
        late_order_count: s.late,
        gross_sales_minor: s.gross.0,
        discounts_minor: s.discount.0,
        tax_minor: s.tax.0,
        sales_minor: s.total.0,
        rounding_minor: s.rounding.0,
        refunds_minor,
        refund_count: refunds.iter().map(|r| r.count).sum(),
        net_minor: s.total.0 + s.rounding.0 - refunds_minor,
        payments_by_method: payments
            .into_iter()
            .map(|p| (p.method, p.amount.0))
            .collect(),
        refunds_by_method: refunds
            .into_iter()
            .map(|r| (r.method, r.amount.0))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_business_day_starts_at_the_cutoff() {
        let tz = chrono_tz::Europe::Paris;
        let day = NaiveDate::from_ymd_opt(2026, 11, 9).unwrap();
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(day_start(tz, day, 0).unwrap(), at("2026-11-08T23:00:00Z"));
        assert_eq!(day_start(tz, day, 4).unwrap(), at("2026-11-09T03:00:00Z"));
        // 02:30 local on the 10th is the 9th's business day from 04:00.
        assert_eq!(business_day(tz, at("2026-11-10T01:30:00Z"), 4), day);
        assert_eq!(
            business_day(tz, at("2026-11-10T01:30:00Z"), 0),
            day.succ_opt().unwrap()
        );
        // 29 March 2026, 02:00 does not exist in Paris: the day starts at 03:00.
        let spring = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
        assert_eq!(
            day_start(tz, spring, 2).unwrap(),
            at("2026-03-29T01:00:00Z")
        );
    }
}
