//! The state every service shares: configuration, the database pool, the
//! token verifier and the metrics. A service keeps its own state beside it
//! (for example `auth::AuthService`); nothing here knows the services.
use std::sync::RwLock;
use std::time::Instant;

use crate::config::Config;
use crate::db;
use crate::error::ApiError;
use crate::jwt::{Verifier, VerifyingKey};
use crate::metrics::Metrics;

pub struct AppState {
    pub config: Config,
    pub pool: deadpool_postgres::Pool,
    pub verifier: Verifier,
    pub metrics: Metrics,
    /// Connections opened before this instant predate a `reload config`.
    config_epoch: RwLock<Option<Instant>>,
}

impl AppState {
    /// `own_keys`: the public halves of the keys this deployment signs
    /// sessions with, so that its own tokens verify.
    pub fn new(config: Config, own_keys: Vec<VerifyingKey>) -> Result<AppState, String> {
        let pool = db::pool(&config.database)?;
        let login_role = db::pg_config(&config.database)?.get_user().map(str::to_string);
        let verifier = Verifier::new(&config.jwt, &config.api_keys, own_keys, login_role)?;
        Ok(AppState { config, pool, verifier, metrics: Metrics::default(), config_epoch: Default::default() })
    }

    /// A pooled connection opened since the last `reload config`: older
    /// ones still run with the settings their session started with.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, ApiError> {
        let epoch = *self.config_epoch.read().unwrap_or_else(|e| e.into_inner());
        loop {
            let client = self.pool.get().await.map_err(db::pool_error)?;
            match epoch {
                Some(at) if deadpool_postgres::Object::metrics(&client).created < at => {
                    drop(deadpool_postgres::Object::take(client));
                }
                _ => return Ok(client),
            }
        }
    }

    /// Retire every connection: idle ones now, busy ones when next taken.
    pub fn reload_config(&self) {
        let now = Instant::now();
        *self.config_epoch.write().unwrap_or_else(|e| e.into_inner()) = Some(now);
        self.pool.retain(|_, metrics| metrics.created >= now);
    }
}
