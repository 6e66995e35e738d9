//! Log lines, attributed by the gateway to this connector and the current request.
//!
//! The gateway may truncate long lines and drop lines past a per-request budget.

#[cfg(target_arch = "wasm32")]
use crate::bindings::sluice::connector::log::write;
// Natively (a connector's unit tests) lines go to `testing::run`'s record, or to stderr.
use crate::bindings::sluice::connector::types::Level;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::write;

/// Log a diagnostic line.
pub fn debug(message: &str) {
    write(Level::Debug, message);
}

/// Log a line about normal operation.
pub fn info(message: &str) {
    write(Level::Info, message);
}

/// Log something unexpected that the connector recovered from.
pub fn warn(message: &str) {
    write(Level::Warn, message);
}

/// Log a failure.
pub fn error(message: &str) {
    write(Level::Error, message);
}
