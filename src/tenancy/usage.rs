//! Usage metering: what each merchant uses per UTC day (API calls, orders,
//! database time in its transactions, rows and bytes stored), kept in the
//! control plane (`merchant_usage`) for operators and billing.
//!
//! Policy: recording usage never adds a database round trip to a request.
//! The request path adds to counters in memory ([`Usage`]); a background
//! task flushes them every `POSD_USAGE_FLUSH_INTERVAL` in one statement
//! that adds them to the stored ones, so every instance adds its own counts
//! and several instances sum correctly. A flush that fails puts its counts
//! back: nothing is lost while the instance lives (what it holds when it
//! dies without a clean shutdown is). Storage is a gauge: a pass every
//! `POSD_USAGE_STORAGE_INTERVAL` measures one merchant at a time and sets
//! that day's value; a merchant it cannot measure is logged and skipped.
//! The last measurement is part of the merchant's tenant context, where it
//! enforces `maxStorageBytes`; one that crosses the limit NOTIFYs every
//! instance to reload the context.

use std::{collections::HashMap, fmt::Write as _, time::Duration};

use chrono::{NaiveDate, Utc};
use parking_lot::Mutex;

use super::{Tenancy, Tier, classification::TENANT, context::storage_full, tenant_db::TenantDb};
use crate::{
    db::{
        ids::MerchantId,
        platform::{
            merchants::Merchant,
            plans::LimitKind,
            usage::{UsageDay, UsageDelta},
        },
    },
    error::ApiResult,
};

/// Counters of one merchant on one day, not flushed yet.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    api_calls: i64,
    orders: i64,
    db_time_us: i64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.api_calls = self.api_calls.saturating_add(other.api_calls);
        self.orders = self.orders.saturating_add(other.orders);
        self.db_time_us = self.db_time_us.saturating_add(other.db_time_us);
    }
}

/// The counters of this instance since its last flush, by merchant and
/// UTC day.
#[derive(Debug, Default)]
pub struct Usage {
    pending: Mutex<HashMap<(MerchantId, NaiveDate), Counts>>,
}

impl Usage {
    fn record(&self, merchant: MerchantId, counts: Counts) {
        let day = Utc::now().date_naive();
        self.pending
            .lock()
            .entry((merchant, day))
            .or_default()
            .add(counts);
    }

    /// One authenticated staff request, and the time its transactions
    /// took.
    pub fn request(&self, merchant: MerchantId, db_time: Duration) {
        self.record(
            merchant,
            Counts {
                api_calls: 1,
                db_time_us: i64::try_from(db_time.as_micros()).unwrap_or(i64::MAX),
                ..Counts::default()
            },
        );
    }

    /// Orders created.
    pub fn orders(&self, merchant: MerchantId, n: usize) {
        if n > 0 {
            self.record(
                merchant,
                Counts {
                    orders: i64::try_from(n).unwrap_or(i64::MAX),
                    ..Counts::default()
                },
            );
        }
    }

    /// Takes every pending counter, to be flushed.
    fn take(&self) -> Vec<UsageDelta> {
        std::mem::take(&mut *self.pending.lock())
            .into_iter()
            .map(|((merchant, day), c)| UsageDelta {
                merchant,
                day,
                api_calls: c.api_calls,
                orders: c.orders,
                db_time_us: c.db_time_us,
            })
            .collect()
    }

    /// Puts back counters whose flush failed, adding to those recorded
    /// since.
    fn restore(&self, deltas: Vec<UsageDelta>) {
        let mut pending = self.pending.lock();
        for d in deltas {
            pending.entry((d.merchant, d.day)).or_default().add(Counts {
                api_calls: d.api_calls,
                orders: d.orders,
                db_time_us: d.db_time_us,
            });
        }
    }

    /// Adds the pending counters to the control plane, in one statement;
    /// on failure they are kept for the next flush.
    pub async fn flush(&self, app: &Tenancy) -> ApiResult<()> {
        let deltas = self.take();
        if deltas.is_empty() {
            return Ok(());
        }
        let batch = deltas.clone();
        let result = app.platform(move |p| Ok(UsageDay::add(p, &batch)?)).await;
        if result.is_err() {
            self.restore(deltas);
        }
        result.map(drop)
    }
}

/// Measures the storage of every merchant, one at a time, and records it
/// as today's. A merchant that cannot be measured (not served, its
/// database unreachable) is logged and skipped. Returns how many were
/// measured.
pub async fn measure_storage(app: &Tenancy) -> ApiResult<usize> {
    let merchants = app.platform(|p| Ok(Merchant::list(p)?)).await?;
    let mut measured = 0;
    // Probe merchants are posd's own: never billed.
    for m in merchants.into_iter().filter(|m| !m.probe) {
        match measure_one(app, m.id).await {
            Ok(()) => measured += 1,
            Err(e) => {
                tracing::warn!(merchant = %m.id, slug = %m.slug, error = %e, "could not measure the merchant's storage");
            }
        }
    }
    Ok(measured)
}

