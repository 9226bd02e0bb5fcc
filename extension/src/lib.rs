//! Fluxbase extension: module list, SQL file order and the SQL entry points.
#![deny(rust_2018_idioms)]

use fluxbase_rest::request::HttpRequest;
use pgrx::prelude::*;

mod claims;
mod error;
mod gucs;
mod realtime;
mod rest;
mod schema_cache;

pgrx::pg_module_magic!();

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

extension_sql_file!("../../sql/bootstrap.sql", name = "bootstrap", bootstrap);
extension_sql_file!("../../sql/auth_claims.sql", name = "auth_claims", requires = ["bootstrap"]);
extension_sql_file!("../../sql/auth_schema.sql", name = "auth_schema", requires = ["bootstrap"]);
extension_sql_file!("../../sql/auth/helpers.sql", name = "auth_helpers", requires = ["auth_schema"]);
extension_sql_file!("../../sql/auth/session.sql", name = "auth_session", requires = ["auth_helpers"]);
extension_sql_file!("../../sql/auth/user.sql", name = "auth_user", requires = ["auth_helpers"]);
extension_sql_file!("../../sql/auth/otp.sql", name = "auth_otp", requires = ["auth_helpers"]);
extension_sql_file!("../../sql/auth/mfa.sql", name = "auth_mfa", requires = ["auth_helpers"]);
extension_sql_file!("../../sql/auth/admin.sql", name = "auth_admin", requires = ["auth_helpers"]);
extension_sql_file!("../../sql/auth/oauth.sql", name = "auth_oauth", requires = ["auth_helpers"]);
extension_sql_file!("../../sql/auth/passkey.sql", name = "auth_passkey", requires = ["auth_helpers"]);
extension_sql_file!("../../sql/auth/oauth_server.sql", name = "auth_oauth_server", requires = ["auth_session"]);
extension_sql_file!("../../sql/auth/web3.sql", name = "auth_web3", requires = ["auth_helpers"]);
extension_sql_file!(
    "../../sql/auth/grants.sql",
    name = "auth_grants",
    requires = [
        "auth_session",
        "auth_user",
        "auth_otp",
        "auth_mfa",
        "auth_admin",
        "auth_oauth",
        "auth_passkey",
        "auth_oauth_server",
        "auth_web3"
    ]
);
extension_sql_file!("../../sql/realtime.sql", name = "realtime", requires = ["auth_grants"]);
extension_sql_file!("../../sql/storage.sql", name = "storage", requires = ["auth_grants"]);
extension_sql_file!("../../sql/realtime_changes.sql", name = "realtime_changes", requires = ["realtime"]);
extension_sql_file!("../../sql/drop_guard.sql", name = "drop_guard", requires = ["auth_grants"]);
extension_sql_file!("../../sql/schema_triggers.sql", name = "schema_triggers", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    schema_cache::init();
}

/// Every backend's REST schema cache rebuilds before its next request (a
/// relcache "invalidate all", delivered when this transaction commits, and
/// to this backend at once). Called by the DDL event triggers and
/// `fluxbase.reload_schema()`; not granted to PUBLIC.
#[pg_extern(volatile)]
fn invalidate_schema_caches() {
    schema_cache::invalidate_everywhere();
}

/// The extension's version; the proxy refuses to report ready when it differs
/// from its own.
#[pg_extern(immutable, parallel_safe)]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Switches to the role named by the JWT claims and exposes the claims as
/// `request.jwt.claims`, both transaction-local. `auth.uid()` and friends read
/// them. The role must be one the session user may switch to.
#[pg_extern(volatile)]
fn authenticate(claims: pgrx::JsonB) {
    error::without_backtraces(|| {
        let text = claims.0.to_string();
        claims::authenticate(&claims_from(&text, "fluxbase.authenticate"), None);
    })
}

