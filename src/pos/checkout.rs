//! Turning a sale into an order: read the catalog (or take the products
//! this process already knows), price every line on the server, check the
//! tender, then write the order with its lines and payments and take the
//! stock, in one call (see [`crate::db::tenant::sales`] for the one or two
//! round trips). Used by till orders and offline bills.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use super::pricing::{self, PriceError, TenderError};
use crate::db::{
    ids::{CustomerId, MerchantId, OrderId, ProductId, StaffId},
    kinds::{Method, OrderSource, OrderStatus},
    tenant::{
        Bound,
        changes::Changed,
        orders::{Order, OrderLine, OrderView, Payment},
        sales::{self, CatalogItem, KeyClaim, SaleRead, SaleWrite},
    },
};

pub use super::known::KnownProducts;

pub const MAX_LINES: usize = 200;
pub const MAX_PAYMENTS: usize = 10;
pub const MAX_QUANTITY: i32 = 100_000;

#[derive(Debug, Clone)]
pub struct SaleLine {
    pub product_id: ProductId,
    pub quantity: i32,
    pub unit_price_minor: Option<i64>,
    pub discount_minor: i64,
}

#[derive(Debug, Clone)]
pub struct Tender {
    pub method: Method,
    pub amount_minor: i64,
    pub reference: Option<String>,
}

/// A bill recorded by a till while offline.
#[derive(Debug, Clone, Copy)]
pub struct OfflineBill {
    pub client_id: Uuid,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Sale {
    pub lines: Vec<SaleLine>,
    pub payments: Vec<Tender>,
    pub customer_id: Option<CustomerId>,
    pub note: Option<String>,
    pub staff: StaffId,
    pub currency: String,
    /// Whether the caller may sell at a price other than the catalog's, or
    /// give a discount.
    pub may_override_price: bool,
    /// The largest discount a seller who may not change prices may still
    /// give on a line at the catalog's price, in basis points of the
    /// line's amount (the merchant's `cashierDiscountLimitBps`).
    pub discount_limit_bps: i64,
    /// Whether catalog prices include tax (the merchant's
    /// `pricesIncludeTax`); recorded on the order.
    pub prices_include_tax: bool,
    /// The step the cash part of the payments is rounded to, in minor
    /// units (the merchant's `cashRounding`; 1 is none).
    pub cash_rounding: i64,
    /// Set for an offline bill: it records a sale that already happened, so
    /// it takes stock below zero (flagging the product for a count) rather
    /// than fail, keeps the till's time, and is priced as the catalog was
    /// at that time.
    pub offline: Option<OfflineBill>,
}

/// Why a sale is refused. The text is the message a client reads; the API
/// gives each variant its status and code (`crate::api::errors`).
#[derive(Debug, thiserror::Error)]
pub enum SaleError {
    /// A value out of its limits (`validation_failed`).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// A discount beyond the merchant's cashier limit from a seller who
    /// may not change prices.
    #[error(
        "lines[{line}].discountMinor: a discount above {limit_bps} basis points of the line needs the manager role"
    )]
    DiscountOverLimit { line: usize, limit_bps: i64 },
    /// A price other than the catalog's, or a discount, from a seller who
    /// may not change prices.
    #[error(
        "lines[{line}].{field}: a price other than the catalog's ({catalog}) or a discount needs the manager role"
    )]
    PriceOverrideForbidden {
        line: usize,
        field: &'static str,
        catalog: i64,
    },
    #[error("lines[{line}].productId: no such product")]
    UnknownProduct { line: usize },
    #[error("lines[{line}].productId: {sku} is not for sale")]
    ProductInactive { line: usize, sku: String },
    #[error("customerId: no such customer")]
    UnknownCustomer,
    /// The payments do not settle the total.
    #[error("payments: {0}")]
    Tender(TenderError),
    #[error("not enough stock of {sku} for {quantity} unit(s)")]
    InsufficientStock { sku: String, quantity: i64 },
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
    /// The response could not be written out as JSON.
    #[error(transparent)]
    Encode(serde_json::Error),
}

impl SaleError {
    fn invalid(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        SaleError::Invalid {
            field: field.into(),
            reason: reason.to_string(),
        }
    }
}

fn price_error(i: usize, e: PriceError) -> SaleError {
    match e {
        PriceError::Overflow => SaleError::invalid(format!("lines[{i}]"), e),
        PriceError::DiscountTooLarge => SaleError::invalid(format!("lines[{i}].discountMinor"), e),
    }
}

