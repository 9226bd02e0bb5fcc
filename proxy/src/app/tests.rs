//! The proxy in-process: routing, the envelope, authentication refusals and
//! error bodies, through `App::handle` without a socket. The database URL
//! points at a closed port, so anything that reaches Postgres answers 503.
use super::*;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn app() -> App {
    let env = [
        ("FLUXBASE_DATABASE_URL", "postgres://authenticator@127.0.0.1:1/fluxbase"),
        ("FLUXBASE_DATABASE_CONNECT_TIMEOUT_MS", "500"),
        ("FLUXBASE_JWT_SECRET", SECRET),
        ("FLUXBASE_SERVER_BODY_LIMIT_BYTES", "1024"),
    ];
    let config = Config::load(None, env.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
    App::new(config).unwrap()
}

fn request(method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::copy_from_slice(body))).unwrap()
}

async fn send(app: &App, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Value) {
    let response = app.handle(req, "127.0.0.1:40000".parse().unwrap()).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (parts.status, parts.headers, json)
}

fn token(claims: Value) -> String {
    crate::auth::signing::sign_hs256(SECRET, &claims).unwrap()
}

#[tokio::test]
async fn health_and_the_envelope() {
    let app = app();
    let (status, headers, body) =
        send(&app, request("GET", "/health", &[("x-request-id", "test-id-1"), ("origin", "https://a.example")], b""))
            .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(headers["x-request-id"], "test-id-1");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn unknown_and_unbuilt_routes() {
    let app = app();
    let (status, headers, body) = send(&app, request("GET", "/nope", &[], b"")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "FB001");
    assert_eq!(body["request_id"], headers["x-request-id"].to_str().unwrap());
    let (status, _, body) = send(&app, request("GET", "/rest/v10/x", &[], b"")).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("FB001")));
    let (status, _, body) = send(&app, request("GET", "/functions/v1/hello", &[], b"")).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_IMPLEMENTED, Some("FB002")));
}

/// Storage answers in storage-api's shape (HTTP 400, the real status in
/// `statusCode`), and refuses names that could leave the bucket before it
/// touches the database or the disk.
#[tokio::test]
async fn storage_refuses_bad_names_in_its_own_shape() {
    let app = app();
    for path in [
        "/storage/v1/object/avatars/a/..%2F..%2Fescape",
        "/storage/v1/object/avatars/a%00b",
        "/storage/v1/object/..%2Fx/y",
    ] {
        let (status, _, body) = send(&app, request("POST", path, &[], b"bytes")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["statusCode"], "400", "{body}");
        assert!(["InvalidKey", "InvalidBucketName"].contains(&body["code"].as_str().unwrap()), "{body}");
        assert!(body["message"].is_string() && body["error"].is_string(), "{body}");
    }
    let (status, _, body) =
        send(&app, request("GET", "/storage/v1/object/sign/avatars/a.png?token=forged", &[], b"")).await;
    assert_eq!(
        (status, body["code"].as_str(), body["statusCode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("InvalidSignature"), Some("400"))
    );
    let (status, _, body) = send(&app, request("GET", "/storage/v1/nothing-here", &[], b"")).await;
    assert_eq!((status, body["statusCode"].as_str()), (StatusCode::NOT_FOUND, Some("404")), "{body}");
}

const UPGRADE: [(&str, &str); 4] = [
    ("upgrade", "websocket"),
    ("connection", "Upgrade"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

#[tokio::test]
async fn realtime_upgrades_with_a_valid_key_only() {
    let app = app();
    let anon = token(serde_json::json!({ "role": "anon" }));
    let uri = format!("/realtime/v1/websocket?apikey={anon}&vsn=2.0.0");
    let response = app.handle(request("GET", &uri, &UPGRADE, b""), "127.0.0.1:40000".parse().unwrap()).await;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    // A key that does not verify is refused before the upgrade.
    let (status, _, body) = send(&app, request("GET", "/realtime/v1/websocket?apikey=not.a.jwt", &UPGRADE, b"")).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("PGRST301")));
    let (status, _, body) =
        send(&app, request("GET", "/realtime/v1/websocket?apikey=sb_publishable_unknown", &UPGRADE, b"")).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("FB010")));
}

