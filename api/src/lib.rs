//! kvwatch-api: the HTTP face of kvwatch. [`auth`] holds API keys (hashed, with roles);
//! [`state`] is what every request shares; [`server`] is the axum router (probes,
//! authentication) and [`handlers`] the `/api/v1` endpoints with their OpenAPI description,
//! one module per resource; [`error`] the one error answer and request IDs; [`listen`] accepts connections under limits; [`health`]
//! watches the disk; [`sql`] runs analyst SQL under guards in worker processes; [`forward`]
//! pushes alerts to SIEMs from durable cursors.

pub mod auth;
pub mod console;
pub mod error;
pub mod forward;
pub mod handlers;
pub mod health;
pub mod leader;
pub mod listen;
mod metrics;
pub mod report;
pub mod server;
pub mod service;
pub mod session;
pub mod sql;
pub mod state;

pub use auth::{KeyStore, Role};
pub use listen::{ConnLimits, serve};
pub use server::router;
pub use state::{ApiState, Caller, Shared};
