//! Point-of-sale rules that are not HTTP and not SQL: pricing and tender,
//! checkout, refunds and voids, the daily report. Every function here runs
//! inside the caller's one bound tenant transaction.

pub mod checkout;
mod known;
pub mod pricing;
pub mod refund;
pub mod report;

pub use self::{checkout::SaleError, refund::RefundError};
