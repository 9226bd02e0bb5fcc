//! The errors the extension raises itself, each with a chosen SQLSTATE
//! (pgrx's `error!` would give every one XX000). REST errors are not raised:
//! they are answers (`fluxbase_rest::error::RestError`). An error raised by a
//! statement the engine runs is Postgres' own: it unwinds through SPI and
//! reaches the caller with its SQLSTATE unchanged, never through here.
use pgrx::prelude::*;
use pgrx::spi::SpiError;

/// An SQL entry point was given an argument it cannot take: 22023
/// (`invalid_parameter_value`).
pub fn invalid_argument(message: String) -> ! {
    ereport!(ERROR, PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message);
}

/// A request context value (a claim, the path) holds a NUL byte, which a
/// setting cannot: 22021 (`character_not_in_repertoire`), Postgres' own
/// code for a NUL in text.
pub fn nul_in_setting(message: &str) -> ! {
    ereport!(ERROR, PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE, message);
}

/// An SPI call of the extension failed without a Postgres error (SPI
/// refused the call, or a result did not convert): a fault of the
/// extension, not of the request. 38000 (`external_routine_exception`, the
/// code PL/Python gives a failure inside its own code); an HTTP 500, as the
/// XX000 it replaces.
pub fn spi_failed(what: &str, e: SpiError) -> ! {
    ereport!(ERROR, PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, format!("{what}: {e}"));
}

/// The catalog query's result does not fit the catalog model: the same
/// kind of fault, the same code as `spi_failed`.
pub fn catalog_unreadable(e: serde_json::Error) -> ! {
    let message = format!("schema cache did not deserialise: {e}");
    ereport!(ERROR, PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, message);
}
