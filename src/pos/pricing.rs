//! Money arithmetic for a sale, in integer minor units.
//!
//! Tax, per line, on the line's net amount (quantity × unit price − line
//! discount), rounded half up to the minor unit; the order's tax is the sum
//! of its lines' tax. Prices are tax-exclusive by default: the tax is
//! added, and the line's total is net + tax. When the merchant's prices
//! include tax (`pricesIncludeTax`), the tax is extracted from the net
//! amount, net × rate / (1 + rate), and the line's total is the net amount
//! itself. Either way an order's gross, discount, tax and total are the
//! sums of its lines'.
//!
//! Cash rounding (`cashRounding`, a step in minor units): what is left to
//! pay in cash once the other tenders are counted is rounded half up to
//! the step; the difference is the order's rounding. Other tenders are
//! never rounded.
//!
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

/// The tax within the tax-inclusive `amount` at `bps`:
/// `amount × bps / (10000 + bps)`, rounded half up; `amount` and `bps` are
/// not negative. Never more than `amount`.
pub fn tax_within(amount: i64, bps: i32) -> Result<i64, PriceError> {
    let den = 10_000 + i128::from(bps);
    let t = (2 * i128::from(amount) * i128::from(bps) + den) / (2 * den);
    i64::try_from(t).map_err(|_| PriceError::Overflow)
}

/// Prices `quantity` units at `unit` with a line discount and a tax rate;
/// `inclusive` when the unit price includes the tax.
pub fn price_line(
    quantity: i32,
    unit: i64,
    discount: i64,
    bps: i32,
    inclusive: bool,
) -> Result<LineAmounts, PriceError> {
    let gross = unit
        .checked_mul(i64::from(quantity))
        .filter(|g| *g <= MAX_AMOUNT && unit <= MAX_UNIT_PRICE)
        .ok_or(PriceError::Overflow)?;
    if discount > gross {
        return Err(PriceError::DiscountTooLarge);
    }
    let net = gross - discount;
    if inclusive {
        return Ok(LineAmounts {
            gross,
            discount,
            tax: tax_within(net, bps)?,
            total: net,
        });
    }
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
/// the merchant, the change handed back, and the cash rounding (the
/// payments settle the total plus the rounding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tendered {
    pub applied: Vec<i64>,
    pub tendered: i64,
    pub change: i64,
    pub rounding: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenderError {
    #[error("the payments ({paid}) are short of the amount due ({total})")]
    Short { paid: i64, total: i64 },
    #[error(
        "only cash can be over-tendered: the payments exceed the total by {excess}, more than the cash given"
    )]
    Overpaid { excess: i64 },
    #[error("the amount is too large")]
    Overflow,
}

/// `amount` rounded half up to a multiple of `step` (1 or more).
pub fn round_to_step(amount: i64, step: i64) -> i64 {
    let step = step.max(1);
    (amount + step / 2) / step * step
}

/// The cash rounding of `total` paid with `payments` at `step`: when cash
/// is among them, what is left to pay in cash after the other tenders is
/// rounded half up to the step; the rounding is the difference. Zero
/// without cash, at step 1, or when the other tenders cover the total.
pub fn cash_rounding(total: i64, payments: &[(Method, i64)], step: i64) -> i64 {
    if step <= 1 || !payments.iter().any(|(m, _)| *m == Method::Cash) {
        return 0;
    }
    let other = payments
        .iter()
        .filter(|(m, _)| *m != Method::Cash)
        .fold(0i64, |s, (_, a)| s.saturating_add(*a));
    let in_cash = total.saturating_sub(other);
    if in_cash <= 0 {
        return 0;
    }
    round_to_step(in_cash, step) - in_cash
}

