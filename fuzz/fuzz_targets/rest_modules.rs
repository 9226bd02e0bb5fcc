//! The pure stages of the REST engine, compiled from the extension's sources.
#[path = "../../extension/src/rest/csv.rs"]
pub mod csv;
#[path = "../../extension/src/rest/prefer.rs"]
pub mod prefer;
#[path = "../../extension/src/rest/request.rs"]
pub mod request;
