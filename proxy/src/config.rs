//! Configuration: one TOML file plus `FLUXBASE_<SECTION>_<KEY>` environment
//! variables (env wins), validated at start-up. Errors name the key. This
//! module checks syntax and ranges only; what needs a service's own code to
//! judge (keys, provider settings, templates) is checked when that service
//! is built (`App::new`), which `check-config` also does.
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config: {0}")]
    Parse(String),
    #[error("invalid config: `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

pub fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, reason: reason.into() }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Local development: generated secrets are acceptable.
    #[default]
    Dev,
    Production,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub server: Server,
    pub database: Database,
    pub jwt: Jwt,
    #[serde(default)]
    pub api_keys: ApiKeys,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default)]
    pub realtime: Realtime,
    #[serde(default)]
    pub storage: Storage,
}

/// `/auth/v1`: sessions, passwords, sign-up.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Lifetime of access tokens, seconds.
    pub jwt_expiry_seconds: u64,
    /// Refuse new sign-ups (admins can still create users).
    pub disable_signup: bool,
    /// Sign-ups are confirmed at once. Unset: yes without SMTP (a sign-up
    /// could never be confirmed), no with `smtp_host` (a confirmation mail
    /// is sent, as Supabase does).
    pub email_autoconfirm: Option<bool>,
    /// Allow `signInAnonymously()`.
    pub anonymous_users: bool,
    /// Shortest accepted password (Supabase's default: 6).
    pub password_min_length: usize,
    /// Wrong passwords for one account (e-mail or phone, known or not) from
    /// one client address within `lockout_seconds` that lock it for that
    /// address; 0 disables this limit.
    pub lockout_max_failures: u32,
    /// The lockout window: wrong passwords older than this no longer count,
    /// so a burst of them locks for about this long.
    pub lockout_seconds: u32,
    /// Wrong passwords for one account from all addresses within
    /// `lockout_seconds` that lock it for everyone (a ceiling well above
    /// `lockout_max_failures`, so a stranger cannot easily lock its owner
    /// out); 0 disables this limit.
    pub lockout_account_max_failures: u32,
    /// A rotated refresh token used again within this many seconds (two tabs
    /// refreshing at once) gets a fresh token; later it revokes the session.
    pub refresh_token_reuse_interval_seconds: u32,
    /// argon2id memory in KiB, iterations and lanes (OWASP: 19456, 2, 1).
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// AES-256 key (64 hex characters) sealing TOTP secrets at rest. Unset:
    /// MFA enrolment is refused (never a plaintext fallback).
    pub mfa_encryption_key: Option<String>,
    /// Issuer shown by authenticator apps.
    pub mfa_issuer: String,
    /// Factors one user may have.
    pub mfa_max_factors: u32,
    /// Wrong codes per user within the window before verification is refused.
    pub mfa_max_verify_failures: u32,
    pub mfa_failure_window_seconds: u32,
    /// Rate limits per window (0: none), counted in Postgres so that every
    /// proxy shares them: sign-ups and sign-ins per client IP, sign-ins per
    /// account (e-mail or phone) and IP, refresh grants per IP, code and MFA
    /// verifications per IP, e-mails and SMS asked for per IP.
    pub rate_limit_window_seconds: u32,
    pub rate_limit_signups_per_ip: u32,
    pub rate_limit_signins_per_ip: u32,
    pub rate_limit_signins_per_account: u32,
    pub rate_limit_refresh_per_ip: u32,
    pub rate_limit_verify_per_ip: u32,
    pub rate_limit_email_per_ip: u32,
    pub rate_limit_sms_per_ip: u32,
    /// Where e-mail links land by default (`redirect_to` otherwise); unset:
    /// `server.public_url`.
    pub site_url: Option<String>,
    /// Other allowed `redirect_to` targets: exact URLs, or prefixes ending in `*`.
    pub redirect_urls: Vec<String>,
    /// SMTP relay for e-mail sign-in, recovery and confirmation; unset: those
    /// routes answer `422 email_provider_disabled`.
    pub smtp_host: Option<String>,
    pub smtp_port: u16,
    pub smtp_user: Option<String>,
    pub smtp_pass: Option<String>,
    /// `starttls` (required), `tls` (implicit TLS, port 465) or `none` (local relays only).
    pub smtp_tls: String,
    pub smtp_sender: String,
    /// Directory of e-mail templates (`magic_link.html`, `recovery.html`,
    /// `confirmation.html`, `invite.html`); missing files use the built-in ones.
    pub templates_dir: Option<std::path::PathBuf>,
    /// How long e-mailed links and codes stay valid, seconds.
    pub otp_expiry_seconds: u32,
    /// One e-mail per address per this many seconds.
    pub email_interval_seconds: u32,
    /// OAuth 2.0 / OpenID Connect providers by name (`[auth.providers.google]`).
    pub providers: std::collections::BTreeMap<String, OAuthProvider>,
    /// How long a sign-in at a provider may take, and how long the code of a
    /// PKCE sign-in stays valid, seconds.
    pub flow_state_expiry_seconds: u32,
    /// SMS for phone sign-up and sign-in: `webhook` or `twilio`; unset,
    /// phone routes answer `422 phone_provider_disabled` (but test numbers work).
    pub sms_provider: Option<String>,
    pub sms_webhook_url: Option<String>,
    /// `v1,whsec_<base64>`: signs webhook requests (Standard Webhooks).
    pub sms_webhook_secret: Option<String>,
    pub sms_twilio_account_sid: Option<String>,
    pub sms_twilio_auth_token: Option<String>,
    /// Sender number, or a Messaging Service SID (`MG…`).
    pub sms_twilio_from: Option<String>,
    pub sms_twilio_api_url: String,
    /// Text of the SMS; `{{ .Code }}` is the code.
    pub sms_template: String,
    /// Phone numbers (digits only) with fixed codes; nothing is sent to them.
    pub sms_test_otp: std::collections::BTreeMap<String, String>,
    /// Phone sign-ups are confirmed at once (no SMS).
    pub sms_autoconfirm: bool,
    /// One SMS per number per this many seconds.
    pub sms_interval_seconds: u32,
    /// Character sets a new password must each draw from (Supabase's
    /// `GOTRUE_PASSWORD_REQUIRED_CHARACTERS`, as a list).
    pub password_required_characters: Vec<String>,
    /// Leaked passwords, refused: a file of SHA-1 hashes in Have I Been
    /// Pwned's sorted `HASH[:COUNT]` format.
    pub password_breached_file: Option<std::path::PathBuf>,
    /// A k-anonymity range API (`https://api.pwnedpasswords.com/range/`).
    pub password_breached_range_url: Option<String>,
    /// SAML 2.0 identity providers by name (`[auth.saml_providers.acme]`).
    pub saml_providers: std::collections::BTreeMap<String, SamlProvider>,
    /// Passkey sign-in (WebAuthn), on by default as in Supabase.
    pub passkeys: bool,
    /// The WebAuthn relying party id (a domain); default: the site URL's host.
    pub passkey_rp_id: Option<String>,
    pub passkey_rp_name: String,
    /// Origins allowed to run ceremonies; default: the site URL's origin.
    pub passkey_origins: Vec<String>,
    /// A new e-mail must be confirmed from the current address too, not
    /// only the new one (Supabase's `GOTRUE_MAILER_SECURE_EMAIL_CHANGE_ENABLED`).
    pub secure_email_change: bool,
    /// A password change needs the `nonce` of GET /reauthenticate
    /// (`GOTRUE_SECURITY_UPDATE_PASSWORD_REQUIRE_REAUTHENTICATION`).
    pub update_password_require_reauthentication: bool,
    /// Allow `linkIdentity()`/`unlinkIdentity()` (Supabase's
    /// `GOTRUE_SECURITY_MANUAL_LINKING_ENABLED`, off by default there too).
    pub manual_linking: bool,
    /// The OAuth 2.1 server: Supabase Auth as the identity provider of
    /// third-party apps (`[auth.oauth_server]`, GoTrue's `GOTRUE_OAUTH_SERVER_*`).
    pub oauth_server: OAuthServer,
    /// Sign-in with an Ethereum wallet (EIP-4361 messages), as GoTrue's
    /// `GOTRUE_EXTERNAL_WEB3_ETHEREUM_ENABLED`; off by default there too.
    pub web3_ethereum_enabled: bool,
    /// How far from its `Issued At` a signed Ethereum message is accepted
    /// (`GOTRUE_EXTERNAL_WEB3_ETHEREUM_MAXIMUM_VALIDITY_DURATION`, 10m).
    pub web3_ethereum_maximum_validity_seconds: u32,
    /// Sign-in with a Solana wallet (`GOTRUE_EXTERNAL_WEB3_SOLANA_ENABLED`).
    pub web3_solana_enabled: bool,
    /// As for Ethereum (`GOTRUE_EXTERNAL_WEB3_SOLANA_MAXIMUM_VALIDITY_DURATION`).
    pub web3_solana_maximum_validity_seconds: u32,
}

