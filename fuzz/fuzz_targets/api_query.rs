//! The daemon's API request mapping: `/api/v1/<path>?<query>` → the argument vector of
//! the same command (checked by the command line's own parser), and the `Host` check.
//! Never panics; a request that maps and parses runs exactly the command its path names
//! (no query can change the command), every value the command gets came from the query
//! (no value turns into an option; an option with a delimiter splits its own value), and
//! the parsed command maps back to the same path.
//!
//! Input: text; the first line is a `Host` header, the rest `path?query`.

#![no_main]

use btfs::api::{mapping, server};
use btfs::cli::Cli;
use clap::{ArgAction, CommandFactory};
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::sync::OnceLock;

fn root() -> &'static clap::Command {
    static ROOT: OnceLock<clap::Command> = OnceLock::new();
    ROOT.get_or_init(Cli::command)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (host, request) = text.split_once('\n').unwrap_or(("", &text));
    if server::host_allowed(host, 5001) {
        let name = host.rsplit_once(':').map_or(host, |(n, _)| n);
        let name = name.trim_start_matches('[').trim_end_matches(']');
        assert!(
            name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok(),
            "{host:?} allowed"
        );
    }
    let (path, query) = request.split_once('?').unwrap_or((request, ""));
    // As the server splits the path: names of ASCII letters, digits, '-' and '_'.
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| {
        !s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }) {
        return;
    }
    let Ok(pairs) = mapping::parse_query(query) else {
        return;
    };
    let Ok(argv) = mapping::argv_from_query(root(), &segments, &pairs) else {
        return;
    };
    let full = std::iter::once("btfs".to_string()).chain(argv.iter().cloned());
    let Ok(matches) = root().clone().try_get_matches_from(full) else {
        return;
    };
    let (back, _) = mapping::query_from_matches(root(), &matches);
    assert_eq!(back, segments, "{argv:?}");
    // Every value the command was given is one of the query's values.
    let values: HashSet<&str> = pairs.iter().map(|(_, v)| v.as_str()).collect();
    let mut m = &matches;
    let mut cmd = root();
    while let Some((name, sub)) = m.subcommand() {
        cmd = cmd.find_subcommand(name).expect("matched subcommand");
        m = sub;
    }
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if !matches!(arg.get_action(), ArgAction::Set | ArgAction::Append)
            || m.value_source(id) != Some(clap::parser::ValueSource::CommandLine)
        {
            continue;
        }
        // An option with a delimiter (`--only-files=0,2`) splits its value.
        let parts: HashSet<&str> = match arg.get_value_delimiter() {
            Some(d) => values.iter().flat_map(|v| v.split(d)).collect(),
            None => values.clone(),
        };
        for v in m.get_raw(id).into_iter().flatten() {
            let v = v.to_string_lossy();
            assert!(parts.contains(v.as_ref()), "{id} = {v:?} from {argv:?}");
        }
    }
});
