//! The `btfs` command as a library: the command line ([`cli`]), the commands, their
//! output, and the daemon's HTTP API. The binary (`main.rs`) only dispatches; the library
//! exists so that the fuzz targets under `fuzz/` reach the API's query mapping and the
//! jobs file parser. Nothing here is a stable interface for other crates.

pub mod api;
pub mod cli;
pub mod commands;
pub mod output;
