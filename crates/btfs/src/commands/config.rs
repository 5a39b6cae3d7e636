//! `btfs config`: reads and changes `$BTFS_PATH/config` as kubo's `ipfs config` does
//! (`KEY`, `KEY VALUE` with `--json`/`--bool`, `show`, `profile apply`).
//!
//! Policy: every change is checked as a whole config ([`store::config`]) and written
//! through a temporary file and a rename; a refused change writes nothing. `KEY VALUE`
//! changes the file's raw JSON and checks only the result, so it also repairs a config
//! that no longer reads. Reading with no repo shows the config a repo created now would
//! get (default + `$BTFS_PROFILE`); changing creates the repo first. Commands read the
//! config when they start, so a change applies to commands started after it.
//!
//! Locking: a change (set, profile apply) holds [`store::config::lock`] from its read to
//! its write, so concurrent changes all land; reads take no lock.

use super::btfs_path;
use crate::cli::{ConfigArgs, ConfigCommand, ProfileCommand};
use crate::output::Encoding;
use anyhow::{bail, Context};
use store::config::{apply_profiles, changed_keys, get_key, read_value, set_key};
use store::{Config, Repo};

pub fn run(args: ConfigArgs, enc: Encoding) -> anyhow::Result<()> {
    match (&args.command, &args.key, &args.value) {
        (Some(ConfigCommand::Show), _, _) => show(),
        (Some(ConfigCommand::Profile(ProfileCommand::Apply { name, dry_run })), _, _) => {
            profile(name, *dry_run, enc)
        }
        (None, Some(key), None) => get(key, enc),
        (None, Some(key), Some(value)) => set(key, value, args.json, args.bool, enc),
        (None, None, _) => bail!(
            "give a KEY (btfs config Bittorrent.Port), KEY VALUE, `show` or `profile apply NAME`"
        ),
    }
}

fn current() -> anyhow::Result<Config> {
    Ok(Repo::effective_config(&btfs_path()?)?)
}

fn show() -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&current()?)?);
    Ok(())
}

fn get(key: &str, enc: Encoding) -> anyhow::Result<()> {
    let value = current()?.to_value();
    let v = get_key(&value, key)?;
    match enc {
        Encoding::Json => println!("{}", serde_json::json!({"Key": key, "Value": v})),
        Encoding::Text => match v {
            serde_json::Value::String(s) => println!("{s}"),
            serde_json::Value::Object(_) | serde_json::Value::Array(_) => {
                println!("{}", serde_json::to_string_pretty(v)?)
            }
            other => println!("{other}"),
        },
    }
    Ok(())
}

/// The repo's config file, the repo created first when there is none.
fn config_file() -> anyhow::Result<std::path::PathBuf> {
    let path = btfs_path()?;
    if Repo::init(&path)? {
        eprintln!("initialized a BTFS repo at {}", path.display());
    }
    Ok(path.join("config"))
}

fn set(key: &str, value: &str, json: bool, boolean: bool, enc: Encoding) -> anyhow::Result<()> {
    let new = if json {
        serde_json::from_str(value).with_context(|| format!("--json: {value:?} is not JSON"))?
    } else if boolean {
        match value {
            "true" => serde_json::Value::Bool(true),
            "false" => serde_json::Value::Bool(false),
            _ => bail!("--bool: give true or false, not {value:?}"),
        }
    } else {
        serde_json::Value::String(value.to_string())
    };
    let file = config_file()?;
    let changed = {
        let _lock = store::config::lock(&btfs_path()?)?;
        let changed = set_key(read_value(&file)?, key, new)?;
        changed.write(&file)?;
        changed
    };
    if enc == Encoding::Json {
        let v = changed.to_value();
        println!(
            "{}",
            serde_json::json!({"Key": key, "Value": get_key(&v, key)?})
        );
    }
    Ok(())
}

fn profile(name: &str, dry_run: bool, enc: Encoding) -> anyhow::Result<()> {
    store::config::check_profiles(name)?;
    let file = if dry_run { None } else { Some(config_file()?) };
    let guard = match &file {
        Some(_) => Some(store::config::lock(&btfs_path()?)?),
        None => None,
    };
    let cfg = match &file {
        Some(f) => Config::read(f)?,
        None => current()?,
    };
    let after = apply_profiles(&cfg, name)?;
    let changed = changed_keys(&cfg, &after);
    if let (Some(f), false) = (&file, changed.is_empty()) {
        after.write(f)?;
    }
    drop(guard);
    let (before_v, after_v) = (cfg.to_value(), after.to_value());
    match enc {
        Encoding::Json => println!(
            "{}",
            serde_json::json!({"Profile": name, "DryRun": dry_run, "Changed": changed})
        ),
        Encoding::Text => {
            let verb = if dry_run { "would change" } else { "changed" };
            if changed.is_empty() {
                println!("profile {name}: nothing to change");
            }
            for key in &changed {
                println!(
                    "{verb} {key}: {} -> {}",
                    get_key(&before_v, key)?,
                    get_key(&after_v, key)?
                );
            }
            if !dry_run && !changed.is_empty() {
                eprintln!(
                    "commands started from now on use it; a running daemon's addresses change on its next start"
                );
            }
        }
    }
    Ok(())
}