#[tokio::test]
async fn realtime_refuses_what_is_not_a_websocket() {
    let app = app();
    let (status, _, body) = send(&app, request("GET", "/realtime/v1/websocket", &[], b"")).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("FB004")));
    let (status, _, body) = send(&app, request("GET", "/realtime/v1/websocket?vsn=3.0.0", &UPGRADE, b"")).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("FB004")));
    assert!(body["message"].as_str().unwrap().contains("vsn"));
    let (status, _, _) = send(&app, request("GET", "/realtime/v1/nope", &UPGRADE, b"")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cors_preflight_needs_no_credentials() {
    let (status, headers, _) =
        send(&app(), request("OPTIONS", "/rest/v1/todos", &[("origin", "https://a.example")], b"")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(headers["access-control-allow-headers"].to_str().unwrap().contains("apikey"));
}

#[tokio::test]
async fn bad_tokens_are_refused_once_for_every_service_in_its_shape() {
    let app = app();
    let bad = [("authorization", "Bearer not.a.jwt")];
    let (status, headers, body) = send(&app, request("GET", "/rest/v1/todos", &bad, b"")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "PGRST301");
    assert!(body.get("details").is_some() && body.get("hint").is_some(), "PostgREST's four fields: {body}");
    assert!(headers["www-authenticate"].to_str().unwrap().starts_with("Bearer error=\"invalid_token\""));
    // /auth/v1 answers as GoTrue's parseJWTClaims: 403 bad_jwt.
    let (status, _, body) = send(&app, request("GET", "/auth/v1/user", &bad, b"")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!((body["code"].as_u64(), body["error_code"].as_str()), (Some(403), Some("bad_jwt")));
    assert_eq!(
        body["msg"],
        "invalid JWT: unable to parse or verify signature, token is malformed: could not JSON decode header"
    );
    // An unknown opaque key is refused before any body is read.
    let (status, _, body) =
        send(&app, request("POST", "/rest/v1/todos", &[("apikey", "sb_publishable_unknown")], &[b'x'; 4096])).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("FB010")));
}

#[tokio::test]
async fn credentials_that_are_not_text_are_refused_not_ignored() {
    let app = app();
    for (name, code) in [("authorization", "PGRST301"), ("apikey", "FB010")] {
        let mut req = request("GET", "/rest/v1/todos", &[], b"");
        req.headers_mut().insert(name, HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap());
        let (status, _, body) = send(&app, req).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some(code)), "{name}");
    }
}

#[tokio::test]
async fn request_errors_are_not_database_errors() {
    let app = app();
    let (status, _, body) = send(&app, request("POST", "/rest/v1/todos", &[], &[0xff, 0xfe])).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("PGRST102")));
    let (status, _, body) = send(&app, request("POST", "/rest/v1/todos", &[], &[b'x'; 2048])).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("FB003")));
    // Postgres is unreachable: the request reached the database layer.
    let (status, _, body) = send(&app, request("GET", "/rest/v1/todos", &[], b"")).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("PGRST001")));
    assert_eq!(body["message"], "Database client error. Retrying the connection.");
}

