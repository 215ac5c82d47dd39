//! kvwatch-api: the HTTP face of kvwatch. [`auth`] holds API keys (hashed, with roles);
//! [`server`] is the axum router (health, Prometheus metrics, authentication) and
//! [`handlers`] the `/api/v1` endpoints with their OpenAPI description; [`sql`] runs analyst
//! SQL under guards; [`forward`] pushes alerts to SIEMs from durable cursors.

pub mod auth;
pub mod forward;
pub mod handlers;
pub mod report;
pub mod server;
pub mod sql;

pub use auth::{KeyStore, Role};
pub use server::{ApiState, router, serve};
