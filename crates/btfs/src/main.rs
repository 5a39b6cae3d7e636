//! The `btfs` command: parses the command line, runs one command, and renders its typed
//! result as text or JSON. Errors go to stderr with a non-zero exit code.

use btfs::{api, cli, commands, output};
use clap::{CommandFactory, FromArgMatches};
use std::process::ExitCode;

fn main() -> ExitCode {
    // `config --json` parses the value as JSON (kubo's flag); `btfs --json config` asks
    // for JSON output, as before any other command.
    let (args, json_before_config) =
        cli::take_root_json_before_config(std::env::args_os().collect());
    let matches = cli::Cli::command().get_matches_from(args);
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let enc = match cli.command {
        cli::Command::Config(_) if json_before_config => output::Encoding::Json,
        cli::Command::Config(_) => cli.enc,
        _ => cli.encoding(),
    };
    // Who holds the repo is recorded by command name only: arguments may hold secrets.
    let mut label = String::from("btfs");
    let mut m = &matches;
    while let Some((name, sub)) = m.subcommand() {
        label.push(' ');
        label.push_str(name);
        m = sub;
    }
    store::repo::set_owner_label(&label);
    // With a daemon running for the repo, the commands that use the repo go through it.
    if api::client::goes_through_daemon(&cli.command) {
        if let Some(daemon) = commands::btfs_path()
            .ok()
            .and_then(|p| api::client::find(&p))
        {
            return match api::client::run(daemon, &matches, &cli, enc) {
                Ok(code) => ExitCode::from(code),
                Err(e) => output::report_error(&e, enc),
            };
        }
    }
    match commands::run(cli.command, enc) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => output::report_error(&e, enc),
    }
}