/// The REST engine: one HTTP request in, status, headers and body out.
/// `json`, not `jsonb`: the text is parsed once, by serde, and never built
/// into a jsonb value only to be printed again.
#[pg_extern(volatile)]
fn rest(
    request: pgrx::Json,
    claims: pgrx::Json,
) -> TableIterator<'static, (name!(status, i32), name!(headers, pgrx::Json), name!(body, String))> {
    error::without_backtraces(|| {
        let (request, claims) = (request.0.to_string(), claims.0.to_string());
        let response = rest::handle(&request_from(&request, "fluxbase.rest"), &claims_from(&claims, "fluxbase.rest"));
        TableIterator::once((response.status as i32, pgrx::Json(response.headers), response.body))
    })
}

/// The REST engine as the proxy calls it: `text` in (the proxy always sends
/// well-formed JSON, so Postgres need not validate it as `json` before serde
/// parses it), one `text` value out, `status \n headers-json \n body`, which
/// skips the row-returning machinery (`rest()` is the same engine for people
/// reading results in SQL).
///
/// A body longer than [`STREAM_ABOVE`] is not returned inline: the first line
/// becomes `status length`, the body stays in this backend, and the proxy
/// reads it with `SELECT fluxbase.rest_body()` on the same connection, a chunk
/// per row, while it writes the chunks to the client. So the proxy holds a few
/// chunks of a large response, never the whole of it.
#[pg_extern(volatile)]
// Never inlined into its wrapper: tests/bench/engine-instructions.sh
// measures it by this symbol.
#[inline(never)]
fn rest_raw(request: &str, claims: &str) -> String {
    // A body nobody collected (the client went away) is not kept for the
    // next request on this connection.
    PENDING_BODY.take();
    error::without_backtraces(|| {
        // The claims text is kept: request.jwt.claims gets it as sent.
        let response =
            rest::handle(&request_from(request, "fluxbase.rest_raw"), &claims_from(claims, "fluxbase.rest_raw"));
        let headers = response.headers.to_string();
        let streamed = response.body.len() > STREAM_ABOVE;
        let inline = if streamed { 0 } else { response.body.len() };
        let mut out = String::with_capacity(16 + headers.len() + inline);
        out.push_str(&response.status.to_string());
        if streamed {
            out.push(' ');
            out.push_str(&response.body.len().to_string());
        }
        out.push('\n');
        out.push_str(&headers);
        out.push('\n');
        if streamed {
            PENDING_BODY.set(response.body);
        } else {
            out.push_str(&response.body);
        }
        out
    })
}

/// Bodies above this size are streamed (`rest_raw`, `rest_body`).
const STREAM_ABOVE: usize = 1 << 20;
/// The size of one `rest_body()` row.
const BODY_CHUNK: usize = 256 << 10;

thread_local! {
    /// The body `rest_raw` left for `rest_body` to send.
    static PENDING_BODY: std::cell::Cell<String> = const { std::cell::Cell::new(String::new()) };
}

/// The body of this session's last `rest_raw` call that was too large to
/// return inline, in chunks of 256 KiB, and then forgotten. Called in the
/// select list (`SELECT fluxbase.rest_body()`), rows go to the client as they
/// are made; in `FROM` Postgres would collect them all first. Empty when
/// there is none.
#[pg_extern(volatile)]
fn rest_body() -> SetOfIterator<'static, Vec<u8>> {
    let body = PENDING_BODY.take().into_bytes();
    let chunks = body.len().div_ceil(BODY_CHUNK);
    SetOfIterator::new((0..chunks).map(move |i| body[i * BODY_CHUNK..body.len().min((i + 1) * BODY_CHUNK)].to_vec()))
}

fn request_from<'a>(text: &'a str, function: &str) -> HttpRequest<'a> {
    HttpRequest::from_json(text)
        .unwrap_or_else(|e| error::invalid_argument(format!("{function}: the request is not valid: {e}")))
}