/// Checks what needs no database: sizes and ranges.
pub fn validate(sale: &Sale) -> Result<(), SaleError> {
    if sale.lines.is_empty() || sale.lines.len() > MAX_LINES {
        return Err(SaleError::invalid(
            "lines",
            format!("must hold 1 to {MAX_LINES} lines"),
        ));
    }
    if sale.payments.len() > MAX_PAYMENTS {
        return Err(SaleError::invalid(
            "payments",
            format!("must hold at most {MAX_PAYMENTS} payments"),
        ));
    }
    for (i, l) in sale.lines.iter().enumerate() {
        if !(1..=MAX_QUANTITY).contains(&l.quantity) {
            return Err(SaleError::invalid(
                format!("lines[{i}].quantity"),
                format!("must be from 1 to {MAX_QUANTITY}"),
            ));
        }
        if l.unit_price_minor
            .is_some_and(|p| !(0..=pricing::MAX_UNIT_PRICE).contains(&p))
        {
            return Err(SaleError::invalid(
                format!("lines[{i}].unitPriceMinor"),
                format!("must be from 0 to {}", pricing::MAX_UNIT_PRICE),
            ));
        }
        if !(0..=pricing::MAX_AMOUNT).contains(&l.discount_minor) {
            return Err(SaleError::invalid(
                format!("lines[{i}].discountMinor"),
                format!("must be from 0 to {}", pricing::MAX_AMOUNT),
            ));
        }
    }
    for (i, p) in sale.payments.iter().enumerate() {
        if !(1..=pricing::MAX_AMOUNT).contains(&p.amount_minor) {
            return Err(SaleError::invalid(
                format!("payments[{i}].amountMinor"),
                format!("must be from 1 to {}", pricing::MAX_AMOUNT),
            ));
        }
        if p.reference
            .as_ref()
            .is_some_and(|r| r.chars().count() > 100)
        {
            return Err(SaleError::invalid(
                format!("payments[{i}].reference"),
                "must be at most 100 characters",
            ));
        }
    }
    if sale.note.as_ref().is_some_and(|n| n.chars().count() > 500) {
        return Err(SaleError::invalid("note", "must be at most 500 characters"));
    }
    Ok(())
}

/// The one rule for what a line may cost: the catalog's price (for an
/// offline bill, the price in effect at the bill's time) and no discount
/// beyond the merchant's cashier limit (none by default), unless the
/// seller may change prices. A different price and a discount are the
/// same permission: both sell below the catalog.
fn check_price_rule(
    sale: &Sale,
    i: usize,
    quantity: i32,
    unit: i64,
    catalog: i64,
    discount: i64,
) -> Result<(), SaleError> {
    if sale.may_override_price || (unit == catalog && discount == 0) {
        return Ok(());
    }
    if unit == catalog && discount > 0 {
        // discount / (quantity × unit) ≤ limit / 10,000, in i128: no
        // overflow for any amount.
        let allowed = i128::from(discount) * 10_000
            <= i128::from(quantity) * i128::from(unit) * i128::from(sale.discount_limit_bps);
        if allowed {
            return Ok(());
        }
        if sale.discount_limit_bps > 0 {
            return Err(SaleError::DiscountOverLimit {
                line: i,
                limit_bps: sale.discount_limit_bps,
            });
        }
    }
    let field = if unit == catalog {
        "discountMinor"
    } else {
        "unitPriceMinor"
    };
    Err(SaleError::PriceOverrideForbidden {
        line: i,
        field,
        catalog,
    })
}

/// What recording a sale came to.
#[derive(Debug)]
pub enum Recorded {
    /// The order was written; `body` is the response stored under the key,
    /// when there is one.
    Created {
        view: Box<OrderView>,
        body: Option<serde_json::Value>,
    },
    /// The idempotency key holds this request's response.
    Replay {
        status: u16,
        body: serde_json::Value,
    },
    /// The idempotency key was used for a different request.
    KeyReused,
    /// A request holding the idempotency key is still running.
    KeyInFlight,
    /// The offline bill made this order already.
    Duplicate(OrderId),
}

/// The idempotency key a till sale runs under: its request's hash, how
/// long it is kept, and the status its response is stored with.
#[derive(Debug, Clone)]
pub struct SaleKey {
    pub key: String,
    pub hash: String,
    pub retention: std::time::Duration,
    pub status: u16,
}

