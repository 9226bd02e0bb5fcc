//! Realtime's hot SQL entry point: a public broadcast from SQL
//! (`realtime.send(…, private => false)`, the HTTP API's public messages)
//! handed to the proxies as part of the caller's transaction. Written here
//! rather than in PL/pgSQL because writers call it inside their own
//! transactions: one C call, no security-definer `search_path` swap, no
//! JSON tree. The envelope is the one proxies exchange (`{t, e, p | b}`);
//! where `wal_level` is `logical` it is a transactional logical-decoding
//! message (decoded at commit, in commit order, no lock), else a `NOTIFY
//! fluxbase_realtime` (also at commit, in commit order; Postgres serialises
//! the commits of notifying transactions). Private messages take
//! `sql/realtime.sql`'s path: a row in `realtime.messages` under its INSERT
//! policies, delivered by its trigger.
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{c_char, CString};

/// The logical-message prefix and NOTIFY channel the proxies read.
const CHANNEL: &std::ffi::CStr = c"fluxbase_realtime";
/// `NOTIFY` refuses payloads of 8000 bytes or more.
const NOTIFY_MAX: usize = 7999;
/// `WAL_LEVEL_LOGICAL` of `WalLevel` (access/xlog.h, the same in 15–18).
const WAL_LEVEL_LOGICAL: i32 = 2;

unsafe extern "C-unwind" {
    // replication/message.h and commands/async.h, not in pgrx's bindings.
    #[cfg(any(feature = "pg15", feature = "pg16"))]
    fn LogLogicalMessage(prefix: *const c_char, message: *const c_char, size: usize, transactional: bool) -> u64;
    #[cfg(any(feature = "pg17", feature = "pg18"))]
    fn LogLogicalMessage(
        prefix: *const c_char,
        message: *const c_char,
        size: usize,
        transactional: bool,
        flush: bool,
    ) -> u64;
    fn Async_Notify(channel: *const c_char, payload: *const c_char);
    // utils/fmgrprotos.h: jsonb's output function, called directly.
    fn jsonb_out(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
}

/// `{"t":"realtime:<topic>","e":<event>,"p":<payload>}`, or `"b"` with the
/// bytes in base64. `payload` is JSON text already (jsonb's output).
fn envelope(topic: &str, event: &str, payload: Option<&str>, binary: Option<&[u8]>) -> String {
    use base64::Engine;
    let quoted = |s: &str| serde_json::to_string(s).expect("a string serialises");
    let mut out = String::with_capacity(32 + topic.len() + event.len() + payload.map_or(0, str::len));
    out.push_str("{\"t\":");
    out.push_str(&quoted(&["realtime:", topic].concat()));
    out.push_str(",\"e\":");
    out.push_str(&quoted(event));
    match binary {
        Some(bytes) => {
            out.push_str(",\"b\":\"");
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
            out.push('"');
        }
        None => {
            out.push_str(",\"p\":");
            out.push_str(payload.unwrap_or("{}"));
        }
    }
    out.push('}');
    out
}

/// Whether messages go by logical decoding: `wal_level = logical`, unless
/// `fluxbase.realtime_transport` says `notify`.
fn logical() -> bool {
    // SAFETY: reads a GUC variable and a setting by name; the result is NULL
    // or a C string owned by the GUC machinery, read at once.
    unsafe {
        if pg_sys::wal_level < WAL_LEVEL_LOGICAL {
            return false;
        }
        let transport = pg_sys::GetConfigOption(c"fluxbase.realtime_transport".as_ptr(), true, false);
        transport.is_null() || std::ffi::CStr::from_ptr(transport).to_bytes() != b"notify"
    }
}

/// A public broadcast to `realtime:<topic>`, delivered to every proxy's
/// sockets when the calling transaction commits.
#[pg_extern(volatile, parallel_unsafe)]
fn realtime_publish(topic: &str, event: &str, payload: Option<&str>, binary: Option<&[u8]>) {
    publish(topic, event, payload, binary);
}

fn publish(topic: &str, event: &str, payload: Option<&str>, binary: Option<&[u8]>) {
    let message = envelope(topic, event, payload, binary);
    if logical() {
        // SAFETY: valid pointers for the call; an ERROR is caught at the boundary.
        unsafe {
            pg_sys::ffi::pg_guard_ffi_boundary(|| {
                #[cfg(any(feature = "pg15", feature = "pg16"))]
                LogLogicalMessage(CHANNEL.as_ptr(), message.as_ptr().cast(), message.len(), true);
                #[cfg(any(feature = "pg17", feature = "pg18"))]
                LogLogicalMessage(CHANNEL.as_ptr(), message.as_ptr().cast(), message.len(), true, false);
            })
        };
    } else if message.len() <= NOTIFY_MAX {
        let payload = CString::new(message).expect("JSON text has no NUL byte");
        // SAFETY: valid C strings; an ERROR is caught at the boundary.
        unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| Async_Notify(CHANNEL.as_ptr(), payload.as_ptr())) };
    } else {
        // Too large for NOTIFY: stored, and sent by id (sql/realtime.sql).
        Spi::run_with_args(
            "SELECT fluxbase.realtime_deliver($1, $2, $3::jsonb, $4, false, NULL, NULL)",
            &[topic.into(), event.into(), payload.into(), binary.into()],
        )
        .unwrap_or_else(|e| crate::error::spi_failed("storing a large realtime message failed", e));
    }
}