async fn measure_one(app: &Tenancy, merchant: MerchantId) -> ApiResult<()> {
    let before = app.context(merchant).await?;
    let db = TenantDb::for_job(app, Some(merchant)).await?;
    let own_tables = db.placement().tier != Tier::Shared;
    let (rows, bytes) = db
        .run(move |tx| Ok(tx.storage(TENANT, own_tables)?))
        .await?;
    // Contexts hold the last measurement to enforce `maxStorageBytes`: when
    // this one crosses the limit (either way), every instance reloads it.
    let crossed = before.is_some_and(|c| {
        let limit = c.limit(LimitKind::MaxStorageBytes);
        c.storage_full().is_some() != storage_full(limit, Some(bytes)).is_some()
    });
    let day = Utc::now().date_naive();
    app.platform(move |p| {
        UsageDay::set_storage(p, merchant, day, rows, bytes)?;
        if crossed {
            UsageDay::notify_context(p, merchant)?;
        }
        Ok(())
    })
    .await
}

/// Flushes the counters every `POSD_USAGE_FLUSH_INTERVAL` and measures
/// storage every `POSD_USAGE_STORAGE_INTERVAL`, until the runtime ends.
pub fn spawn(app: Tenancy) {
    let flush = app.clone();
    super::spawn_every(app.settings.usage_flush_interval, false, move || {
        let app = flush.clone();
        async move {
            if let Err(e) = app.usage.flush(&app).await {
                tracing::warn!(error = %e, "could not flush usage counters; they are kept for the next flush");
            }
        }
    });
    let period = app.settings.usage_storage_interval;
    super::spawn_every(period, false, move || {
        let app = app.clone();
        async move {
            if let Err(e) = measure_storage(&app).await {
                tracing::warn!(error = %e, "could not measure the merchants' storage");
            }
        }
    });
}

/// Why a range of days is refused: the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RangeError {
    pub field: &'static str,
    pub message: String,
}

/// The longest range of days one read covers.
pub const MAX_DAYS: i64 = 366;
/// The days a read covers when it names no start.
pub const DEFAULT_DAYS: i64 = 30;

/// The days from `from` to `to`, inclusive: by default the
/// [`DEFAULT_DAYS`] up to `to`, which is `today` by default.
pub fn range(
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    today: NaiveDate,
) -> Result<(NaiveDate, NaiveDate), RangeError> {
    let to = to.unwrap_or(today);
    let from = from.unwrap_or_else(|| {
        to.checked_sub_days(chrono::Days::new(DEFAULT_DAYS.unsigned_abs() - 1))
            .unwrap_or(NaiveDate::MIN)
    });
    if from > to {
        return Err(RangeError {
            field: "from",
            message: format!("{from} is after to ({to})"),
        });
    }
    if (to - from).num_days() + 1 > MAX_DAYS {
        return Err(RangeError {
            field: "to",
            message: format!("the range spans more than {MAX_DAYS} days"),
        });
    }
    Ok((from, to))
}

/// The days as CSV, with a header row; database time in milliseconds, and
/// an unmeasured gauge as an empty field.
pub fn csv(merchant: MerchantId, days: &[UsageDay]) -> String {
    let mut out = String::from("merchantId,day,apiCalls,orders,dbTimeMs,rowsStored,bytesStored\n");
    let gauge = |v: Option<i64>| v.map_or_else(String::new, |v| v.to_string());
    for d in days {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{merchant},{},{},{},{},{},{}",
            d.day,
            d.api_calls,
            d.orders,
            db_time_ms(d.db_time_us),
            gauge(d.rows_stored),
            gauge(d.bytes_stored),
        );
    }
    out
}

/// Microseconds as milliseconds, to the microsecond.
pub fn db_time_ms(us: i64) -> f64 {
    #[expect(
        clippy::as_conversions,
        clippy::cast_precision_loss,
        reason = "a day's database time in microseconds is far below 2^52, exact in a f64"
    )]
    let us = us as f64;
    us / 1000.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn ranges_default_to_the_last_thirty_days_and_are_bounded() {
        let today = day("2026-11-30");
        assert_eq!(range(None, None, today), Ok((day("2026-11-01"), today)));
        assert_eq!(
            range(None, Some(day("2026-01-31")), today),
            Ok((day("2026-01-02"), day("2026-01-31")))
        );
        assert_eq!(
            range(Some(day("2026-12-01")), None, today)
                .unwrap_err()
                .field,
            "from"
        );
        assert!(range(Some(day("2025-12-01")), Some(day("2026-12-01")), today).is_ok());
        assert_eq!(
            range(Some(day("2025-11-30")), Some(day("2026-12-01")), today)
                .unwrap_err()
                .field,
            "to"
        );
    }

    #[test]
    fn a_failed_flush_puts_its_counts_back() {
        let usage = Usage::default();
        let m = MerchantId(uuid::Uuid::new_v4());
        usage.request(m, Duration::ZERO);
        usage.orders(m, 2);
        let taken = usage.take();
        assert!(usage.take().is_empty());
        usage.request(m, Duration::ZERO);
        usage.restore(taken);
        let back = usage.take();
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].api_calls, back[0].orders), (2, 2));
    }
}
