//! The one translation between the command line and the HTTP API, in both directions,
//! driven by the clap tree of [`crate::cli::Cli`]: `/api/v1/<path>?arg=…&<long>=…` becomes
//! the argument vector of the same command (checked by the same parser), and a parsed
//! command line becomes that URL. No command is described twice.
//!
//! Query keys are long option names (`only-files`, `peer`) or single-letter short names;
//! `arg` gives positional values in order; flags take `true`/`false` (or no value).

use clap::{parser::ValueSource, ArgAction, ArgMatches, Command};

/// Keys of the query string that belong to the API, not to a command.
pub const API_KEYS: &[&str] = &["enc", "channels", "token"];

/// Options of the command line that are not sent to the daemon.
const GLOBAL_IDS: &[&str] = &["enc", "json", "help", "version"];

/// A global option of the command line (`--enc`, `--json`), as opposed to a command's
/// own option of the same name (`config --json`).
fn is_global(a: &clap::Arg) -> bool {
    GLOBAL_IDS.contains(&a.get_id().as_str()) && (a.is_global_set() || a.get_id() != "json")
}

#[derive(Debug, PartialEq, Eq)]
pub struct MappingError(pub String);

impl std::fmt::Display for MappingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The command a path of names leads to (`["bittorrent", "download"]`); `None` when a
/// name is unknown. A command with subcommands is returned as is.
pub fn find<'a>(root: &'a Command, path: &[&str]) -> Option<&'a Command> {
    let mut cmd = root;
    for name in path {
        cmd = cmd.get_subcommands().find(|c| c.get_name() == *name)?;
    }
    Some(cmd)
}

/// The argument vector (after the program name) of the command at `path`, from the
/// query pairs of an API request; `--enc` is added by the caller.
pub fn argv_from_query(
    root: &Command,
    path: &[&str],
    query: &[(String, String)],
) -> Result<Vec<String>, MappingError> {
    let cmd = find(root, path)
        .ok_or_else(|| MappingError(format!("unknown command {:?}", path.join(" "))))?;
    // A command with subcommands runs itself only when it takes positionals too
    // (`config KEY VALUE` beside `config show`).
    if cmd.has_subcommands() && !cmd.get_arguments().any(|a| a.is_positional()) {
        let subs: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
        return Err(MappingError(format!(
            "{:?} needs a subcommand: {}",
            path.join(" "),
            subs.join(", ")
        )));
    }
    let mut argv: Vec<String> = path.iter().map(|s| s.to_string()).collect();
    let mut positionals = Vec::new();
    for (key, value) in query {
        if API_KEYS.contains(&key.as_str()) {
            continue;
        }
        if key == "arg" {
            positionals.push(value.clone());
            continue;
        }
        let arg = cmd
            .get_arguments()
            .find(|a| {
                !a.is_positional()
                    && !is_global(a)
                    && (a.get_long() == Some(key.as_str())
                        || (key.chars().count() == 1 && a.get_short() == key.chars().next()))
            })
            .ok_or_else(|| {
                MappingError(format!(
                    "{}: unknown option {key:?} (see POST /api/v1/commands)",
                    path.join(" ")
                ))
            })?;
        let long = arg.get_long().unwrap_or(key);
        match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count => match value.as_str() {
                "" | "true" | "1" => argv.push(format!("--{long}")),
                "false" | "0" => {}
                v => {
                    return Err(MappingError(format!(
                        "{long}: a flag takes true or false, not {v:?}"
                    )))
                }
            },
            _ => argv.push(format!("--{long}={value}")),
        }
    }
    if !positionals.is_empty() {
        argv.push("--".into());
        argv.extend(positionals);
    }
    Ok(argv)
}

/// The API path and query pairs of a parsed command line: every argument the user gave
/// (defaults are left to the daemon's parser). `matches` are the root's matches.
pub fn query_from_matches(
    root: &Command,
    matches: &ArgMatches,
) -> (Vec<String>, Vec<(String, String)>) {
    let mut path = Vec::new();
    let mut cmd = root;
    let mut m = matches;
    while let Some((name, sub)) = m.subcommand() {
        path.push(name.to_string());
        cmd = cmd
            .get_subcommands()
            .find(|c| c.get_name() == name)
            .expect("the matches come from this tree");
        m = sub;
    }
    let mut query = Vec::new();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if is_global(arg) || m.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        let key = if arg.is_positional() {
            "arg".to_string()
        } else {
            match arg.get_long() {
                Some(l) => l.to_string(),
                None => arg
                    .get_short()
                    .map(String::from)
                    .unwrap_or_else(|| id.to_string()),
            }
        };
        match arg.get_action() {
            ArgAction::SetTrue => query.push((key, "true".into())),
            ArgAction::SetFalse => query.push((key, "false".into())),
            _ => {
                if let Some(values) = m.get_raw(id) {
                    for v in values {
                        query.push((key.clone(), v.to_string_lossy().into_owned()));
                    }
                }
            }
        }
    }
    (path, query)
}

/// Parses `a=1&b=two%20words` (with `+` as a space) into pairs, in order.
pub fn parse_query(q: &str) -> Result<Vec<(String, String)>, MappingError> {
    let mut out = Vec::new();
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let dec = |s: &str| {
            let s = s.replace('+', " ");
            percent_encoding::percent_decode_str(&s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| MappingError(format!("query: {s:?} is not UTF-8 once decoded")))
        };
        out.push((dec(k)?, dec(v)?));
    }
    Ok(out)
}