/// Records `sale` as an order. A till sale whose products are all in
/// `known` is priced from them and written in one round trip
/// ([`sales::write`] checks them against the catalog, and the key's claim
/// answers a replay, a reuse or a request in flight). Otherwise, or if the
/// catalog changed, or if pricing from `known` fails (a failure is answered
/// only after the key is read), it takes two: [`sales::read`], pricing
/// here, [`sales::write`]. On `TenantCalls` each call is a transaction of
/// its own, on a `TenantTx` they join the caller's; on any error nothing is
/// written. An offline bill (priced as the catalog was at its time) passes
/// no `known` and is `Duplicate` if applied already, even if it would not
/// pass today's checks.
pub fn record(
    b: &mut impl Bound,
    sale: &Sale,
    key: Option<&SaleKey>,
    known: Option<&KnownProducts>,
) -> Result<Recorded, SaleError> {
    validate(sale)?;
    let merchant = b.merchant_id();
    let known = known.filter(|_| sale.offline.is_none());
    let ids = || sale.lines.iter().map(|l| l.product_id);
    if let Some((known, products)) = known.and_then(|k| Some((k, k.get(merchant, ids())?))) {
        let read = SaleRead {
            products,
            // Checked by the write.
            customer_exists: true,
            ..SaleRead::default()
        };
        if let Ok(priced) = price(sale, &read, merchant) {
            match write_priced(b, sale, key, priced, &read, true)? {
                Some(recorded) => return Ok(recorded),
                None => known.forget(merchant, &read.products),
            }
        }
    }
    let read = sales::read(
        b,
        key.map(|k| k.key.as_str()),
        &ids().map(|p| p.0).collect::<Vec<_>>(),
        sale.offline.map(|o| o.created_at),
        sale.customer_id,
        sale.offline.map(|o| o.client_id),
    )?;
    if let (Some(k), Some(stored)) = (key, &read.key) {
        if stored.request_hash != k.hash {
            return Ok(Recorded::KeyReused);
        }
        if let Some((status, body)) = &stored.response {
            return Ok(Recorded::Replay {
                status: *status,
                body: body.clone(),
            });
        }
    }
    if let Some(order) = read.bill_order {
        return Ok(Recorded::Duplicate(order));
    }
    if let Some(known) = known {
        known.remember(merchant, &read.products);
    }
    let priced = price(sale, &read, merchant)?;
    write_priced(b, sale, key, priced, &read, false)?.ok_or_else(|| {
        SaleError::Db(diesel::result::Error::DeserializationError(
            "posd_sale_write answered stale with no catalog to check".into(),
        ))
    })
}

/// Writes `priced` under `key`; `None` when `check` is set and the catalog
/// or the customer is no longer as `read` had them.
fn write_priced(
    b: &mut impl Bound,
    sale: &Sale,
    key: Option<&SaleKey>,
    priced: Priced,
    read: &SaleRead,
    check: bool,
) -> Result<Option<Recorded>, SaleError> {
    let view = OrderView {
        order: priced.order,
        lines: priced.lines,
        payments: priced.payments,
        refunds: Vec::new(),
    };
    let body = key
        .map(|_| serde_json::to_value(&view))
        .transpose()
        .map_err(SaleError::Encode)?;
    let claim = key.zip(body.as_ref()).map(|(k, body)| KeyClaim {
        key: &k.key,
        hash: &k.hash,
        retention: k.retention,
        status: k.status,
        body,
    });
    let written = sales::write(
        b,
        claim.as_ref(),
        &SaleWrite {
            order: &view.order,
            lines: &view.lines,
            payments: &view.payments,
            take: &priced.take,
            allow_negative: sale.offline.is_some(),
            priced_from: check.then_some(read.products.as_slice()),
        },
    )?;
    Ok(Some(match written {
        Changed::Done(()) => Recorded::Created {
            view: Box::new(view),
            body,
        },
        Changed::Stale => return Ok(None),
        Changed::Replay { status, body } => Recorded::Replay { status, body },
        Changed::Mismatch => Recorded::KeyReused,
        Changed::InFlight => Recorded::KeyInFlight,
        Changed::Duplicate(order) => Recorded::Duplicate(order),
        Changed::Short(product) => {
            let sku = read
                .products
                .iter()
                .find(|p| p.id == product)
                .map_or("?", |p| p.sku.as_str());
            return Err(SaleError::InsufficientStock {
                sku: sku.to_string(),
                quantity: priced.take.get(&product).copied().unwrap_or_default(),
            });
        }
    }))
}

/// A sale priced: the order, its lines and payments, and the units it
/// takes per product that tracks stock.
struct Priced {
    order: Order,
    lines: Vec<OrderLine>,
    payments: Vec<Payment>,
    take: BTreeMap<ProductId, i64>,
}