/// `[auth.oauth_server]`: off by default, as in Supabase.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthServer {
    pub enabled: bool,
    /// The app's consent page, joined to `site_url`: `/oauth/authorize`
    /// sends the browser there with `?authorization_id=`.
    pub authorization_url_path: String,
    /// Anyone may register a client at `POST /oauth/clients/register` (RFC 7591).
    pub allow_dynamic_registration: bool,
    /// Scope of an authorization request that names none.
    pub default_scope: String,
    /// How long a request may wait for consent, and its code for the token
    /// exchange.
    pub authorization_ttl_seconds: u32,
}

impl Default for OAuthServer {
    fn default() -> Self {
        OAuthServer {
            enabled: false,
            authorization_url_path: String::new(),
            allow_dynamic_registration: false,
            default_scope: "email".into(),
            authorization_ttl_seconds: 600,
        }
    }
}

/// One SAML identity provider: its metadata (signing certificates and an
/// HTTP-Redirect SingleSignOnService) and the e-mail domains it serves.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SamlProvider {
    pub enabled: Option<bool>,
    pub metadata_file: Option<PathBuf>,
    pub metadata_xml: Option<String>,
    /// `signInWithSSO({domain})` finds the provider by these.
    pub domains: Vec<String>,
    /// The attribute with the e-mail address (default: `email`, `mail`, the
    /// claims URI, the LDAP OID, else a NameID that is an address).
    pub email_attribute: Option<String>,
}

