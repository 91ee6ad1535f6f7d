//! An HTTP gateway over debitcore: every engine operation as JSON over
//! HTTP, on axum and tokio, the way `README.md` of debitcore recommends an
//! async server embed it (`Engine::submit_async`, a future that needs no
//! particular runtime).
//!
//! The binary (`src/main.rs`) parses arguments, opens the engine, binds,
//! prints the address and calls [`serve`]; everything it serves is here.
//! `README.md` beside this crate has the routes, the status table, the
//! headers and the metrics.
#![forbid(unsafe_code)]

pub mod line;
pub mod server;
pub mod status;
pub mod telemetry;

pub use server::{router, serve, AppState, Backend, BODY_BYTES_MAX};
