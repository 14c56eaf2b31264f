//! Integration tests: the real `rocket()` over a real PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod boot;
mod docs;
mod errors;
mod isolation;
mod migrations;
mod pools;
mod products;
mod routing;
mod staff;
mod tokens;