/// `realtime.send(payload jsonb, event text, topic text, private boolean
/// DEFAULT true)` itself (sql/realtime.sql), a version-1 C function rather
/// than PL/pgSQL: a row trigger that broadcasts its rows calls it once a row,
/// and the PL/pgSQL layer and its `PERFORM` of `realtime_publish` (an
/// executor run) cost more than the message (docs/benchmarks.md, Realtime).
/// A public message with a topic and an event goes out here; anything else
/// (private, or a NULL argument) takes `fluxbase.realtime_send_stored`, the
/// PL/pgSQL body that stores the row under its policies, as before.
#[unsafe(no_mangle)]
#[doc(hidden)]
pub extern "C" fn pg_finfo_realtime_send_fast() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

#[unsafe(no_mangle)]
#[doc(hidden)]
#[pg_guard]
pub unsafe extern "C-unwind" fn realtime_send_fast(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: Postgres calls this with four arguments (the SQL signature);
    // each non-NULL one is a datum of its declared type, read in this call.
    unsafe {
        let args = (*fcinfo).args.as_slice(4);
        let public = !args[3].isnull && args[3].value.value() == 0;
        if public && !args[1].isnull && !args[2].isnull {
            let text = |d: pg_sys::Datum| std::ffi::CStr::from_ptr(pg_sys::text_to_cstring(d.cast_mut_ptr()));
            let payload = (!args[0].isnull).then(|| {
                std::ffi::CStr::from_ptr(
                    pg_sys::DirectFunctionCall1Coll(Some(jsonb_out), pg_sys::InvalidOid, args[0].value).cast_mut_ptr(),
                )
            });
            let (event, topic) = (text(args[1].value), text(args[2].value));
            // Postgres' text is valid in the server encoding (UTF-8 here, as
            // the JSON envelope needs); a lossy read keeps any other safe.
            publish(
                &topic.to_string_lossy(),
                &event.to_string_lossy(),
                payload.map(|p| p.to_string_lossy()).as_deref(),
                None,
            );
        } else {
            let mut types = [pg_sys::JSONBOID, pg_sys::TEXTOID, pg_sys::TEXTOID, pg_sys::BOOLOID];
            let mut values = [args[0].value, args[1].value, args[2].value, args[3].value];
            let nulls = args.iter().map(|a| if a.isnull { b'n' as c_char } else { b' ' as c_char }).collect::<Vec<_>>();
            pg_sys::SPI_connect();
            let rc = pg_sys::SPI_execute_with_args(
                c"SELECT fluxbase.realtime_send_stored($1, $2, $3, $4)".as_ptr(),
                4,
                types.as_mut_ptr(),
                values.as_mut_ptr(),
                nulls.as_ptr(),
                false,
                0,
            );
            if rc < 0 {
                error!("realtime.send: storing the message failed ({rc})");
            }
            pg_sys::SPI_finish();
        }
        pg_sys::Datum::from(0)
    }
}

#[cfg(test)]
mod tests {
    use super::envelope;

    #[test]
    fn the_envelope_is_what_proxies_read() {
        let e: serde_json::Value =
            serde_json::from_str(&envelope("room \"1\"", "ev", Some(r#"{"a": [1]}"#), None)).unwrap();
        assert_eq!(e, serde_json::json!({"t": "realtime:room \"1\"", "e": "ev", "p": {"a": [1]}}));
        let e: serde_json::Value = serde_json::from_str(&envelope("r", "ev", None, Some(&[0xab; 100]))).unwrap();
        assert_eq!(e["b"].as_str().unwrap().len(), 136, "base64 without line breaks");
        assert!(e.get("p").is_none());
    }
}