/// Encodes pairs as a query string.
pub fn encode_query(pairs: &[(String, String)]) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                percent_encoding::utf8_percent_encode(k, SET),
                percent_encoding::utf8_percent_encode(v, SET)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The command tree as JSON, for `POST /api/v1/commands`.
pub fn describe(cmd: &Command) -> serde_json::Value {
    let options: Vec<serde_json::Value> = cmd
        .get_arguments()
        .filter(|a| !a.is_positional() && !is_global(a))
        .filter(|a| !a.is_hide_set())
        .map(|a| {
            serde_json::json!({
                "Name": a.get_long(),
                "Short": a.get_short().map(String::from),
                "Flag": matches!(a.get_action(), ArgAction::SetTrue | ArgAction::SetFalse),
                "Help": a.get_help().map(|h| h.to_string()),
            })
        })
        .collect();
    let args: Vec<serde_json::Value> = cmd
        .get_arguments()
        .filter(|a| a.is_positional())
        .map(|a| {
            serde_json::json!({
                "Name": a.get_id().as_str(),
                "Required": a.is_required_set(),
                "Help": a.get_help().map(|h| h.to_string()),
            })
        })
        .collect();
    serde_json::json!({
        "Name": cmd.get_name(),
        "About": cmd.get_about().map(|h| h.to_string()),
        "Options": options,
        "Arguments": args,
        "Subcommands": cmd.get_subcommands().filter(|c| !c.is_hide_set() && c.get_name() != "help").map(describe).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::CommandFactory;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn query_to_argv_and_back() {
        let root = Cli::command();
        let q = pairs(&[
            (
                "arg",
                "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567",
            ),
            ("peer", "127.0.0.1:1"),
            ("peer", "127.0.0.1:2"),
            ("seed", "true"),
            ("sequential", "false"),
            ("o", "/tmp/x"),
        ]);
        let argv = argv_from_query(&root, &["bittorrent", "download"], &q).unwrap();
        assert_eq!(
            argv,
            [
                "bittorrent",
                "download",
                "--peer=127.0.0.1:1",
                "--peer=127.0.0.1:2",
                "--seed",
                "--output=/tmp/x",
                "--",
                "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567"
            ]
        );
        let mut full = vec!["btfs".to_string()];
        full.extend(argv);
        let m = root.clone().try_get_matches_from(&full).unwrap();
        let (path, back) = query_from_matches(&root, &m);
        assert_eq!(path, ["bittorrent", "download"]);
        let mut expected = pairs(&[
            (
                "arg",
                "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567",
            ),
            ("output", "/tmp/x"),
            ("peer", "127.0.0.1:1"),
            ("peer", "127.0.0.1:2"),
            ("seed", "true"),
        ]);
        let mut back = back;
        back.sort();
        expected.sort();
        assert_eq!(back, expected);
    }

    #[test]
    fn options_with_optional_values_and_errors() {
        let root = Cli::command();
        let argv = argv_from_query(
            &root,
            &["add"],
            &pairs(&[("pin", "false"), ("raw-leaves", "true")]),
        )
        .unwrap();
        assert_eq!(argv, ["add", "--pin=false", "--raw-leaves=true"]);
        assert!(argv_from_query(&root, &["nope"], &[]).is_err());
        assert!(argv_from_query(&root, &["pin"], &[]).is_err());
        assert!(argv_from_query(&root, &["add"], &pairs(&[("bogus", "1")])).is_err());
        assert!(argv_from_query(&root, &["add"], &pairs(&[("recursive", "maybe")])).is_err());
        // Values that look like options stay values.
        let argv = argv_from_query(&root, &["cat"], &pairs(&[("arg", "--help")])).unwrap();
        assert_eq!(argv, ["cat", "--", "--help"]);
    }

    #[test]
    fn a_command_with_positionals_and_subcommands() {
        let root = Cli::command();
        let q = pairs(&[
            ("arg", "Bittorrent.Port"),
            ("arg", "7000"),
            ("json", "true"),
        ]);
        let argv = argv_from_query(&root, &["config"], &q).unwrap();
        assert_eq!(argv, ["config", "--json", "--", "Bittorrent.Port", "7000"]);
        let mut full = vec!["btfs".to_string()];
        full.extend(argv);
        let m = root.clone().try_get_matches_from(&full).unwrap();
        let (path, mut back) = query_from_matches(&root, &m);
        assert_eq!(path, ["config"]);
        back.sort();
        let mut q = q;
        q.sort();
        assert_eq!(back, q);
        let argv = argv_from_query(
            &root,
            &["config", "profile", "apply"],
            &pairs(&[("arg", "test")]),
        )
        .unwrap();
        assert_eq!(argv, ["config", "profile", "apply", "--", "test"]);
        // `profile` alone still needs its subcommand.
        assert!(argv_from_query(&root, &["config", "profile"], &[]).is_err());
    }

    #[test]
    fn queries() {
        let q = parse_query("arg=a%20b&x=1+2&flag&enc=json").unwrap();
        assert_eq!(
            q,
            pairs(&[("arg", "a b"), ("x", "1 2"), ("flag", ""), ("enc", "json")])
        );
        assert!(parse_query("a=%ff").is_err());
        let enc = encode_query(&pairs(&[("arg", "magnet:?xt=a&b"), ("k", "é")]));
        assert_eq!(
            parse_query(&enc).unwrap(),
            pairs(&[("arg", "magnet:?xt=a&b"), ("k", "é")])
        );
    }
}