/// One OAuth/OIDC provider. A preset name (`google`, `github`, `gitlab`,
/// `azure`, `apple`, `discord`) as the table name or `kind` fills in the
/// endpoints; `kind = "oidc"` finds them at `issuer`'s discovery document;
/// `kind = "oauth2"` takes `authorize_url`, `token_url` and `userinfo_url`.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthProvider {
    pub enabled: Option<bool>,
    pub kind: Option<String>,
    pub client_id: String,
    pub secret: Option<String>,
    pub issuer: Option<String>,
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    pub userinfo_url: Option<String>,
    /// Scopes asked for (default per preset; `openid email profile` for OIDC).
    pub scopes: Option<Vec<String>>,
    /// How the client authenticates at the token endpoint: `basic` or `post`.
    pub token_auth: Option<String>,
    /// Default: `<server.public_url>/auth/v1/callback`.
    pub redirect_uri: Option<String>,
    /// Other client ids whose ID tokens `grant_type=id_token` accepts (mobile apps).
    pub additional_client_ids: Vec<String>,
}

impl Auth {
    pub fn autoconfirm(&self) -> bool {
        self.email_autoconfirm.unwrap_or(self.smtp_host.is_none())
    }
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            jwt_expiry_seconds: 3600,
            disable_signup: false,
            email_autoconfirm: None,
            anonymous_users: false,
            password_min_length: 6,
            lockout_max_failures: 5,
            lockout_seconds: 900,
            lockout_account_max_failures: 100,
            refresh_token_reuse_interval_seconds: 10,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            mfa_encryption_key: None,
            mfa_issuer: "Fluxbase".into(),
            mfa_max_factors: 10,
            mfa_max_verify_failures: 5,
            mfa_failure_window_seconds: 300,
            rate_limit_window_seconds: 300,
            rate_limit_signups_per_ip: 30,
            rate_limit_signins_per_ip: 30,
            rate_limit_signins_per_account: 10,
            rate_limit_refresh_per_ip: 150,
            rate_limit_verify_per_ip: 30,
            rate_limit_email_per_ip: 30,
            rate_limit_sms_per_ip: 30,
            site_url: None,
            redirect_urls: vec![],
            smtp_host: None,
            smtp_port: 587,
            smtp_user: None,
            smtp_pass: None,
            smtp_tls: "starttls".into(),
            smtp_sender: "Fluxbase <noreply@localhost>".into(),
            templates_dir: None,
            otp_expiry_seconds: 3600,
            email_interval_seconds: 60,
            providers: Default::default(),
            flow_state_expiry_seconds: 300,
            manual_linking: false,
            oauth_server: OAuthServer::default(),
            web3_ethereum_enabled: false,
            web3_ethereum_maximum_validity_seconds: 600,
            web3_solana_enabled: false,
            web3_solana_maximum_validity_seconds: 600,
            secure_email_change: true,
            saml_providers: Default::default(),
            passkeys: true,
            passkey_rp_id: None,
            passkey_rp_name: "Fluxbase".into(),
            passkey_origins: vec![],
            password_required_characters: vec![],
            password_breached_file: None,
            password_breached_range_url: None,
            update_password_require_reauthentication: false,
            sms_provider: None,
            sms_webhook_url: None,
            sms_webhook_secret: None,
            sms_twilio_account_sid: None,
            sms_twilio_auth_token: None,
            sms_twilio_from: None,
            sms_twilio_api_url: "https://api.twilio.com".into(),
            sms_template: "Your code is {{ .Code }}".into(),
            sms_test_otp: Default::default(),
            sms_autoconfirm: false,
            sms_interval_seconds: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    pub listen: SocketAddr,
    /// Public URL printed by `fluxbase keys` and used in links.
    pub public_url: Option<String>,
    pub body_limit_bytes: usize,
    /// Upper bound on the request line plus headers (HTTP/1); at least 8192.
    pub header_limit_bytes: usize,
    pub request_timeout_ms: u64,
    pub shutdown_grace_ms: u64,
    /// Send `Strict-Transport-Security` (set when a TLS terminator is in front).
    pub behind_tls: bool,
    /// Origins allowed by CORS; `["*"]` allows any.
    pub cors_allowed_origins: Vec<String>,
    /// Addresses of load balancers / reverse proxies whose `X-Forwarded-For`
    /// is believed: the client IP (rate limits, audit log) is then the
    /// rightmost address in that header that is not one of them.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Threads of the async runtime; 0: half the CPUs (at least one), since
    /// the proxy runs beside Postgres and shares the machine with it.
    pub worker_threads: usize,
    /// A connection with no byte read or written for this long, and no
    /// request in flight, is closed (a socket that never sends a byte, an
    /// idle keep-alive).
    pub idle_timeout_ms: u64,
    /// Open client connections at most; one more is answered `503` and
    /// closed. Lowered at start to what the open-file limit allows.
    pub max_connections: usize,
}

