-- The `auth` schema of Supabase Auth (GoTrue), with its table and column
-- names, so existing policies, triggers and SQL keep working. In a database
-- that moved over from Supabase the tables exist already and are kept
-- (`IF NOT EXISTS`); only what is missing is added.
--
-- The tables belong to the extension, so pg_dump would skip their rows:
-- every one is registered with pg_extension_config_dump so backups keep the
-- users, sessions and audit log.

DO $types$
BEGIN
  IF to_regtype('auth.aal_level') IS NULL THEN
    CREATE TYPE auth.aal_level AS ENUM ('aal1', 'aal2', 'aal3');
  END IF;
  IF to_regtype('auth.factor_type') IS NULL THEN
    CREATE TYPE auth.factor_type AS ENUM ('totp', 'webauthn', 'phone');
  END IF;
  IF to_regtype('auth.factor_status') IS NULL THEN
    CREATE TYPE auth.factor_status AS ENUM ('unverified', 'verified');
  END IF;
  IF to_regtype('auth.code_challenge_method') IS NULL THEN
    CREATE TYPE auth.code_challenge_method AS ENUM ('s256', 'plain');
  END IF;
  IF to_regtype('auth.one_time_token_type') IS NULL THEN
    CREATE TYPE auth.one_time_token_type AS ENUM ('confirmation_token', 'reauthentication_token',
      'recovery_token', 'email_change_token_new', 'email_change_token_current', 'phone_change_token');
  END IF;
END
$types$;

