//! Integration tests: the real `rocket()` over a real PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// A test reads as one scenario, top to bottom, with short names for the
// app, merchants and orders it sets up (`t`, `m`, `o`).
#![allow(clippy::too_many_lines, clippy::many_single_char_names)]

mod common;

mod audit;
mod boot;
mod bouncer;
mod byo;
mod catalog;
mod citus;
mod context;
mod contract;
mod coverage;
mod docs;
mod domains;
mod errors;
mod export;
mod faults;
mod hardening;
mod instances;
mod integrations;
mod isolation;
mod jobs;
mod keys;
mod kinds;
mod load;
mod logs;
mod metrics;
mod migrations;
mod moves;
mod offline;
mod orders;
mod pooler;
mod pools;
mod pricing;
mod probe;
mod products;
mod provisioning;
mod ratelimit;
mod reports;
mod routing;
mod servers;
mod settings;
mod staff;
mod statements;
mod tokens;
mod usage;
