//! The Postgres pool (connecting as `authenticator`), statements cached per
//! connection, and the mapping of
//! database failures to API errors. Broken connections are dropped by the
//! pool's recycle check, so the proxy recovers from a Postgres restart alone.
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, Timeouts};
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::config::Database;
use crate::error::ApiError;

pub fn pg_config(config: &Database) -> Result<tokio_postgres::Config, String> {
    let mut pg: tokio_postgres::Config = config.url.parse().map_err(|e| format!("database.url: {e}"))?;
    pg.connect_timeout(Duration::from_millis(config.connect_timeout_ms));
    pg.application_name("fluxbase");
    Ok(pg)
}

pub fn pool(config: &Database) -> Result<Pool, String> {
    let pg = pg_config(config)?;
    let manager = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let wait = Some(Duration::from_millis(config.pool_timeout_ms));
    Pool::builder(manager)
        .max_size(config.pool_size)
        .timeouts(Timeouts { wait, create: Some(Duration::from_millis(config.connect_timeout_ms)), recycle: None })
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| format!("database pool: {e}"))
}

/// Statements prepared once per pooled connection and kept in its cache:
/// tokio-postgres prepares a query given as a string on every call, an
/// extra round trip and parse for each.
pub(crate) trait Cached {
    async fn query_one_cached(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, tokio_postgres::Error>;
    async fn query_opt_cached(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error>;
    async fn execute_cached(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, tokio_postgres::Error>;
}

impl Cached for deadpool_postgres::Object {
    async fn query_one_cached(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, tokio_postgres::Error> {
        self.query_one(&self.prepare_cached(sql).await?, params).await
    }

    async fn query_opt_cached(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        self.query_opt(&self.prepare_cached(sql).await?, params).await
    }

    async fn execute_cached(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, tokio_postgres::Error> {
        self.execute(&self.prepare_cached(sql).await?, params).await
    }
}

/// A pooled connection while a statement runs on it. If the request ends
/// first (its time limit, or the client went away) this is dropped with the
/// statement still running: the statement is cancelled on the server and
/// the connection closed, never handed to the next request still busy.
pub struct InFlight<'m> {
    client: Option<deadpool_postgres::Object>,
    metrics: &'m crate::metrics::Metrics,
}

impl<'m> InFlight<'m> {
    pub fn new(client: deadpool_postgres::Object, metrics: &'m crate::metrics::Metrics) -> InFlight<'m> {
        InFlight { client: Some(client), metrics }
    }

    pub fn client(&self) -> &deadpool_postgres::Object {
        self.client.as_ref().expect("a connection until finished")
    }

    /// The statement finished: the connection goes back to the pool.
    pub fn finish(mut self) -> deadpool_postgres::Object {
        self.client.take().expect("a connection until finished")
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else { return };
        self.metrics.query_cancelled();
        let cancel = client.cancel_token();
        // Detached from the pool: dropping it closes the connection.
        drop(deadpool_postgres::Object::take(client));
        tokio::spawn(async move {
            if let Err(e) = cancel.cancel_query(NoTls).await {
                tracing::warn!(error = %e, "cancelling an abandoned statement failed");
            }
        });
    }
}

pub fn pool_error(err: PoolError) -> ApiError {
    match err {
        PoolError::Timeout(_) => ApiError::PoolTimeout,
        other => ApiError::DatabaseUnavailable(other.to_string()),
    }
}

/// A statement failure: Postgres errors keep their SQLSTATE, message, detail
/// and hint (PostgREST forwards them); a lost connection is a 503.
pub fn query_error(err: tokio_postgres::Error, authenticated: bool) -> ApiError {
    match err.as_db_error() {
        Some(db) => {
            let code = db.code().code().to_string();
            ApiError::Database {
                status: sqlstate_status(&code, authenticated),
                code,
                message: db.message().to_string(),
                details: db.detail().map(str::to_string),
                hint: db.hint().map(str::to_string),
            }
        }
        None => ApiError::DatabaseUnavailable(err.to_string()),
    }
}

/// True when the failure was the connection, not the statement: worth one
/// retry on a fresh connection.
pub fn is_connection_failure(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    err.as_db_error().is_some_and(|db| {
        let code = db.code().code();
        code.starts_with("08") || code == "57P01" || code == "57P02" || code == "57P03"
    })
}

/// PostgREST's SQLSTATE → HTTP status table. `authenticated` decides 42501:
/// 401 for an anonymous request, 403 for a request that carried a token.
pub fn sqlstate_status(code: &str, authenticated: bool) -> http::StatusCode {
    let s = |n: u16| http::StatusCode::from_u16(n).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(custom) = code.strip_prefix("PT") {
        if let Ok(n) = custom.parse::<u16>() {
            return s(n);
        }
    }
    match code {
        "23503" | "23505" => s(409),
        "25006" => s(405),
        "53400" => s(500),
        "P0001" => s(400),
        "42883" => s(404),
        "42P01" => s(404),
        "42P17" => s(500),
        "42501" => s(if authenticated { 403 } else { 401 }),
        _ => match &code[..2.min(code.len())] {
            "08" => s(503),
            "09" => s(500),
            "0L" | "0P" => s(403),
            "23" | "22" => s(400),
            "25" => s(500),
            "28" => s(403),
            "2D" | "38" | "39" | "3B" | "40" => s(500),
            "53" => s(503),
            "54" | "55" | "57" | "58" | "F0" | "HV" | "XX" => s(500),
            "42" => s(400),
            "P0" => s(500),
            _ => s(400),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn postgrest_status_mapping() {
        assert_eq!(sqlstate_status("23505", true), StatusCode::CONFLICT);
        assert_eq!(sqlstate_status("42501", false), StatusCode::UNAUTHORIZED);
        assert_eq!(sqlstate_status("42501", true), StatusCode::FORBIDDEN);
        assert_eq!(sqlstate_status("PT402", true), StatusCode::PAYMENT_REQUIRED);
        assert_eq!(sqlstate_status("P0001", true), StatusCode::BAD_REQUEST);
        assert_eq!(sqlstate_status("08006", true), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(sqlstate_status("22P02", true), StatusCode::BAD_REQUEST);
        assert_eq!(sqlstate_status("42P01", true), StatusCode::NOT_FOUND);
    }
}