CREATE TABLE IF NOT EXISTS auth.users (
  instance_id uuid,
  id uuid NOT NULL PRIMARY KEY,
  aud varchar(255),
  role varchar(255),
  email varchar(255),
  encrypted_password varchar(255),
  email_confirmed_at timestamptz,
  invited_at timestamptz,
  confirmation_token varchar(255),
  confirmation_sent_at timestamptz,
  recovery_token varchar(255),
  recovery_sent_at timestamptz,
  email_change_token_new varchar(255),
  email_change varchar(255),
  email_change_sent_at timestamptz,
  last_sign_in_at timestamptz,
  raw_app_meta_data jsonb,
  raw_user_meta_data jsonb,
  is_super_admin boolean,
  created_at timestamptz,
  updated_at timestamptz,
  phone text UNIQUE DEFAULT NULL,
  phone_confirmed_at timestamptz,
  phone_change text DEFAULT '',
  phone_change_token varchar(255) DEFAULT '',
  phone_change_sent_at timestamptz,
  confirmed_at timestamptz GENERATED ALWAYS AS (LEAST(email_confirmed_at, phone_confirmed_at)) STORED,
  email_change_token_current varchar(255) DEFAULT '',
  email_change_confirm_status smallint DEFAULT 0 CHECK (email_change_confirm_status BETWEEN 0 AND 2),
  banned_until timestamptz,
  reauthentication_token varchar(255) DEFAULT '',
  reauthentication_sent_at timestamptz,
  is_sso_user boolean NOT NULL DEFAULT false,
  deleted_at timestamptz,
  is_anonymous boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX IF NOT EXISTS users_email_partial_key ON auth.users (email) WHERE is_sso_user = false;
CREATE INDEX IF NOT EXISTS users_instance_id_idx ON auth.users (instance_id);

CREATE TABLE IF NOT EXISTS auth.identities (
  provider_id text NOT NULL,
  user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
  identity_data jsonb NOT NULL,
  provider text NOT NULL,
  last_sign_in_at timestamptz,
  created_at timestamptz,
  updated_at timestamptz,
  email text GENERATED ALWAYS AS (lower(identity_data ->> 'email')) STORED,
  id uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
  CONSTRAINT identities_provider_id_provider_unique UNIQUE (provider_id, provider)
);
CREATE INDEX IF NOT EXISTS identities_user_id_idx ON auth.identities (user_id);

CREATE TABLE IF NOT EXISTS auth.sessions (
  id uuid NOT NULL PRIMARY KEY,
  user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
  created_at timestamptz,
  updated_at timestamptz,
  factor_id uuid,
  aal auth.aal_level,
  not_after timestamptz,
  refreshed_at timestamp,
  user_agent text,
  ip inet,
  tag text
);
CREATE INDEX IF NOT EXISTS sessions_user_id_idx ON auth.sessions (user_id);

-- `token` holds the SHA-256 (hex) of the refresh token, never the token.
CREATE TABLE IF NOT EXISTS auth.refresh_tokens (
  instance_id uuid,
  id bigserial PRIMARY KEY,
  token varchar(255) UNIQUE,
  user_id varchar(255),
  revoked boolean,
  created_at timestamptz,
  updated_at timestamptz,
  parent varchar(255),
  session_id uuid REFERENCES auth.sessions (id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS refresh_tokens_session_id_revoked_idx ON auth.refresh_tokens (session_id, revoked);
CREATE INDEX IF NOT EXISTS refresh_tokens_parent_idx ON auth.refresh_tokens (parent);

CREATE TABLE IF NOT EXISTS auth.mfa_amr_claims (
  session_id uuid NOT NULL REFERENCES auth.sessions (id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  authentication_method text NOT NULL,
  id uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
  CONSTRAINT mfa_amr_claims_session_id_authentication_method_pkey UNIQUE (session_id, authentication_method)
);

CREATE TABLE IF NOT EXISTS auth.mfa_factors (
  id uuid NOT NULL PRIMARY KEY,
  user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
  friendly_name text,
  factor_type auth.factor_type NOT NULL,
  status auth.factor_status NOT NULL,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  secret text,
  phone text,
  last_challenged_at timestamptz UNIQUE
);

CREATE TABLE IF NOT EXISTS auth.mfa_challenges (
  id uuid NOT NULL PRIMARY KEY,
  factor_id uuid NOT NULL REFERENCES auth.mfa_factors (id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL,
  verified_at timestamptz,
  ip_address inet NOT NULL,
  otp_code text
);

-- WebAuthn factors, in Supabase's columns: a factor's credential (as
-- go-webauthn's Credential: id, publicKey, authenticator.signCount) and a
-- challenge's ceremony (go-webauthn's SessionData: challenge, rpId, user_id).
ALTER TABLE auth.mfa_factors ADD COLUMN IF NOT EXISTS web_authn_credential jsonb,
  ADD COLUMN IF NOT EXISTS web_authn_aaguid uuid;
ALTER TABLE auth.mfa_challenges ADD COLUMN IF NOT EXISTS web_authn_session_data jsonb;

-- `token_hash` is a SHA-256 (hex), never the code or link token itself.
CREATE TABLE IF NOT EXISTS auth.one_time_tokens (
  id uuid NOT NULL PRIMARY KEY,
  user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
  token_type auth.one_time_token_type NOT NULL,
  token_hash text NOT NULL CHECK (char_length(token_hash) > 0),
  relates_to text NOT NULL,
  created_at timestamp NOT NULL DEFAULT now(),
  updated_at timestamp NOT NULL DEFAULT now(),
  CONSTRAINT one_time_tokens_user_id_token_type_key UNIQUE (user_id, token_type)
);

CREATE TABLE IF NOT EXISTS auth.flow_state (
  id uuid NOT NULL PRIMARY KEY,
  user_id uuid,
  auth_code text NOT NULL,
  code_challenge_method auth.code_challenge_method NOT NULL,
  code_challenge text NOT NULL,
  provider_type text NOT NULL,
  provider_access_token text,
  provider_refresh_token text,
  created_at timestamptz,
  updated_at timestamptz,
  authentication_method text NOT NULL,
  auth_code_issued_at timestamptz
);
CREATE INDEX IF NOT EXISTS idx_auth_code ON auth.flow_state (auth_code);

CREATE TABLE IF NOT EXISTS auth.audit_log_entries (
  instance_id uuid,
  id uuid NOT NULL PRIMARY KEY,
  payload json,
  created_at timestamptz,
  ip_address varchar(64) NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_logs_instance_id_idx ON auth.audit_log_entries (instance_id);

-- Wrong passwords, one row each, for lockout (shared by every proxy):
-- counted per (identifier, client address) and per identifier within a
-- sliding window (sql/auth/session.sql, auth_password_lock_wait). The
-- identifier is the e-mail or phone as typed, whether or not a user has
-- it, so a lockout looks the same for unknown and known accounts. Rows
-- older than the window are swept as new failures arrive; not dumped.
CREATE TABLE fluxbase.auth_password_failures (
  identifier text NOT NULL,
  ip text NOT NULL,
  at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX auth_password_failures_identifier_at ON fluxbase.auth_password_failures (identifier, at);
CREATE INDEX auth_password_failures_at ON fluxbase.auth_password_failures (at);

-- Wrong e-mailed or texted codes per user and code type: the code is
-- deleted after a few, so six digits cannot be guessed by spreading tries
-- over many IP addresses.
CREATE TABLE fluxbase.auth_token_failures (
  user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
  token_type auth.one_time_token_type NOT NULL,
  failures int NOT NULL DEFAULT 0,
  PRIMARY KEY (user_id, token_type)
);

-- The last TOTP time step each factor accepted: a code is good once, not
-- for the whole window it is valid in.
CREATE TABLE fluxbase.auth_totp_steps (
  factor_id uuid PRIMARY KEY REFERENCES auth.mfa_factors (id) ON DELETE CASCADE,
  step bigint NOT NULL
);

-- Wrong TOTP codes per user, for the verification limit (shared by every proxy).
CREATE TABLE fluxbase.auth_mfa_failures (
  user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
  at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX auth_mfa_failures_user_at ON fluxbase.auth_mfa_failures (user_id, at);

-- Rate-limit counters (fixed windows), shared by every proxy. Not dumped:
-- they expire within minutes.
CREATE UNLOGGED TABLE fluxbase.auth_rate_limits (
  key text NOT NULL,
  window_start timestamptz NOT NULL,
  hits int NOT NULL,
  PRIMARY KEY (key, window_start)
);

-- Passkeys: WebAuthn credentials that sign a user in. `public_key` is the
-- COSE key the authenticator gave at registration; `sign_count` catches a
-- cloned authenticator.
CREATE TABLE IF NOT EXISTS auth.webauthn_credentials (
  id uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
  user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
  credential_id bytea NOT NULL UNIQUE,
  public_key bytea NOT NULL,
  sign_count bigint NOT NULL DEFAULT 0,
  aaguid uuid,
  friendly_name text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz
);
CREATE INDEX IF NOT EXISTS webauthn_credentials_user_id_idx ON auth.webauthn_credentials (user_id);

-- WebAuthn challenges handed out and not yet answered (taken once).
CREATE TABLE fluxbase.auth_webauthn_challenges (
  id uuid PRIMARY KEY,
  user_id uuid REFERENCES auth.users (id) ON DELETE CASCADE,
  kind text NOT NULL CHECK (kind IN ('registration', 'authentication')),
  challenge text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX auth_webauthn_challenges_created_at ON fluxbase.auth_webauthn_challenges (created_at);

-- OAuth sign-ins in progress, between /authorize and /callback: keyed by the
-- SHA-256 of the `state` parameter, taken once, valid for
-- auth.flow_state_expiry_seconds. `verifier` and `nonce` are what the proxy
-- sent the provider; `code_challenge` is the app's own PKCE challenge (no
-- challenge: implicit flow). `link_user`: linking an identity to that user.
CREATE TABLE fluxbase.auth_oauth_states (
  state_hash text PRIMARY KEY,
  provider text NOT NULL,
  redirect_to text NOT NULL,
  code_challenge text,
  code_challenge_method auth.code_challenge_method,
  nonce text NOT NULL,
  verifier text NOT NULL,
  link_user uuid REFERENCES auth.users (id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX auth_oauth_states_created_at ON fluxbase.auth_oauth_states (created_at);

-- Rows of tables created here are user data: keep them in pg_dump.
DO $dump$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['auth.users', 'auth.identities', 'auth.sessions', 'auth.refresh_tokens',
    'auth.mfa_amr_claims', 'auth.mfa_factors', 'auth.mfa_challenges', 'auth.one_time_tokens',
    'auth.flow_state', 'auth.audit_log_entries', 'auth.webauthn_credentials', 'fluxbase.auth_mfa_failures']
  LOOP
    IF EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = t::regclass AND d.deptype = 'e') THEN
      PERFORM pg_catalog.pg_extension_config_dump(t, '');
    END IF;
  END LOOP;
  IF EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = 'auth.refresh_tokens_id_seq'::regclass AND d.deptype = 'e') THEN
    PERFORM pg_catalog.pg_extension_config_dump('auth.refresh_tokens_id_seq', '');
  END IF;
END
$dump$;

-- Policies may read the users table as Supabase's do (`auth.users` is not
-- exposed over REST: the `auth` schema is not in the exposed schemas).
GRANT SELECT ON auth.users TO service_role;