impl Server {
    pub fn worker_threads(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map(|n| n.get() / 2).unwrap_or(1).max(1),
            n => n,
        }
    }
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "127.0.0.1:54321".parse().expect("valid default address"),
            public_url: None,
            body_limit_bytes: 1024 * 1024,
            header_limit_bytes: 16 * 1024,
            request_timeout_ms: 30_000,
            shutdown_grace_ms: 10_000,
            behind_tls: false,
            cors_allowed_origins: vec!["*".into()],
            worker_threads: 0,
            trusted_proxies: vec![],
            idle_timeout_ms: 30_000,
            max_connections: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// libpq-style URL; the user should be `authenticator`.
    pub url: String,
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    #[serde(default = "default_pool_timeout_ms")]
    pub pool_timeout_ms: u64,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

fn default_pool_size() -> usize {
    32
}
fn default_pool_timeout_ms() -> u64 {
    10_000
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    /// HS256 secret, at least 32 bytes (256 bits).
    pub secret: Option<String>,
    /// A JWK set (JSON) with RS256/ES256 public keys that may sign tokens.
    pub jwks_file: Option<PathBuf>,
    /// A JWK set with ES256 private keys (`fluxbase gen-signing-key`): the
    /// first signs the access tokens `/auth/v1` issues, all of them verify,
    /// and their public parts are published at `/auth/v1/.well-known/jwks.json`.
    pub signing_jwks_file: Option<PathBuf>,
    /// Required `aud` claim, if set.
    pub audience: Option<String>,
    /// Role for requests without a token.
    #[serde(default = "default_anon_role")]
    pub anon_role: String,
    /// Verified tokens kept in memory.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
    /// Accepted clock skew for `exp`/`nbf`/`iat`, seconds.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
}

fn default_anon_role() -> String {
    "anon".into()
}
fn default_cache_entries() -> usize {
    10_000
}
fn default_leeway() -> u64 {
    30
}

/// Supabase's API keys. Legacy keys are JWTs; new keys are opaque strings.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ApiKeys {
    pub anon: Option<String>,
    pub service_role: Option<String>,
    /// `sb_publishable_…` keys: role `anon`.
    pub publishable: Vec<String>,
    /// `sb_secret_…` keys: role `service_role`.
    pub secret: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `tracing` filter, e.g. `info` or `fluxbase=debug`.
    pub level: String,
    /// `json` or `pretty`.
    pub format: String,
}

impl Default for Log {
    fn default() -> Self {
        Log { level: "info".into(), format: "json".into() }
    }
}

/// `/realtime/v1`: WebSocket channels (docs/realtime.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Realtime {
    /// Realtime sockets open at once from one client address.
    pub max_connections_per_ip: usize,
    /// Channels one socket may have joined at once.
    pub max_channels_per_connection: usize,
    /// Channel joins one socket may make per second.
    pub max_joins_per_second: u32,
    /// Broadcast and presence messages one socket may send per second
    /// (heartbeats and joins are not counted).
    pub max_events_per_second: u32,
    /// Largest broadcast or presence payload, bytes of JSON (or raw bytes).
    /// At most 7500: broadcasts reach other proxies through `NOTIFY`, whose
    /// payload limit is 8000 bytes with the envelope.
    pub max_payload_bytes: usize,
    /// Frames queued for one socket; a socket whose queue is full is a slow
    /// consumer and is disconnected.
    pub send_queue_frames: usize,
    /// A socket that sends nothing (realtime-js sends a heartbeat every
    /// 25 s) for this long is closed.
    pub heartbeat_timeout_ms: u64,
    /// Messages kept in `realtime.messages` (sent from SQL or over HTTP)
    /// this long; older ones are deleted every minute.
    pub message_retention_seconds: u64,
}

