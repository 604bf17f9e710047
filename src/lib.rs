//! pillion: a certificate-rotation sidecar for Kubernetes pods.
//!
//! The data path, top to bottom: [`config`] (what to do) -> [`keys`] (key and
//! CSR) -> [`issuers`] (obtain) -> [`verify`] (check what came back) ->
//! [`output`] (publish atomically) -> [`reload`] (tell the app) ->
//! [`schedule`] (when to do it again). [`agent`] runs that loop; [`cli`],
//! [`signals`], [`server`] and [`status`] face the user.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod cli;
pub mod config;
pub mod credential;
pub mod delivery;
#[doc(hidden)]
pub mod fuzzing;
pub mod inject;
pub mod issuers;
pub mod keys;
pub mod names;
pub mod output;
pub mod pem;
pub mod preflight;
pub mod reload;
pub mod schedule;
pub mod secrets;
pub mod server;
pub mod signals;
pub mod sinks;
pub mod small_file;
pub mod sources;
pub mod status;
pub mod telemetry;
pub mod template;
pub mod vault;
pub mod verify;
