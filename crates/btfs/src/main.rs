//! The `btfs` command: parses the command line, runs one command, and renders its typed
//! result as text or JSON. Errors go to stderr with a non-zero exit code.

mod cli;
mod commands;
mod output;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let enc = cli.encoding();
    match commands::run(cli.command, enc) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => output::report_error(&e, enc),
    }
}