/// Prices every line of `sale` from the catalog in `read`, checks the
/// price rules, the customer and the tender.
#[expect(
    clippy::too_many_lines,
    reason = "one sale, read top to bottom: lines, totals, tender, the order"
)]
fn price(sale: &Sale, read: &SaleRead, merchant: MerchantId) -> Result<Priced, SaleError> {
    let order_id = OrderId(Uuid::now_v7());
    // As PostgreSQL keeps them, so that a replay answers what the first
    // answer said.
    let now = Utc::now().trunc_subsecs(6);
    let created_at = sale.offline.map_or(now, |b| b.created_at.trunc_subsecs(6));
    let products: HashMap<ProductId, &CatalogItem> =
        read.products.iter().map(|p| (p.id, p)).collect();

    let mut lines = Vec::with_capacity(sale.lines.len());
    let mut take: BTreeMap<ProductId, i64> = BTreeMap::new();
    for (i, l) in sale.lines.iter().enumerate() {
        let p = products
            .get(&l.product_id)
            .ok_or(SaleError::UnknownProduct { line: i })?;
        if !p.active {
            return Err(SaleError::ProductInactive {
                line: i,
                sku: p.sku.clone(),
            });
        }
        let unit = l.unit_price_minor.unwrap_or(p.price_minor);
        check_price_rule(sale, i, l.quantity, unit, p.price_minor, l.discount_minor)?;
        let a = pricing::price_line(
            l.quantity,
            unit,
            l.discount_minor,
            p.tax_rate_bps,
            sale.prices_include_tax,
        )
        .map_err(|e| price_error(i, e))?;
        if p.track_stock {
            *take.entry(p.id).or_default() += i64::from(l.quantity);
        }
        lines.push(OrderLine {
            merchant_id: merchant,
            order_id,
            line_no: i32::try_from(i + 1).unwrap_or(i32::MAX),
            product_id: p.id,
            sku: p.sku.clone(),
            name: p.name.clone(),
            quantity: l.quantity,
            unit_price_minor: unit,
            tax_rate_bps: p.tax_rate_bps,
            gross_minor: a.gross,
            discount_minor: a.discount,
            tax_minor: a.tax,
            total_minor: a.total,
            refunded_quantity: 0,
            refunded_minor: 0,
        });
    }
    let sum = |f: fn(&OrderLine) -> i64| -> Result<i64, SaleError> {
        lines
            .iter()
            .try_fold(0i64, |s, l| s.checked_add(f(l)))
            .filter(|s| *s <= pricing::MAX_AMOUNT)
            .ok_or_else(|| {
                SaleError::invalid(
                    "lines",
                    format!("the order comes to more than {}", pricing::MAX_AMOUNT),
                )
            })
    };
    let (gross, discount, tax, total) = (
        sum(|l| l.gross_minor)?,
        sum(|l| l.discount_minor)?,
        sum(|l| l.tax_minor)?,
        sum(|l| l.total_minor)?,
    );

    let tenders: Vec<(Method, i64)> = sale
        .payments
        .iter()
        .map(|p| (p.method, p.amount_minor))
        .collect();
    let t = pricing::tender(total, &tenders, sale.cash_rounding).map_err(SaleError::Tender)?;

    if sale.customer_id.is_some() && !read.customer_exists {
        return Err(SaleError::UnknownCustomer);
    }

    let order = Order {
        merchant_id: merchant,
        id: order_id,
        status: OrderStatus::Completed,
        source: if sale.offline.is_some() {
            OrderSource::Offline
        } else {
            OrderSource::Till
        },
        client_bill_id: sale.offline.map(|b| b.client_id),
        customer_id: sale.customer_id,
        staff_id: sale.staff,
        currency: sale.currency.clone(),
        prices_include_tax: sale.prices_include_tax,
        gross_minor: gross,
        discount_minor: discount,
        tax_minor: tax,
        total_minor: total,
        rounding_minor: t.rounding,
        tendered_minor: t.tendered,
        change_minor: t.change,
        refunded_minor: 0,
        note: sale.note.clone(),
        created_at,
        recorded_at: now,
        voided_at: None,
    };
    let payments: Vec<Payment> = sale
        .payments
        .iter()
        .zip(&t.applied)
        .map(|(p, applied)| Payment {
            merchant_id: merchant,
            id: Uuid::now_v7(),
            order_id,
            method: p.method,
            tendered_minor: p.amount_minor,
            amount_minor: *applied,
            reference: p.reference.clone(),
            created_at,
        })
        .collect();
    Ok(Priced {
        order,
        lines,
        payments,
        take,
    })
}