impl Default for Realtime {
    fn default() -> Self {
        Realtime {
            max_connections_per_ip: 100,
            max_channels_per_connection: 100,
            max_joins_per_second: 100,
            max_events_per_second: 100,
            max_payload_bytes: 7500,
            send_queue_frames: 1024,
            heartbeat_timeout_ms: 60_000,
            message_retention_seconds: 3 * 24 * 3600,
        }
    }
}

/// `/storage/v1`: buckets and objects (docs/storage.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// Where the local backend keeps objects (`<root>/<bucket>/<name>/<version>`)
    /// and its temporary files (`<root>/.tmp`, emptied at start).
    pub root: PathBuf,
    /// The largest object, bytes; a bucket's own `file_size_limit` may only
    /// lower it.
    pub file_size_limit: u64,
    /// Time limit of one storage request until its response starts (an
    /// upload's body is read within it; a download streams after it).
    pub request_timeout_ms: u64,
    /// How long a signed upload URL stays valid.
    pub signed_upload_expiry_seconds: u64,
    /// How long after its creation an unfinished resumable (TUS) upload can
    /// be resumed; after that it is refused (410) and its staged bytes swept.
    pub resumable_expiry_seconds: u64,
    /// Image transforms (`/render/image/…`); off: answered `FeatureNotEnabled`.
    pub image_transforms: bool,
    /// Images rendered at once (each on a blocking thread); more wait.
    pub transform_concurrency: usize,
    /// Largest source image, decoded pixels (width × height), checked from
    /// its header before any pixel is decoded.
    pub transform_max_pixels: u64,
    /// Largest source image, bytes.
    pub transform_max_source_bytes: u64,
    /// Disk kept for rendered variants under `<root>/~render`, bytes (the
    /// oldest go first); 0 turns the cache off.
    pub transform_cache_bytes: u64,
    /// AES-256 key (64 hex characters) sealing the S3 protocol's secret
    /// access keys in `fluxbase.storage_s3_keys`. Unset: S3 access keys are
    /// refused (session tokens still work).
    pub s3_encryption_key: Option<String>,
    /// Where object bytes live: `local` (under `root`) or `s3` (the `s3_*` keys).
    pub backend: StorageBackend,
    /// The S3 bucket that holds every storage bucket's objects.
    pub s3_bucket: String,
    /// The S3 region (signs requests; with no endpoint it also picks AWS's host).
    pub s3_region: String,
    /// An S3-protocol server other than AWS (`http(s)://host[:port]`).
    pub s3_endpoint: Option<String>,
    /// Access key; unset: `AWS_ACCESS_KEY_ID` from the environment.
    pub s3_access_key_id: Option<String>,
    /// Secret key; unset: `AWS_SECRET_ACCESS_KEY` from the environment.
    pub s3_secret_access_key: Option<String>,
    /// Temporary credentials' token; unset: `AWS_SESSION_TOKEN`, if set.
    pub s3_session_token: Option<String>,
    /// `host/bucket/key` URLs instead of `bucket.host/key` (most self-hosted servers).
    pub s3_force_path_style: bool,
    /// Prepended to every key (`<prefix>/<bucket>/<name>/<version>`), so
    /// one S3 bucket can serve several installations.
    pub s3_prefix: String,
}

/// `storage.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Local,
    S3,
}

impl Storage {
    /// `s3_encryption_key` as 32 bytes; None when unset or not 64 hex digits.
    pub fn s3_key(&self) -> Option<[u8; 32]> {
        let hex = self.s3_encryption_key.as_deref()?.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut key = [0u8; 32];
        for (i, k) in key.iter_mut().enumerate() {
            *k = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(key)
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            root: PathBuf::from("storage"),
            file_size_limit: 50 * 1024 * 1024,
            request_timeout_ms: 3_600_000,
            signed_upload_expiry_seconds: 7200,
            resumable_expiry_seconds: 24 * 3600,
            image_transforms: true,
            transform_concurrency: 2,
            transform_max_pixels: 50_000_000,
            transform_max_source_bytes: 25 << 20,
            transform_cache_bytes: 256 << 20,
            s3_encryption_key: None,
            backend: StorageBackend::Local,
            s3_bucket: String::new(),
            s3_region: "us-east-1".into(),
            s3_endpoint: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_session_token: None,
            s3_force_path_style: false,
            s3_prefix: String::new(),
        }
    }
}