/// Applies `payments` to `total`, the cash part rounded to `cash_step`
/// ([`cash_rounding`]). Change is only ever given from cash: the excess
/// over what is due comes back from the cash payments, last first.
pub fn tender(
    total: i64,
    payments: &[(Method, i64)],
    cash_step: i64,
) -> Result<Tendered, TenderError> {
    let rounding = cash_rounding(total, payments, cash_step);
    let total = total + rounding;
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
        rounding,
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
        assert_eq!(price_line(3, 99, 0, 825, false).unwrap().tax, 25);
        // 0.10 at 5%: 0.005 → 0.01 (half up)
        assert_eq!(tax_of(10, 500).unwrap(), 1);
        assert_eq!(tax_of(9, 500).unwrap(), 0);
        let l = price_line(2, 1_000, 150, 2_000, false).unwrap();
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
            price_line(1, 100, 101, 0, false),
            Err(PriceError::DiscountTooLarge)
        );
        assert_eq!(
            price_line(i32::MAX, i64::MAX / 2, 0, 0, false),
            Err(PriceError::Overflow)
        );
        // The largest line is MAX_AMOUNT, tax included.
        assert_eq!(
            price_line(100, MAX_UNIT_PRICE, 0, 0, false).unwrap().total,
            MAX_AMOUNT
        );
        assert_eq!(
            price_line(100, MAX_UNIT_PRICE, 0, 1, false),
            Err(PriceError::Overflow)
        );
        assert_eq!(
            price_line(1, MAX_UNIT_PRICE + 1, 0, 0, false),
            Err(PriceError::Overflow)
        );
    }

    #[test]
    fn change_comes_from_cash_only() {
        let t = tender(1_550, &[(Method::Card, 1_000), (Method::Cash, 2_000)], 1).unwrap();
        assert_eq!(
            t,
            Tendered {
                applied: vec![1_000, 550],
                tendered: 3_000,
                change: 1_450,
                rounding: 0
            }
        );
        assert_eq!(
            tender(1_000, &[(Method::Card, 1_200)], 1),
            Err(TenderError::Overpaid { excess: 200 })
        );
        assert_eq!(
            tender(1_000, &[(Method::Cash, 999)], 1),
            Err(TenderError::Short {
                paid: 999,
                total: 1_000
            })
        );
        assert_eq!(tender(0, &[], 1).unwrap().change, 0);
    }

    #[test]
    fn included_tax_is_extracted_half_up_per_line() {
        // 1.10 at 10 % holds 0.10 of tax; the total is the price.
        assert_eq!(
            price_line(1, 110, 0, 1_000, true).unwrap(),
            LineAmounts {
                gross: 110,
                discount: 0,
                tax: 10,
                total: 110
            }
        );
        // 3 × 2.50 at 20 %, 0.50 off: 7.00 × 0.2 / 1.2 = 1.1666… → 1.17
        assert_eq!(
            price_line(3, 250, 50, 2_000, true).unwrap(),
            LineAmounts {
                gross: 750,
                discount: 50,
                tax: 117,
                total: 700
            }
        );
        // 0.21 at 5 % holds exactly 0.01; at 10 %, 0.0190… → 0.02; 2.31 at
        // 5 % exactly 0.11.
        assert_eq!(tax_within(21, 500).unwrap(), 1);
        assert_eq!(tax_within(21, 1_000).unwrap(), 2);
        assert_eq!(tax_within(231, 500).unwrap(), 11);
        // 0.5 exactly rounds up: 1 at 100 % holds 0.5 → 1.
        assert_eq!(tax_within(1, 10_000).unwrap(), 1);
        assert_eq!(tax_within(0, 2_000).unwrap(), 0);
        assert_eq!(tax_within(999, 0).unwrap(), 0);
        // Never more than the amount, at any rate.
        for amount in 0..300 {
            for bps in [0, 1, 550, 2_000, 10_000] {
                assert!(tax_within(amount, bps).unwrap() <= amount);
            }
        }
        // The largest line is MAX_AMOUNT, tax within.
        assert_eq!(
            price_line(100, MAX_UNIT_PRICE, 0, 10_000, true)
                .unwrap()
                .total,
            MAX_AMOUNT
        );
    }

    #[test]
    fn cash_is_rounded_to_the_step_and_nothing_else() {
        assert_eq!(round_to_step(102, 5), 100);
        assert_eq!(round_to_step(103, 5), 105);
        assert_eq!(round_to_step(107, 5), 105);
        assert_eq!(round_to_step(108, 5), 110);
        assert_eq!(round_to_step(105, 10), 110);
        assert_eq!(round_to_step(104, 10), 100);
        assert_eq!(round_to_step(150, 100), 200);
        assert_eq!(round_to_step(149, 100), 100);
        assert_eq!(round_to_step(101, 2), 102);
        assert_eq!(round_to_step(101, 1), 101);
        let cash = |a| (Method::Cash, a);
        let card = |a| (Method::Card, a);
        // 1.02 in cash at 5: 1.00 settles it; 2.00 gives 1.00 back.
        let t = tender(102, &[cash(100)], 5).unwrap();
        assert_eq!(
            (t.rounding, t.change, t.applied.clone()),
            (-2, 0, vec![100])
        );
        let t = tender(102, &[cash(200)], 5).unwrap();
        assert_eq!(
            (t.rounding, t.change, t.applied.clone()),
            (-2, 100, vec![100])
        );
        // 1.03 → 1.05: 1.03 is short of it.
        assert_eq!(tender(103, &[cash(105)], 5).unwrap().rounding, 2);
        assert_eq!(
            tender(103, &[cash(103)], 5),
            Err(TenderError::Short {
                paid: 103,
                total: 105
            })
        );
        // A card is never rounded, even with the step set.
        let t = tender(102, &[card(102)], 5).unwrap();
        assert_eq!((t.rounding, t.change), (0, 0));
        assert_eq!(
            tender(102, &[card(100)], 5),
            Err(TenderError::Short {
                paid: 100,
                total: 102
            })
        );
        // Split: the card pays 0.50 exactly, the 0.57 left in cash → 0.55.
        let t = tender(107, &[card(50), cash(100)], 5).unwrap();
        assert_eq!(
            t,
            Tendered {
                applied: vec![50, 55],
                tendered: 150,
                change: 45,
                rounding: -2
            }
        );
        // The card covers it all: the cash is all change, nothing rounded.
        let t = tender(107, &[card(107), cash(20)], 5).unwrap();
        assert_eq!(
            (t.rounding, t.change, t.applied.clone()),
            (0, 20, vec![107, 0])
        );
        // Step 1 is no rounding at all.
        assert_eq!(cash_rounding(102, &[cash(102)], 1), 0);
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
