//! Fluxbase's REST engine, every stage that needs no database: parse the
//! HTTP request (`request`, with `filter`, `prefer` and `csv`), resolve it
//! against the catalog model (`catalog`) into a typed plan (`plan`), write
//! the plan's SQL and parameters (`sql`, `keyset`) and shape the HTTP
//! response from what the statement gave (`response`, `openapi`). Running
//! the SQL is the extension's part (`extension/src/rest/execute.rs`).
//!
//! Filter parsing (`filter`) is public: realtime's filters use the same
//! grammar.
#![deny(rust_2018_idioms)]

pub mod borrowed;
pub mod catalog;
pub mod csv;
pub mod error;
pub mod filter;
pub mod hash;
pub mod keyset;
pub mod openapi;
pub mod plan;
pub mod prefer;
pub mod request;
pub mod response;
pub mod sql;
