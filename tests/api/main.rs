//! Integration tests: the real `rocket()` over a real PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod boot;
mod byo;
mod catalog;
mod contract;
mod coverage;
mod docs;
mod errors;
mod export;
mod faults;
mod hardening;
mod isolation;
mod keys;
mod kinds;
mod logs;
mod metrics;
mod migrations;
mod offline;
mod orders;
mod pooler;
mod pools;
mod products;
mod provisioning;
mod reports;
mod routing;
mod staff;
mod statements;
mod tokens;
