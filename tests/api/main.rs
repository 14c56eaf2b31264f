//! Integration tests: the real `rocket()` over a real PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod boot;
mod catalog;
mod errors;
mod isolation;
mod migrations;
mod orders;
mod pools;
mod products;
mod routing;
mod tokens;
