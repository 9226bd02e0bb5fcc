//! The errors the extension raises itself, each with a chosen SQLSTATE
//! (pgrx's `error!` would give every one XX000). REST errors are not raised:
//! they are answers (`fluxbase_rest::error::RestError`). An error raised by a
//! statement the engine runs is Postgres' own: it unwinds through SPI and
//! reaches the caller with its SQLSTATE unchanged, never through here.
use pgrx::pg_sys::panic::{CaughtError, ErrorReport, ErrorReportWithLevel};
use pgrx::prelude::*;
use pgrx::spi::SpiError;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

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

/// A response body past `fluxbase.max_response_bytes`: 54000
/// (`program_limit_exceeded`, HTTP 500 as PostgREST maps it). Raised, not
/// answered, so a write or call that produced it is rolled back and no part
/// of the body is sent.
pub fn response_too_large(bytes: usize, max: usize) -> ! {
    let message = format!("the response ({bytes} bytes or more) exceeds fluxbase.max_response_bytes ({max} bytes)");
    ErrorReport::new(PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED, message, "response_too_large")
        .set_hint("Ask for fewer rows (limit, Range) or fewer columns (select).")
        .report(PgLogLevel::ERROR);
    unreachable!("an ERROR does not return")
}

/// Runs an SQL entry point's body so that no error leaving it carries a Rust
/// backtrace: pgrx appends one to an error's `detail` whenever
/// `RUST_BACKTRACE` or `RUST_LIB_BACKTRACE` is set in the server's
/// environment, and the detail reaches the client. Whatever that
/// environment holds:
/// - a Postgres error (a constraint, RLS, a bad value, a timeout) is raised
///   again with its own SQLSTATE, message, detail and hint, and nothing else;
/// - the extension's own errors pass unchanged (they carry no backtrace);
/// - a Rust panic, a bug of the extension whose message may hold anything
///   (SQL text included), becomes XX000 "internal error"; its message goes
///   to the server log only.
pub fn without_backtraces<T>(body: impl FnOnce() -> T) -> T {
    let payload = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => return value,
        Err(payload) => payload,
    };
    let payload = match payload.downcast::<CaughtError>() {
        Ok(caught) => match *caught {
            CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => reraise(&report),
            CaughtError::RustPanic { ereport, .. } => internal_error(ereport.message()),
        },
        Err(other) => other,
    };
    if payload.is::<ErrorReportWithLevel>() || payload.is::<ErrorReport>() {
        resume_unwind(payload);
    }
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    internal_error(&message)
}

/// `report` raised anew, from its parts: a fresh report has no backtrace.
fn reraise(report: &ErrorReportWithLevel) -> ! {
    let mut fresh = ErrorReport::new(report.sql_error_code(), report.message().to_string(), "fluxbase");
    if let Some(detail) = report.detail() {
        fresh = fresh.set_detail(detail);
    }
    if let Some(hint) = report.hint() {
        fresh = fresh.set_hint(hint);
    }
    fresh.report(PgLogLevel::ERROR);
    unreachable!("an ERROR does not return")
}

fn internal_error(message: &str) -> ! {
    ereport!(
        PgLogLevel::LOG_SERVER_ONLY,
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("fluxbase: internal error: {message}")
    );
    ereport!(ERROR, PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "fluxbase: internal error; the server log has the cause");
}
