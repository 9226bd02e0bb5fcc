//! Command-line surface: `serve` (default), `check-config`, `gen-config`,
//! `keys`, `sign`, `s3-keys`. Hand-rolled: a few verbs do not need a parser crate.
use rand::RngCore;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::auth::signing::sign_hs256;
use crate::config::Config;

pub const USAGE: &str = "usage:
  fluxbase [serve] [--config FILE]        run the proxy
  fluxbase check-config [--config FILE]   validate the configuration and exit
  fluxbase gen-config FILE --database-url URL
                                          write a dev config with fresh secrets and keys
  fluxbase keys [--config FILE]           print the API URL and keys
  fluxbase sign CLAIMS_JSON [--expires-in SECONDS] [--config FILE]
                                          sign an HS256 token with jwt.secret
  fluxbase gen-signing-key FILE [--kid KID] [--alg ES256|RS256]
                                          put a new ES256 key first in a JWK set (jwt.signing_jwks_file)
  fluxbase hash-rate [SECONDS] [--config FILE]
                                          argon2id hashes/s on all CPUs with the [auth] parameters
  fluxbase s3-keys create [--description TEXT] | list | revoke ACCESS_KEY_ID [--config FILE]
                                          S3 protocol access keys (service_role), sealed with storage.s3_encryption_key
Environment: FLUXBASE_CONFIG names the file; FLUXBASE_<SECTION>_<KEY> overrides any key.";

#[derive(Debug, PartialEq)]
pub enum Command {
    Serve,
    CheckConfig,
    GenConfig { path: PathBuf, database_url: String },
    Keys,
    Sign { claims: String, expires_in: u64 },
    HashRate { seconds: u64 },
    GenSigningKey { path: PathBuf, kid: Option<String>, alg: String },
    S3Keys(S3KeysCommand),
    Help,
}

#[derive(Debug, PartialEq)]
pub enum S3KeysCommand {
    Create { description: String },
    List,
    Revoke { access_key_id: String },
}

#[derive(Debug, PartialEq)]
pub struct Args {
    pub command: Command,
    pub config: Option<PathBuf>,
}

