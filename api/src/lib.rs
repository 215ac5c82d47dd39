//! kvwatch-api: the HTTP face of kvwatch. [`auth`] holds API keys (hashed, with roles);
//! [`server`] is the axum router: health, Prometheus metrics and the `/api/v1` alert endpoints,
//! every call authenticated and logged with the caller's key name.

pub mod auth;
pub mod server;

pub use auth::{KeyStore, Role};
pub use server::{ApiState, router, serve};
