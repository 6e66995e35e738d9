//! End-to-end tests: the real `sluice` binary, connector components built from source, and
//! fake upstream APIs on loopback that record what they receive.

mod admin;
mod browser;
mod catalog;
mod cli;
mod common;
mod dev_loop;
mod durability;
mod errors;
mod execute;
mod hubspot;
mod idempotency;
mod languages;
mod lifecycle;
mod limits;
mod mcp;
mod oauth;
mod operations;
mod passthrough;
mod policy;
mod reload;
mod sandbox;
mod slack;
mod stripe;
mod vault_api;
mod wasi_imports;