pub fn parse(args: &[String], env_config: Option<String>) -> Result<Args, String> {
    let mut config = env_config.map(PathBuf::from);
    let mut positional = Vec::new();
    let mut database_url = None;
    let mut expires_in = 3600u64;
    let mut kid = None;
    let mut alg = "ES256".to_string();
    let mut description = String::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--config" | "-c" => config = Some(PathBuf::from(value(arg)?)),
            "--database-url" => database_url = Some(value(arg)?),
            "--kid" => kid = Some(value(arg)?),
            "--description" => description = value(arg)?,
            "--alg" => alg = value(arg)?.to_ascii_uppercase(),
            "--expires-in" => {
                expires_in = value(arg)?.parse().map_err(|_| "--expires-in takes whole seconds".to_string())?
            }
            "--check-config" => positional.insert(0, "check-config".to_string()),
            "-h" | "--help" => return Ok(Args { command: Command::Help, config }),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s => positional.push(s.to_string()),
        }
    }
    let command = match positional.first().map(String::as_str) {
        None | Some("serve") => Command::Serve,
        Some("check-config") => Command::CheckConfig,
        Some("keys") => Command::Keys,
        Some("help") => Command::Help,
        Some("gen-config") => Command::GenConfig {
            path: positional.get(1).map(PathBuf::from).ok_or("gen-config needs a FILE")?,
            database_url: database_url.ok_or("gen-config needs --database-url")?,
        },
        Some("sign") => {
            Command::Sign { claims: positional.get(1).cloned().ok_or("sign needs CLAIMS_JSON")?, expires_in }
        }
        Some("gen-signing-key") => Command::GenSigningKey {
            path: positional.get(1).map(PathBuf::from).ok_or("gen-signing-key needs a FILE")?,
            kid,
            alg,
        },
        Some("hash-rate") => Command::HashRate {
            seconds: positional
                .get(1)
                .map(|s| s.parse())
                .transpose()
                .map_err(|_| "hash-rate takes whole seconds")?
                .unwrap_or(5),
        },
        Some("s3-keys") => Command::S3Keys(match positional.get(1).map(String::as_str) {
            Some("create") => S3KeysCommand::Create { description },
            Some("list") => S3KeysCommand::List,
            Some("revoke") => S3KeysCommand::Revoke {
                access_key_id: positional.get(2).cloned().ok_or("s3-keys revoke needs an ACCESS_KEY_ID")?,
            },
            _ => return Err("s3-keys takes create, list or revoke".into()),
        }),
        Some(other) => return Err(format!("unknown command {other}")),
    };
    Ok(Args { command, config })
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A development config: a 256-bit secret, the legacy anon/service_role JWT
/// keys (ten years, as Supabase's local keys) and a pair of opaque keys.
pub fn gen_config(path: &Path, database_url: &str) -> Result<(), String> {
    if path.exists() {
        return Err(format!("{} exists; not overwriting", path.display()));
    }
    let secret = random_hex(32);
    let now = unix_now();
    let key = |role: &str| {
        sign_hs256(&secret, &json!({ "iss": "fluxbase", "role": role, "iat": now, "exp": now + 10 * 365 * 24 * 3600 }))
            .map_err(|e| e.to_string())
    };
    let text = format!(
        "# Fluxbase development configuration, generated by `fluxbase gen-config`.\n\
         # Every key is described in docs/configuration.md.\n\
         mode = \"dev\"\n\n\
         [server]\nlisten = \"127.0.0.1:54321\"\n\n\
         [database]\nurl = {url:?}\n\n\
         [jwt]\nsecret = {secret:?}\n\n\
         [api_keys]\nanon = {anon:?}\nservice_role = {service:?}\n\
         publishable = [\"sb_publishable_{p}\"]\nsecret = [\"sb_secret_{s}\"]\n\n\
         [log]\nlevel = \"info\"\nformat = \"pretty\"\n\n\
         # Development limits: a test suite that signs up and signs in a few\n\
         # hundred users a minute from one address gets through. The secure\n\
         # defaults (docs/auth.md, Security) are for production.\n\
         [auth]\nrate_limit_signups_per_ip = 2000\nrate_limit_signins_per_ip = 2000\n\
         rate_limit_signins_per_account = 200\nrate_limit_refresh_per_ip = 5000\n\
         rate_limit_verify_per_ip = 2000\nrate_limit_email_per_ip = 2000\nrate_limit_sms_per_ip = 2000\n\
         lockout_max_failures = 50\nemail_interval_seconds = 1\nsms_interval_seconds = 1\n",
        url = database_url,
        anon = key("anon")?,
        service = key("service_role")?,
        p = random_hex(16),
        s = random_hex(24),
    );
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

/// argon2id hashes per second with the configured parameters, one thread
/// per CPU: the ceiling for password sign-ins (tests/bench/auth.sh).
pub fn hash_rate(config: &Config, seconds: u64) -> Result<String, String> {
    let hasher = crate::auth::password::Hasher::new(&config.auth)?;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds.max(1));
    let started = std::time::Instant::now();
    let counts: Vec<u64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let hasher = hasher.clone();
                scope.spawn(move || {
                    let mut n = 0;
                    while std::time::Instant::now() < deadline {
                        let _ = hasher.hash("correct horse battery staple");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).collect()
    });
    let rate = counts.iter().sum::<u64>() as f64 / started.elapsed().as_secs_f64();
    let a = &config.auth;
    Ok(format!(
        "argon2id hashes/s: {rate:.1} (threads {threads}, m={} KiB, t={}, p={})\n",
        a.argon2_memory_kib, a.argon2_iterations, a.argon2_parallelism
    ))
}

pub fn keys(config: &Config) -> String {
    let mut out = format!("API URL:          {}\n", config.public_url());
    if let Some(k) = &config.api_keys.anon {
        out.push_str(&format!("anon key:         {k}\n"));
    }
    if let Some(k) = &config.api_keys.service_role {
        out.push_str(&format!("service_role key: {k}\n"));
    }
    for k in &config.api_keys.publishable {
        out.push_str(&format!("publishable key:  {k}\n"));
    }
    for k in &config.api_keys.secret {
        out.push_str(&format!("secret key:       {k}\n"));
    }
    out
}