impl Storage {
    /// The AWS SDKs' variables stand in for unset S3 credentials.
    fn take_aws_env(&mut self, env: &[(String, String)]) {
        let var = |name: &str| env.iter().find(|(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.clone());
        if self.s3_access_key_id.is_none() && self.s3_secret_access_key.is_none() {
            self.s3_access_key_id = var("AWS_ACCESS_KEY_ID");
            self.s3_secret_access_key = var("AWS_SECRET_ACCESS_KEY");
            if self.s3_session_token.is_none() {
                self.s3_session_token = var("AWS_SESSION_TOKEN");
            }
        }
    }

    fn validate_s3(&self) -> Result<(), ConfigError> {
        if self.s3_bucket.is_empty() {
            return Err(invalid("storage.s3_bucket", "must be set when storage.backend is s3"));
        }
        if self.s3_region.is_empty() {
            return Err(invalid("storage.s3_region", "must not be empty"));
        }
        if let Some(endpoint) = &self.s3_endpoint {
            let url = url::Url::parse(endpoint).map_err(|e| invalid("storage.s3_endpoint", e.to_string()))?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || url.path() != "/" {
                return Err(invalid("storage.s3_endpoint", "must be http(s)://host[:port], with no path"));
            }
        }
        match (&self.s3_access_key_id, &self.s3_secret_access_key) {
            (Some(k), Some(s)) if !k.is_empty() && !s.is_empty() => {}
            _ => {
                return Err(invalid(
                    "storage.s3_access_key_id",
                    "storage.s3_access_key_id and storage.s3_secret_access_key (or AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY) must both be set when storage.backend is s3",
                ))
            }
        }
        if self.s3_prefix.starts_with('/') || self.s3_prefix.split('/').any(|s| s == "..") {
            return Err(invalid("storage.s3_prefix", "must not start with / nor contain .."));
        }
        Ok(())
    }
}

const SECTIONS: [&str; 8] = ["server", "database", "jwt", "api_keys", "log", "auth", "realtime", "storage"];

impl Config {
    /// Reads the file (if any), applies `FLUXBASE_*` variables, validates.
    pub fn load(path: Option<&Path>, env: impl Iterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut doc: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.into(), source })?;
                text.parse().map_err(|e: toml::de::Error| ConfigError::Parse(format!("{}: {e}", p.display())))?
            }
            None => toml::Table::new(),
        };
        let env: Vec<(String, String)> = env.collect();
        apply_env(&mut doc, env.iter().cloned())?;
        let mut config: Config =
            toml::Value::Table(doc).try_into().map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        config.storage.take_aws_env(&env);
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=7500).contains(&self.realtime.max_payload_bytes) {
            return Err(invalid("realtime.max_payload_bytes", "must be between 1 and 7500 (the NOTIFY payload limit)"));
        }
        if self.realtime.send_queue_frames < 16 {
            return Err(invalid("realtime.send_queue_frames", "must be at least 16"));
        }
        if self.realtime.heartbeat_timeout_ms < 1000 {
            return Err(invalid("realtime.heartbeat_timeout_ms", "must be at least 1000"));
        }
        if self.realtime.max_channels_per_connection == 0
            || self.realtime.max_joins_per_second == 0
            || self.realtime.max_events_per_second == 0
        {
            return Err(invalid("realtime", "channel, join and event limits must be greater than 0"));
        }
        if self.storage.file_size_limit == 0 {
            return Err(invalid("storage.file_size_limit", "must be greater than 0"));
        }
        if self.storage.request_timeout_ms == 0 || self.storage.signed_upload_expiry_seconds == 0 {
            return Err(invalid(
                "storage",
                "request_timeout_ms and signed_upload_expiry_seconds must be greater than 0",
            ));
        }
        if self.storage.resumable_expiry_seconds == 0 {
            return Err(invalid("storage.resumable_expiry_seconds", "must be greater than 0"));
        }
        if self.storage.transform_concurrency == 0
            || self.storage.transform_max_pixels == 0
            || self.storage.transform_max_source_bytes == 0
        {
            return Err(invalid(
                "storage",
                "transform_concurrency, transform_max_pixels and transform_max_source_bytes must be greater than 0",
            ));
        }
        if self.storage.s3_encryption_key.is_some() && self.storage.s3_key().is_none() {
            return Err(invalid("storage.s3_encryption_key", "must be 64 hex characters (256 bits)"));
        }
        if self.storage.root.as_os_str().is_empty() {
            return Err(invalid("storage.root", "must not be empty"));
        }
        if self.storage.backend == StorageBackend::S3 {
            self.storage.validate_s3()?;
        }
        if self.server.header_limit_bytes < 8192 {
            return Err(invalid("server.header_limit_bytes", "must be at least 8192"));
        }
        if self.server.body_limit_bytes == 0 {
            return Err(invalid("server.body_limit_bytes", "must be greater than 0"));
        }
        if self.server.idle_timeout_ms == 0 {
            return Err(invalid("server.idle_timeout_ms", "must be greater than 0"));
        }
        if self.server.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be greater than 0"));
        }
        if self.server.request_timeout_ms == 0 {
            return Err(invalid("server.request_timeout_ms", "must be greater than 0"));
        }
        if self.auth.argon2_memory_kib < 8 * self.auth.argon2_parallelism.max(1) || self.auth.argon2_iterations == 0 {
            return Err(invalid("auth.argon2_memory_kib", "argon2 needs at least 8 KiB per lane and one iteration"));
        }
        if !["starttls", "tls", "none"].contains(&self.auth.smtp_tls.as_str()) {
            return Err(invalid("auth.smtp_tls", "must be starttls, tls or none"));
        }
        if self.auth.oauth_server.authorization_ttl_seconds == 0 {
            return Err(invalid("auth.oauth_server.authorization_ttl_seconds", "must be greater than 0"));
        }
        if self.auth.web3_ethereum_maximum_validity_seconds == 0 {
            return Err(invalid("auth.web3_ethereum_maximum_validity_seconds", "must be greater than 0"));
        }
        if self.auth.web3_solana_maximum_validity_seconds == 0 {
            return Err(invalid("auth.web3_solana_maximum_validity_seconds", "must be greater than 0"));
        }
        if self.auth.rate_limit_window_seconds == 0 {
            return Err(invalid("auth.rate_limit_window_seconds", "must be greater than 0"));
        }
        if self.auth.lockout_seconds == 0
            && (self.auth.lockout_max_failures > 0 || self.auth.lockout_account_max_failures > 0)
        {
            return Err(invalid("auth.lockout_seconds", "must be greater than 0 while a lockout limit is set"));
        }
        if self.auth.password_required_characters.iter().any(|set| set.is_empty()) {
            return Err(invalid("auth.password_required_characters", "a character set is empty"));
        }
        if self.auth.flow_state_expiry_seconds == 0 {
            return Err(invalid("auth.flow_state_expiry_seconds", "must be greater than 0"));
        }
        if self.auth.jwt_expiry_seconds == 0 {
            return Err(invalid("auth.jwt_expiry_seconds", "must be greater than 0"));
        }
        if self.server.cors_allowed_origins.is_empty() {
            return Err(invalid("server.cors_allowed_origins", "list at least one origin, or \"*\""));
        }
        if !(self.database.url.starts_with("postgres://") || self.database.url.starts_with("postgresql://")) {
            return Err(invalid("database.url", "must be a postgres:// URL"));
        }
        if self.database.url.parse::<tokio_postgres::Config>().is_err() {
            return Err(invalid("database.url", "is not a valid connection URL"));
        }
        if self.database.pool_size == 0 {
            return Err(invalid("database.pool_size", "must be greater than 0"));
        }
        match &self.jwt.secret {
            Some(s) if s.len() < 32 => return Err(invalid("jwt.secret", "must be at least 32 bytes (256 bits)")),
            None if self.jwt.jwks_file.is_none() && self.jwt.signing_jwks_file.is_none() => {
                return Err(invalid(
                    "jwt.secret",
                    "set jwt.secret, jwt.jwks_file or jwt.signing_jwks_file: tokens cannot be verified otherwise",
                ))
            }
            _ => {}
        }
        if self.jwt.anon_role.is_empty() {
            return Err(invalid("jwt.anon_role", "must not be empty"));
        }
        for key in &self.api_keys.publishable {
            if !key.starts_with("sb_publishable_") {
                return Err(invalid("api_keys.publishable", "keys start with sb_publishable_"));
            }
        }
        for key in &self.api_keys.secret {
            if !key.starts_with("sb_secret_") || key.len() < 32 {
                return Err(invalid("api_keys.secret", "keys start with sb_secret_ and are at least 32 characters"));
            }
        }
        if !["json", "pretty"].contains(&self.log.format.as_str()) {
            return Err(invalid("log.format", "must be \"json\" or \"pretty\""));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid("log.level", "is not a valid filter (try \"info\")"));
        }
        Ok(())
    }

    pub fn public_url(&self) -> String {
        self.server.public_url.clone().unwrap_or_else(|| format!("http://{}", self.server.listen))
    }
}