fn claims_from<'a>(text: &'a str, function: &str) -> claims::Claims<'a> {
    claims::Claims::from_json(text)
        .unwrap_or_else(|e| error::invalid_argument(format!("{function}: the claims are not valid: {e}")))
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn version_matches_the_crate() {
        let v = Spi::get_one::<String>("SELECT fluxbase.version()").unwrap();
        assert_eq!(v.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    }

    #[pg_test]
    fn authenticate_sets_role_and_claims() {
        Spi::run(
            r#"SELECT fluxbase.authenticate('{"role":"authenticated","sub":"7f1e7a40-6a1c-4b8e-9a57-2f0c5b1f2c11"}')"#,
        )
        .unwrap();
        let uid = Spi::get_one::<String>("SELECT auth.uid()::text").unwrap();
        assert_eq!(uid.as_deref(), Some("7f1e7a40-6a1c-4b8e-9a57-2f0c5b1f2c11"));
        let role = Spi::get_one::<String>("SELECT current_user::text").unwrap();
        assert_eq!(role.as_deref(), Some("authenticated"));
        // The per-claim settings auth.uid() reads first agree with the claims.
        let sub = Spi::get_one::<String>("SELECT current_setting('request.jwt.claim.sub', true)").unwrap();
        assert_eq!(sub.as_deref(), Some("7f1e7a40-6a1c-4b8e-9a57-2f0c5b1f2c11"));
        let email =
            Spi::get_one::<String>("SELECT nullif(current_setting('request.jwt.claim.email', true), '')").unwrap();
        assert_eq!(email, None);
    }

    /// Runs `call` and passes when it fails with the condition named `condition`.
    fn fails_with(call: &str, condition: &str) {
        Spi::run(&format!(
            "DO $$ BEGIN PERFORM {call}; RAISE EXCEPTION 'no error'; EXCEPTION WHEN {condition} THEN NULL; END $$"
        ))
        .unwrap();
    }

    /// Hardening: a large body was returned whole, and the proxy held it
    /// whole again. Past 1 MiB it stays here and `rest_body()` hands it
    /// out in 256 KiB rows; small bodies are still inline.
    #[pg_test]
    fn large_bodies_are_left_for_rest_body() {
        Spi::run("CREATE TABLE public.fb_big (id int PRIMARY KEY, t text)").unwrap();
        Spi::run("INSERT INTO public.fb_big SELECT i, repeat('x', 3000) FROM generate_series(1, 1000) i").unwrap();
        let claims = r#"'{"role": "postgres"}'"#;
        let raw = |query: &str| {
            Spi::get_one::<String>(&format!(
                r#"SELECT fluxbase.rest_raw('{{"path": "fb_big", "query": "{query}"}}', {claims})"#
            ))
            .unwrap()
            .unwrap()
        };
        let small = raw("id=lt.10");
        assert!(small.starts_with("200\n"), "{}", &small[..20]);
        let chunks = || {
            Spi::connect(|client| {
                let rows = client.select("SELECT fluxbase.rest_body()", None, &[])?;
                rows.map(|row| row.get::<Vec<u8>>(1).map(Option::unwrap_or_default)).collect::<Result<Vec<_>, _>>()
            })
            .unwrap()
        };
        assert!(chunks().is_empty(), "an inline body leaves nothing behind");
        let large = raw("");
        let (status, rest) = large.split_once('\n').unwrap();
        let (_, inline) = rest.split_once('\n').unwrap();
        assert!(inline.is_empty());
        let length: usize = status.strip_prefix("200 ").expect("status and length").parse().unwrap();
        let whole =
            Spi::get_one::<String>(r#"SELECT body FROM fluxbase.rest('{"path": "fb_big"}', '{"role": "postgres"}')"#)
                .unwrap()
                .unwrap();
        let parts = chunks();
        assert_eq!(length, whole.len());
        assert_eq!(parts.len(), whole.len().div_ceil(256 << 10));
        assert!(parts.iter().all(|c| c.len() <= 256 << 10));
        assert_eq!(parts.concat(), whole.into_bytes());
        assert!(chunks().is_empty(), "handed out once");
        // A body nobody collected is dropped by the next request.
        raw("");
        raw("id=lt.10");
        assert!(chunks().is_empty());
    }

    #[pg_test]
    fn refusals_carry_their_sqlstate() {
        fails_with("fluxbase.rest_raw('[\"GET\", \"t\"]', '{}')", "invalid_parameter_value");
        fails_with("fluxbase.rest_raw('{\"path\": \"t\"}', '[\"anon\"]')", "invalid_parameter_value");
        Spi::run("CREATE TABLE public.fb_probe (id int PRIMARY KEY)").unwrap();
        // A role claim with a NUL cannot become a setting.
        fails_with(
            r#"fluxbase.rest_raw('{"path": "fb_probe"}', '{"role": "a\u0000b"}')"#,
            "character_not_in_repertoire",
        );
        // An error of the request's own statement keeps Postgres' SQLSTATE.
        fails_with(
            r#"fluxbase.rest_raw('{"path": "fb_probe", "query": "id=eq.abc"}', '{"role": "postgres"}')"#,
            "invalid_text_representation",
        );
    }

    /// Hardening: with RUST_BACKTRACE set in the server's environment, every
    /// engine error carried a Rust backtrace (27 frames) in its `detail`,
    /// which the proxy sends to the client. The variable is set here, in
    /// this test's own backend, before anything in it captured a backtrace.
    #[pg_test]
    fn errors_carry_no_backtrace_whatever_the_environment() {
        std::env::set_var("RUST_BACKTRACE", "1");
        std::env::set_var("RUST_LIB_BACKTRACE", "1");
        assert_eq!(
            std::backtrace::Backtrace::capture().status(),
            std::backtrace::BacktraceStatus::Captured,
            "this backend must capture backtraces, or the test could not see one leak"
        );
        Spi::run("CREATE TABLE public.fb_trace_probe (id int PRIMARY KEY)").unwrap();
        Spi::run(
            "CREATE FUNCTION pg_temp.error_of(call text) RETURNS text LANGUAGE plpgsql AS $$ \
             DECLARE m text; d text; h text; s text; \
             BEGIN EXECUTE call; RETURN 'no error'; \
             EXCEPTION WHEN OTHERS THEN GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, \
               d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT; \
             RETURN s || ' | ' || m || ' | ' || coalesce(d, '') || ' | ' || coalesce(h, ''); END $$",
        )
        .unwrap();
        let error_of = |call: &str| {
            Spi::get_one_with_args::<String>("SELECT pg_temp.error_of($1)", &[call.into()]).unwrap().unwrap()
        };
        // A Postgres error of the request's statement keeps its SQLSTATE and
        // message, and gains nothing.
        let bad_value = error_of(
            r#"SELECT fluxbase.rest_raw('{"path": "fb_trace_probe", "query": "id=eq.abc"}', '{"role": "postgres"}')"#,
        );
        assert!(bad_value.starts_with("22P02 | invalid input syntax for type integer"), "{bad_value}");
        // A refusal of the extension's own, and an error from authenticate.
        let refused = error_of(r#"SELECT fluxbase.rest_raw('{"path": "fb_trace_probe"}', '{"role": "a\u0000b"}')"#);
        assert!(refused.starts_with("22021 |"), "{refused}");
        let no_role = error_of(r#"SELECT fluxbase.authenticate('{"role": "fb_no_such_role"}')"#);
        assert!(no_role.starts_with("22023 | role \"fb_no_such_role\" does not exist"), "{no_role}");
        for text in [bad_value, refused, no_role] {
            assert!(!text.contains("backtrace") && !text.contains("  0: "), "a backtrace reached the caller: {text}");
        }
    }

    #[pg_test]
    fn ddl_bumps_the_schema_version() {
        let before = Spi::get_one::<i64>("SELECT fluxbase.schema_version()").unwrap();
        Spi::run("CREATE TABLE public.fb_version_probe (id int)").unwrap();
        let after = Spi::get_one::<i64>("SELECT fluxbase.schema_version()").unwrap();
        assert!(after > before, "{after:?} > {before:?}");
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