pub fn sign(config: &Config, claims: &str, expires_in: u64) -> Result<String, String> {
    let secret = config.jwt.secret.as_deref().ok_or("jwt.secret is not set")?;
    let mut claims: Value = serde_json::from_str(claims).map_err(|e| format!("CLAIMS_JSON: {e}"))?;
    let obj = claims.as_object_mut().ok_or("CLAIMS_JSON must be an object")?;
    let now = unix_now();
    obj.entry("iat").or_insert(json!(now));
    obj.entry("exp").or_insert(json!(now + expires_in));
    sign_hs256(secret, &claims).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn parses_commands() {
        assert_eq!(parse(&args(&[]), None).unwrap().command, Command::Serve);
        let a = parse(&args(&["--check-config", "--config", "f.toml"]), None).unwrap();
        assert_eq!(a, Args { command: Command::CheckConfig, config: Some("f.toml".into()) });
        assert!(parse(&args(&["gen-config", "x.toml"]), None).is_err());
        assert!(parse(&args(&["--bogus"]), None).is_err());
        assert!(parse(&args(&["frobnicate"]), None).is_err());
    }

    #[test]
    fn generated_config_is_valid() {
        let dir = std::env::temp_dir().join(format!("fluxbase-cli-{}", random_hex(4)));
        let path = dir.join("fluxbase.toml");
        gen_config(&path, "postgres://authenticator:pw@127.0.0.1:5432/postgres").unwrap();
        let config = Config::load(Some(&path), std::iter::empty()).unwrap();
        assert!(config.api_keys.anon.is_some());
        assert!(keys(&config).contains("service_role key"));
        // ~100 sign-ups a minute from one address fit in one window.
        let a = &config.auth;
        let per_window = |limit: u32| limit as u64 * 60 / a.rate_limit_window_seconds as u64;
        for limit in [
            a.rate_limit_signups_per_ip,
            a.rate_limit_signins_per_ip,
            a.rate_limit_email_per_ip,
            a.rate_limit_verify_per_ip,
        ] {
            assert!(per_window(limit) >= 300, "{limit} per {} s", a.rate_limit_window_seconds);
        }
        assert!(gen_config(&path, "postgres://x@y/z").is_err(), "never overwrites");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// `fluxbase s3-keys …`: makes, lists and revokes the S3 protocol's access
/// keys in `fluxbase.storage_s3_keys`, through `database.url`. A new secret
/// is printed once and stored only sealed with `storage.s3_encryption_key`.
pub fn s3_keys(config: &Config, command: &S3KeysCommand) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let pg = crate::db::pg_config(&config.database)?;
        let (client, connection) = pg.connect(tokio_postgres::NoTls).await.map_err(|e| format!("database: {e}"))?;
        tokio::spawn(connection);
        let db = |e: tokio_postgres::Error| format!("database: {e}");
        match command {
            S3KeysCommand::Create { description } => {
                if config.storage.s3_encryption_key.is_none() {
                    return Err("storage.s3_encryption_key is not set: generate one with `openssl rand -hex 32`".into());
                }
                let key = config.storage.s3_key().ok_or("storage.s3_encryption_key must be 64 hex characters")?;
                let (id, secret) = crate::storage::new_key_pair();
                client
                    .execute(
                        "INSERT INTO fluxbase.storage_s3_keys (access_key_id, secret_sealed, description) VALUES ($1, $2, $3)",
                        &[&id, &crate::storage::seal(&key, &id, &secret), description],
                    )
                    .await
                    .map_err(db)?;
                Ok(format!("access key id:     {id}\nsecret access key: {secret}\n"))
            }
            S3KeysCommand::List => {
                let rows = client
                    .query(
                        "SELECT access_key_id, to_char(created_at, 'YYYY-MM-DD HH24:MI:SSOF'), description \
                         FROM fluxbase.storage_s3_keys ORDER BY created_at",
                        &[],
                    )
                    .await
                    .map_err(db)?;
                Ok(rows
                    .iter()
                    .map(|r| format!("{}\t{}\t{}\n", r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, String>(2)))
                    .collect())
            }
            S3KeysCommand::Revoke { access_key_id } => {
                let n = client
                    .execute("DELETE FROM fluxbase.storage_s3_keys WHERE access_key_id = $1", &[access_key_id])
                    .await
                    .map_err(db)?;
                if n == 0 {
                    return Err(format!("no access key {access_key_id}"));
                }
                Ok(format!("revoked {access_key_id}\n"))
            }
        }
    })
}
