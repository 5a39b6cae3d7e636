//! The daemon's HTTP API, its jobs, and the command line's client of it.
//!
//! - [`mapping`]: the clap tree ↔ `/api/v1/<path>?arg=…&<option>=…`, both ways;
//! - [`server`]: the API listener (access checks, commands run as child processes,
//!   uploads, the dashboard);
//! - [`jobs`]: downloads run by the daemon, kept across restarts;
//! - [`delete`]: deleting a removed job's files from a user's folder;
//! - [`client`]: commands of the command line sent to a running daemon.

pub mod client;
pub mod delete;
pub mod jobs;
pub mod mapping;
pub mod server;