#[tokio::test]
async fn auth_routes_answer_in_gotrue_shape() {
    let app = app();
    let (status, _, body) = send(&app, request("GET", "/auth/v1/health", &[], b"")).await;
    assert_eq!((status, body["name"].as_str()), (StatusCode::OK, Some("Fluxbase Auth")));
    let (status, _, body) = send(&app, request("GET", "/auth/v1/settings", &[], b"")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["external"]["email"], true);
    let (status, _, body) = send(&app, request("GET", "/auth/v1/admin/users", &[], b"")).await;
    assert_eq!((status, body["error_code"].as_str()), (StatusCode::FORBIDDEN, Some("not_admin")));
    let (status, _, body) = send(&app, request("POST", "/auth/v1/token", &[], b"{}")).await;
    assert_eq!((status, body["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("validation_failed")));
    let (status, _, body) = send(&app, request("POST", "/auth/v1/signup", &[], b"[1,2")).await;
    assert_eq!((status, body["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_json")));
    let (status, _, body) = send(&app, request("GET", "/auth/v1/token", &[], b"")).await;
    assert_eq!((status, body["error_code"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")));
    let (status, _, body) = send(&app, request("GET", "/auth/v1/nothing-here", &[], b"")).await;
    assert_eq!((status, body["error_code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    // A signed-in route without a user token.
    let (status, _, body) = send(&app, request("GET", "/auth/v1/user", &[], b"")).await;
    assert_eq!((status, body["error_code"].as_str()), (StatusCode::UNAUTHORIZED, Some("no_authorization")));
    // A service-role token passes the admin check and then needs the database.
    let service = format!("Bearer {}", token(serde_json::json!({ "role": "service_role" })));
    let (status, _, body) =
        send(&app, request("GET", "/auth/v1/admin/users/not-a-uuid", &[("authorization", &service)], b"")).await;
    assert_eq!((status, body["error_code"].as_str()), (StatusCode::NOT_FOUND, Some("user_not_found")));
}

#[test]
fn routes_match_whole_segments() {
    assert_eq!(route_of("/rest/v1/todos"), Route::Rest);
    assert_eq!(route_of("/rest/v1"), Route::Rest);
    assert_eq!(route_of("/rest/v10"), Route::NotFound);
    assert_eq!(route_of("/auth/v1/token"), Route::Auth);
    assert_eq!(route_of("/mcp"), Route::Unbuilt("mcp"));
    assert_eq!(route_of("/nope"), Route::NotFound);
    assert_eq!(route_of("/health"), Route::Health);
}

#[test]
fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
    let lb: IpAddr = "10.0.0.2".parse().unwrap();
    let mut h = HeaderMap::new();
    h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6, 203.0.113.7, 10.0.0.3"));
    let trusted = ["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()];
    assert_eq!(client_ip(&trusted, lb, &h).to_string(), "203.0.113.7");
    assert_eq!(client_ip(&[], lb, &h), lb, "untrusted peer: the header is ignored");
    assert_eq!(client_ip(&trusted, lb, &HeaderMap::new()), lb);
}

#[test]
fn request_ids_are_taken_only_when_sane() {
    let mut h = HeaderMap::new();
    h.insert("x-request-id", HeaderValue::from_static("abc-123"));
    assert_eq!(request_id(&h), "abc-123");
    h.insert("x-request-id", HeaderValue::from_static("has space"));
    assert_ne!(request_id(&h), "has space");
}

/// The floor plan of docs/architecture.md, checked: plumbing imports no
/// room and no composition module; a room imports no other room.
#[test]
fn imports_follow_the_floor_plan() {
    const PLUMBING: [&str; 8] = ["http", "state", "db", "jwt", "error", "config", "metrics", "listener"];
    const ROOMS: [&str; 3] = ["rest", "auth", "realtime"];
    const COMPOSITION: [&str; 4] = ["app", "server", "cli", "main"];
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = |module: &str| -> Vec<(String, String)> {
        let single = src.join(format!("{module}.rs"));
        let dir = src.join(module);
        let mut paths = vec![];
        if single.exists() {
            paths.push(single);
        }
        if dir.is_dir() {
            paths.extend(std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()));
        }
        paths.into_iter().map(|p| (p.display().to_string(), std::fs::read_to_string(&p).unwrap())).collect()
    };
    let uses = |text: &str, module: &str| {
        text.contains(&format!("crate::{module}::"))
            || text.contains(&format!("crate::{module};"))
            || text.contains(&format!("crate::{{{module}"))
            || text.contains(&format!(", {module}}}"))
    };
    for module in PLUMBING {
        for (path, text) in files(module) {
            for other in ROOMS.iter().chain(COMPOSITION.iter()) {
                assert!(!uses(&text, other), "{path} (plumbing) imports {other}");
            }
        }
    }
    for room in ROOMS {
        for (path, text) in files(room) {
            for other in ROOMS.iter().chain(COMPOSITION.iter()).filter(|o| **o != room) {
                assert!(!uses(&text, other), "{path} (room {room}) imports {other}");
            }
        }
    }
}
