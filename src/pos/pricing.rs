//! Money arithmetic for a sale, in integer minor units.
//!
//! Rounding rule: prices are tax-exclusive. Each line's tax is computed on
//! the line's net amount (quantity × unit price − line discount) and rounded
//! half up to the minor unit; the order's tax is the sum of its lines' tax.
//! Nothing is ever computed in floating point.
//!
//! Bounds: a unit price is at most [`MAX_UNIT_PRICE`], and every amount the
//! service stores (a line total, an order total, a payment, a refund) at
//! most [`MAX_AMOUNT`], so that no sum over one order can overflow; sums
//! over many orders (reports) are computed in `numeric` and `i128`.

use crate::db::kinds::Method;

/// The highest unit price, in minor units (a billion in major units).
pub const MAX_UNIT_PRICE: i64 = 100_000_000_000;
/// The highest amount of a line, an order, a payment or a refund, in minor
/// units (a hundred billion in major units).
pub const MAX_AMOUNT: i64 = 10_000_000_000_000;

/// A priced line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineAmounts {
    pub gross: i64,
    pub discount: i64,
    pub tax: i64,
    pub total: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("the line's amount is larger than {MAX_AMOUNT}")]
    Overflow,
    #[error("the discount is larger than the line's amount")]
    DiscountTooLarge,
}

/// `amount × bps / 10000`, rounded half up; `amount` and `bps` are not negative.
pub fn tax_of(amount: i64, bps: i32) -> Result<i64, PriceError> {
    let t = (i128::from(amount) * i128::from(bps) + 5_000) / 10_000;
    i64::try_from(t).map_err(|_| PriceError::Overflow)
}

/// Prices `quantity` units at `unit` with a line discount and a tax rate.
pub fn price_line(
    quantity: i32,
    unit: i64,
    discount: i64,
    bps: i32,
) -> Result<LineAmounts, PriceError> {
    let gross = unit
        .checked_mul(i64::from(quantity))
        .filter(|g| *g <= MAX_AMOUNT && unit <= MAX_UNIT_PRICE)
        .ok_or(PriceError::Overflow)?;
    if discount > gross {
        return Err(PriceError::DiscountTooLarge);
    }
    let net = gross - discount;
    let tax = tax_of(net, bps)?;
    let total = net
        .checked_add(tax)
        .filter(|t| *t <= MAX_AMOUNT)
        .ok_or(PriceError::Overflow)?;
    Ok(LineAmounts {
        gross,
        discount,
        tax,
        total,
    })
}

/// The split of the tender over the order: what each payment leaves with
/// the merchant, and the change handed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tendered {
    pub applied: Vec<i64>,
    pub tendered: i64,
    pub change: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenderError {
    #[error("the payments ({paid}) are short of the order total ({total})")]
    Short { paid: i64, total: i64 },
    #[error(
        "only cash can be over-tendered: the payments exceed the total by {excess}, more than the cash given"
    )]
    Overpaid { excess: i64 },
    #[error("the amount is too large")]
    Overflow,
}

/// Applies `payments` to `total`. Change is only ever given from cash:
/// the excess over the total comes back from the cash payments, last first.
pub fn tender(total: i64, payments: &[(Method, i64)]) -> Result<Tendered, TenderError> {
    let tendered = payments
        .iter()
        .try_fold(0i64, |s, (_, a)| s.checked_add(*a))
        .ok_or(TenderError::Overflow)?;
    if tendered < total {
        return Err(TenderError::Short {
            paid: tendered,
            total,
        });
    }
    let change = tendered - total;
    let cash: i64 = payments
        .iter()
        .filter(|(m, _)| *m == Method::Cash)
        .map(|(_, a)| *a)
        .sum();
    if change > cash {
        return Err(TenderError::Overpaid { excess: change });
    }
    let mut applied: Vec<i64> = payments.iter().map(|(_, a)| *a).collect();
    let mut left = change;
    for (i, (m, _)) in payments.iter().enumerate().rev() {
        if left == 0 {
            break;
        }
        if *m == Method::Cash {
            let take = left.min(applied[i]);
            applied[i] -= take;
            left -= take;
        }
    }
    Ok(Tendered {
        applied,
        tendered,
        change,
    })
}

/// What refunding `k` more units of a line is worth: the line's total is
/// shared over its units so that refunding every unit returns exactly the
/// line's total, whatever the order of the partial refunds.
pub fn refund_share(
    line_total: i64,
    quantity: i32,
    refunded_qty: i32,
    refunded_minor: i64,
    k: i32,
) -> i64 {
    let upto = i128::from(line_total) * i128::from(refunded_qty + k) / i128::from(quantity.max(1));
    i64::try_from(upto).unwrap_or(i64::MAX) - refunded_minor
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tax_rounds_half_up_per_line() {
        // 3 × 0.99 at 8.25%: 2.97 × 0.0825 = 0.245025 → 0.25
        assert_eq!(price_line(3, 99, 0, 825).unwrap().tax, 25);
        // 0.10 at 5%: 0.005 → 0.01 (half up)
        assert_eq!(tax_of(10, 500).unwrap(), 1);
        assert_eq!(tax_of(9, 500).unwrap(), 0);
        let l = price_line(2, 1_000, 150, 2_000).unwrap();
        assert_eq!(
            l,
            LineAmounts {
                gross: 2_000,
                discount: 150,
                tax: 370,
                total: 2_220
            }
        );
        assert_eq!(
            price_line(1, 100, 101, 0),
            Err(PriceError::DiscountTooLarge)
        );
        assert_eq!(
            price_line(i32::MAX, i64::MAX / 2, 0, 0),
            Err(PriceError::Overflow)
        );
        // The largest line is MAX_AMOUNT, tax included.
        assert_eq!(
            price_line(100, MAX_UNIT_PRICE, 0, 0).unwrap().total,
            MAX_AMOUNT
        );
        assert_eq!(
            price_line(100, MAX_UNIT_PRICE, 0, 1),
            Err(PriceError::Overflow)
        );
        assert_eq!(
            price_line(1, MAX_UNIT_PRICE + 1, 0, 0),
            Err(PriceError::Overflow)
        );
    }

    #[test]
    fn change_comes_from_cash_only() {
        let t = tender(1_550, &[(Method::Card, 1_000), (Method::Cash, 2_000)]).unwrap();
        assert_eq!(
            t,
            Tendered {
                applied: vec![1_000, 550],
                tendered: 3_000,
                change: 1_450
            }
        );
        assert_eq!(
            tender(1_000, &[(Method::Card, 1_200)]),
            Err(TenderError::Overpaid { excess: 200 })
        );
        assert_eq!(
            tender(1_000, &[(Method::Cash, 999)]),
            Err(TenderError::Short {
                paid: 999,
                total: 1_000
            })
        );
        assert_eq!(tender(0, &[]).unwrap().change, 0);
    }

    #[test]
    fn partial_refunds_add_up_to_the_line_total() {
        // 3 units for 1000: 333 + 333 + 334 in any split.
        let a = refund_share(1_000, 3, 0, 0, 1);
        let b = refund_share(1_000, 3, 1, a, 1);
        let c = refund_share(1_000, 3, 2, a + b, 1);
        assert_eq!(a + b + c, 1_000);
        assert_eq!(refund_share(1_000, 3, 0, 0, 3), 1_000);
        let d = refund_share(1_000, 3, 0, 0, 2);
        assert_eq!(d + refund_share(1_000, 3, 2, d, 1), 1_000);
    }
}