/// `FLUXBASE_MODE`, `FLUXBASE_<SECTION>_<KEY>`: the value is read as a TOML
/// value when it parses as one (numbers, booleans, arrays), else as a string.
fn apply_env(doc: &mut toml::Table, env: impl Iterator<Item = (String, String)>) -> Result<(), ConfigError> {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("FLUXBASE_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        if rest == "mode" {
            doc.insert("mode".into(), toml::Value::String(value));
            continue;
        }
        if rest == "config" {
            continue;
        }
        // Other FLUXBASE_* variables belong to scripts and tools; a key
        // inside a known section is checked strictly (deny_unknown_fields).
        let Some(section) = SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_"))) else {
            continue;
        };
        let key = &rest[section.len() + 1..];
        // A number only when written as TOML writes it: `+15550100100` (a
        // phone number) stays the string it is.
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .filter(|v| match v {
                toml::Value::Integer(_) | toml::Value::Float(_) => v.to_string() == value.trim(),
                _ => true,
            })
            .unwrap_or(toml::Value::String(value));
        let table = doc
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| ConfigError::Parse(format!("`{section}` must be a table")))?;
        table.insert(key.to_string(), parsed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>().into_iter()
    }

    const BASE: &[(&str, &str)] = &[
        ("FLUXBASE_DATABASE_URL", "postgres://authenticator@127.0.0.1/postgres"),
        ("FLUXBASE_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
    ];

    #[test]
    fn env_alone_is_enough_and_types_are_parsed() {
        let mut pairs = BASE.to_vec();
        pairs.push(("FLUXBASE_SERVER_LISTEN", "127.0.0.1:9999"));
        pairs.push(("FLUXBASE_DATABASE_POOL_SIZE", "4"));
        pairs.push(("FLUXBASE_SERVER_CORS_ALLOWED_ORIGINS", r#"["https://a.example"]"#));
        pairs.push(("FLUXBASE_AUTH_SMS_TWILIO_FROM", "+15550000000"));
        let c = Config::load(None, env(&pairs)).unwrap();
        assert_eq!(c.auth.sms_twilio_from.as_deref(), Some("+15550000000"));
        assert_eq!(c.server.listen.port(), 9999);
        assert_eq!(c.database.pool_size, 4);
        assert_eq!(c.server.cors_allowed_origins, vec!["https://a.example".to_string()]);
    }

    #[test]
    fn errors_name_the_key() {
        let mut pairs = BASE.to_vec();
        pairs.push(("FLUXBASE_JWT_SECRET", "short"));
        let err = Config::load(None, env(&pairs)).unwrap_err().to_string();
        assert!(err.contains("jwt.secret"), "{err}");

        let mut pairs = BASE.to_vec();
        pairs.push(("FLUXBASE_SERVER_LISTEN", "not an address"));
        let err = Config::load(None, env(&pairs)).unwrap_err().to_string();
        assert!(err.contains("listen"), "{err}");

        let mut pairs = BASE.to_vec();
        pairs.push(("FLUXBASE_SERVER_LISTN", "1"));
        let err = Config::load(None, env(&pairs)).unwrap_err().to_string();
        assert!(err.contains("listn"), "{err}");

        let mut pairs = BASE.to_vec();
        pairs.push(("FLUXBASE_DATABASE_POOLSIZE", "3"));
        let err = Config::load(None, env(&pairs)).unwrap_err().to_string();
        assert!(err.contains("poolsize"), "{err}");

        let mut pairs = BASE.to_vec();
        pairs.push(("FLUXBASE_STORAGE_S3_ENCRYPTION_KEY", "not-hex"));
        let err = Config::load(None, env(&pairs)).unwrap_err().to_string();
        assert!(err.contains("storage.s3_encryption_key"), "{err}");
    }
    #[test]
    fn the_s3_backend_needs_a_bucket_and_keys() {
        let s3 = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = BASE.to_vec();
            pairs.push(("FLUXBASE_STORAGE_BACKEND", "s3"));
            pairs.extend_from_slice(extra);
            Config::load(None, env(&pairs))
        };
        let err = s3(&[]).unwrap_err().to_string();
        assert!(err.contains("storage.s3_bucket"), "{err}");
        let err = s3(&[("FLUXBASE_STORAGE_S3_BUCKET", "b")]).unwrap_err().to_string();
        assert!(err.contains("storage.s3_access_key_id"), "{err}");
        let keys = [("FLUXBASE_STORAGE_S3_BUCKET", "b"), ("AWS_ACCESS_KEY_ID", "ak"), ("AWS_SECRET_ACCESS_KEY", "sk")];
        let c = s3(&keys).unwrap();
        assert_eq!(c.storage.backend, StorageBackend::S3);
        assert_eq!(c.storage.s3_access_key_id.as_deref(), Some("ak"));
        assert_eq!(c.storage.s3_secret_access_key.as_deref(), Some("sk"));
        let mut with = keys.to_vec();
        with.push(("FLUXBASE_STORAGE_S3_ENDPOINT", "ftp://127.0.0.1:9000"));
        let err = s3(&with).unwrap_err().to_string();
        assert!(err.contains("storage.s3_endpoint"), "{err}");
        with.pop();
        with.push(("FLUXBASE_STORAGE_S3_PREFIX", "/abs"));
        let err = s3(&with).unwrap_err().to_string();
        assert!(err.contains("storage.s3_prefix"), "{err}");
        with.pop();
        with.push(("FLUXBASE_STORAGE_BACKEND", "gcs"));
        assert!(s3(&with).is_err(), "an unknown backend is refused");
    }
}
