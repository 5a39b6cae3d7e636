//! The repo's `config` file (JSON, PascalCase keys as kubo writes them): its typed form,
//! strict reading, key paths for `btfs config KEY [VALUE]`, and profiles.
//!
//! Policy: the file is untrusted input. Reading refuses text that is not JSON (naming the
//! file), unknown keys and wrong types (naming the full key path, such as
//! `Bittorrent.DHT.Bootstrap[2]`), and values that parse but make no sense (a port of 0,
//! a bootstrap entry that is not `host:port`, no listen address). A missing section takes
//! its defaults, so configs written before a section existed still load. A change
//! ([`set_key`], [`apply_profiles`]) is checked as a whole config before anything is
//! written; the file is replaced by a rename of a temporary file of its own (synced
//! first), so a refused or interrupted change leaves it as it was. [`set_key`] works on
//! the file's raw JSON and checks only the result, so a config that no longer reads can
//! be repaired with `btfs config KEY VALUE`.
//!
//! Locking: a change is a read-modify-write, done under [`lock`] (an exclusive `flock` of
//! `config.lock` beside the file, waited for at most [`MAX_LOCK_WAIT`]), so concurrent
//! changes of different keys all land. Readers take no lock: they see the file before or
//! after a rename, never a half-written one. Lock order: `config.lock` before `repo.lock`
//! (a command never holds `config.lock` while waiting for the repo).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest config file read (a config is a few KiB; this bounds a hostile one).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Most listen addresses in a config: as many as the peer listeners take at once
/// (`bittorrent::listen::MAX_LISTEN_ADDRESSES`).
pub const MAX_LISTEN_ADDRESSES: usize = 16;
/// Most DHT bootstrap entries, in the config or given with `--dht-bootstrap` (each is
/// resolved at once, on a thread of its own).
pub const MAX_BOOTSTRAP_ENTRIES: usize = 64;
/// Longest DNS name (RFC 1035).
pub const MAX_HOST_NAME_LEN: usize = 253;
/// Longest label of a DNS name (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;
/// Longest bootstrap entry (`host:port`).
pub const MAX_HOST_PORT_LEN: usize = MAX_HOST_NAME_LEN + 7;
/// The file whose `flock` guards a change of the config, beside it.
pub const LOCK_FILE: &str = "config.lock";
/// Longest wait for another process's change of the config to end.
pub const MAX_LOCK_WAIT: Duration = Duration::from_secs(30);

/// The whole config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Config {
    pub addresses: Addresses,
    pub datastore: DatastoreConfig,
    #[serde(default)]
    pub bittorrent: Bittorrent,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Addresses {
    /// Multiaddr (`/ip4/127.0.0.1/tcp/5001`) or `host:port`.
    #[serde(rename = "API")]
    pub api: String,
    pub gateway: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DatastoreConfig {
    /// Flush blocks to disk before pins and indexes refer to them.
    pub sync: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addresses: Addresses {
                api: "/ip4/127.0.0.1/tcp/5001".into(),
                gateway: "/ip4/127.0.0.1/tcp/8080".into(),
            },
            datastore: DatastoreConfig { sync: true },
            bittorrent: Bittorrent::default(),
        }
    }
}

/// The `Bittorrent` section: how the BitTorrent client meets the network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
pub struct Bittorrent {
    /// IPs to listen on for peers (TCP, one port on all; the DHT's UDP on the first IPv4
    /// one). Never empty, at most [`MAX_LISTEN_ADDRESSES`].
    pub listen_addresses: Vec<IpAddr>,
    /// Listen port; when taken, the next free one of the 20 after it.
    pub port: Port,
    /// A random port of 49152-65535 each run instead of `Port`.
    pub random_port: bool,
    #[serde(rename = "DHT")]
    pub dht: Dht,
    /// UPnP IGD and NAT-PMP for the listen port.
    pub port_mapping: bool,
    /// Bytes per second over all torrents of the process; 0: unlimited.
    pub upload_rate_limit: u64,
    /// Bytes per second; 0: unlimited.
    pub download_rate_limit: u64,
    /// Connections per torrent (at least 1).
    pub max_peers: u32,
    /// Connections with one IP address, per torrent (at least 1).
    #[serde(rename = "MaxConnectionsPerIP")]
    pub max_connections_per_ip: u32,
    /// A block list (P2P plaintext or eMule .dat); empty: none.
    #[serde(rename = "IPFilter")]
    pub ip_filter: String,
    /// Default folder for `download -o`; empty: a folder of the repo
    /// ([`crate::repo::DOWNLOADS_DIR`]).
    pub download_dir: String,
    /// How downloads enter the store: `filestore` (the downloaded files are the store's
    /// copy; leaves are references into them) or `copy` (every byte copied into blocks,
    /// a download without `-o` then removes its files).
    pub import_mode: ImportMode,
}

/// `Bittorrent.ImportMode`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ImportMode {
    /// Every byte written once: leaves stay in the downloaded files.
    #[default]
    Filestore,
    /// A self-contained store: leaves copied into blocks.
    Copy,
}

/// The well-known mainline DHT routers mainstream clients bootstrap from.
pub const DEFAULT_BOOTSTRAP: [&str; 4] = [
    "router.bittorrent.com:6881",
    "router.utorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "dht.libtorrent.org:25401",
];

/// The port peers are told to use when nothing else is configured.
pub const DEFAULT_PORT: u16 = 6881;

impl Default for Bittorrent {
    fn default() -> Self {
        Bittorrent {
            listen_addresses: vec![
                IpAddr::from([0, 0, 0, 0]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 0]),
            ],
            port: Port(DEFAULT_PORT),
            random_port: false,
            dht: Dht::default(),
            port_mapping: true,
            upload_rate_limit: 0,
            download_rate_limit: 0,
            max_peers: 50,
            max_connections_per_ip: 1,
            ip_filter: String::new(),
            download_dir: String::new(),
            import_mode: ImportMode::Filestore,
        }
    }
}

/// The `Bittorrent.DHT` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
pub struct Dht {
    pub enabled: bool,
    /// Nodes to join the DHT through.
    pub bootstrap: Vec<HostPort>,
    /// Whether a torrent's own `nodes` (BEP 5) are joined through when `Bootstrap` is
    /// empty. The test profile turns it off: a torrent's `nodes` may name any host.
    pub torrent_nodes: bool,
}

impl Default for Dht {
    fn default() -> Self {
        Dht {
            enabled: true,
            bootstrap: DEFAULT_BOOTSTRAP
                .iter()
                .map(|s| HostPort::parse(s).expect("the built-in routers parse"))
                .collect(),
            torrent_nodes: true,
        }
    }
}

/// Why a number is not a port.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a port (1-65535)")]
pub struct PortError(pub u64);

/// A TCP/UDP port of 1-65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Port(u16);

impl Port {
    pub fn new(n: u64) -> Result<Port, PortError> {
        match u16::try_from(n) {
            Ok(p) if p != 0 => Ok(Port(p)),
            _ => Err(PortError(n)),
        }
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Port::new(u64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Why a text is not `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not HOST:PORT ({why})")]
pub struct HostPortError {
    /// The text, cut to [`MAX_HOST_PORT_LEN`] characters.
    pub text: String,
    pub why: HostPortProblem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostPortProblem {
    #[error("longer than {MAX_HOST_PORT_LEN} bytes")]
    TooLong,
    #[error("no port")]
    NoPort,
    #[error("the port must be 1-65535")]
    BadPort,
    #[error(
        "the host must be a DNS name (labels of letters, digits and '-', not starting or \
         ending with '-', at most {MAX_LABEL_LEN} bytes each and {MAX_HOST_NAME_LEN} in all), \
         an IPv4 address or [IPv6]"
    )]
    BadHost,
}

/// Whether `host` is a DNS name as RFC 1123 allows (an IPv4 literal is one too).
pub fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST_NAME_LEN
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_LEN
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `host:port` of a DHT node: a DNS name, an IPv4 address or a bracketed IPv6 literal,
/// and a port of 1-65535.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct HostPort(String);

impl HostPort {
    pub fn parse(s: &str) -> Result<HostPort, HostPortError> {
        let bad = |why| {
            Err(HostPortError {
                text: s.chars().take(MAX_HOST_PORT_LEN).collect(),
                why,
            })
        };
        if s.len() > MAX_HOST_PORT_LEN {
            return bad(HostPortProblem::TooLong);
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return bad(HostPortProblem::NoPort);
        };
        let port_ok = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port
                .parse::<u64>()
                .ok()
                .and_then(|p| Port::new(p).ok())
                .is_some();
        if !port_ok {
            return bad(HostPortProblem::BadPort);
        }
        let host_ok = match host.strip_prefix('[') {
            Some(inner) => inner
                .strip_suffix(']')
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
            None => is_dns_name(host),
        };
        if !host_ok {
            return bad(HostPortProblem::BadHost);
        }
        Ok(HostPort(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        HostPort::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: larger than {MAX_CONFIG_BYTES} bytes, which no config needs")]
    TooLarge { path: PathBuf },
    #[error("{path} is not JSON: {message}")]
    NotJson { path: PathBuf, message: String },
    /// A key path and what is wrong with its value (or that the key is unknown).
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("unknown profile {0:?} (profiles: {PROFILES})", PROFILES = PROFILES.join(", "))]
    UnknownProfile(String),
    #[error(
        "{path}: another btfs has been changing the config for {} s; try again when it is done",
        MAX_LOCK_WAIT.as_secs()
    )]
    Busy { path: PathBuf },
}

impl ConfigError {
    fn invalid(key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// `Bittorrent.DHT.Bootstrap[2]` from serde_path_to_error's path (`Bittorrent.DHT.Bootstrap[2]`
/// already, or `.` for the root).
fn key_path(p: &serde_path_to_error::Path) -> String {
    let s = p.to_string();
    if s == "." {
        "(the config)".into()
    } else {
        s
    }
}

impl Config {
    /// A config from JSON text, fully checked.
    pub fn from_json(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ConfigError::NotJson {
                path: file.to_path_buf(),
                message: e.to_string(),
            })?;
        Config::from_value(value)
    }

    /// A config from a JSON value, fully checked.
    pub fn from_value(value: serde_json::Value) -> Result<Config, ConfigError> {
        let cfg: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = key_path(e.path());
            ConfigError::invalid(&key, e.into_inner().to_string())
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The checks that types alone do not make.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bt = &self.bittorrent;
        if bt.listen_addresses.is_empty() {
            return Err(ConfigError::invalid(
                "Bittorrent.ListenAddresses",
                "give at least one IP address (0.0.0.0 for every IPv4 address)",
            ));
        }
        if bt.listen_addresses.len() > MAX_LISTEN_ADDRESSES {
            return Err(ConfigError::invalid(
                "Bittorrent.ListenAddresses",
                format!("more than {MAX_LISTEN_ADDRESSES} addresses"),
            ));
        }
        if bt.dht.bootstrap.len() > MAX_BOOTSTRAP_ENTRIES {
            return Err(ConfigError::invalid(
                "Bittorrent.DHT.Bootstrap",
                format!("more than {MAX_BOOTSTRAP_ENTRIES} nodes"),
            ));
        }
        if !bt.download_dir.is_empty() && !Path::new(&bt.download_dir).is_absolute() {
            return Err(ConfigError::invalid(
                "Bittorrent.DownloadDir",
                format!(
                    "{:?} is not an absolute path (give one such as /srv/downloads, or \"\" for none)",
                    bt.download_dir
                ),
            ));
        }
        for (key, addr) in [
            ("Addresses.API", &self.addresses.api),
            ("Addresses.Gateway", &self.addresses.gateway),
        ] {
            if parse_listen_addr(addr).is_none() {
                return Err(ConfigError::invalid(
                    key,
                    format!("{addr:?} is not /ip4/IP/tcp/PORT, /ip6/IP/tcp/PORT or IP:PORT"),
                ));
            }
        }
        if bt.max_peers == 0 {
            return Err(ConfigError::invalid(
                "Bittorrent.MaxPeers",
                "0 allows no connection; give at least 1",
            ));
        }
        if bt.max_connections_per_ip == 0 {
            return Err(ConfigError::invalid(
                "Bittorrent.MaxConnectionsPerIP",
                "0 allows no connection; give at least 1",
            ));
        }
        Ok(())
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a config serialises")
    }

    /// Reads `file`, fully checked.
    pub fn read(file: &Path) -> Result<Config, ConfigError> {
        Config::from_value(read_value(file)?)
    }

    /// Writes the config to `file`: a temporary file of its own in the same folder,
    /// synced, then renamed over it. Call under [`lock`] when the change depends on what
    /// was read.
    pub fn write(&self, file: &Path) -> Result<(), ConfigError> {
        use std::io::Write;
        let text = serde_json::to_string_pretty(self).expect("a config serialises") + "\n";
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ConfigError::Io { path, source }
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".config-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(io(dir))?;
        tmp.write_all(text.as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(io(tmp.path()))?;
        tmp.persist(file).map_err(|e| io(file)(e.error))?;
        // The rename itself, durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// The raw JSON of the config file: at most [`MAX_CONFIG_BYTES`], and JSON, but not
/// checked as a config.
pub fn read_value(file: &Path) -> Result<serde_json::Value, ConfigError> {
    use std::io::Read;
    let io = |source| ConfigError::Io {
        path: file.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(file).map_err(io)?;
    let mut text = String::new();
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: file.to_path_buf(),
        });
    }
    serde_json::from_str(&text).map_err(|e| ConfigError::NotJson {
        path: file.to_path_buf(),
        message: e.to_string(),
    })
}

/// Held while the config in `dir` is read, changed and written (see the module doc);
/// released when dropped.
#[derive(Debug)]
pub struct ConfigLock {
    _file: std::fs::File,
}

/// Takes the config lock of the repo folder `dir`, waiting at most [`MAX_LOCK_WAIT`] for
/// another process to release it.
pub fn lock(dir: &Path) -> Result<ConfigLock, ConfigError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
    let deadline = Instant::now() + MAX_LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(ConfigLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(std::fs::TryLockError::WouldBlock) => return Err(ConfigError::Busy { path }),
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(ConfigError::Io { path, source })
            }
        }
    }
}

/// `/ip4/A/tcp/P`, `/ip6/A/tcp/P` or `A:P` → a socket address.
pub fn parse_listen_addr(s: &str) -> Option<SocketAddr> {
    let parts: Vec<&str> = s.split('/').collect();
    if let ["", "ip4" | "ip6", ip, "tcp", port] = parts.as_slice() {
        return Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?));
    }
    s.parse().ok()
}

/// The value at a dotted key path (`Bittorrent.DHT.Bootstrap`).
pub fn get_key<'a>(
    value: &'a serde_json::Value,
    key: &str,
) -> Result<&'a serde_json::Value, ConfigError> {
    let mut v = value;
    for part in key.split('.') {
        v = v
            .as_object()
            .and_then(|o| o.get(part))
            .ok_or_else(|| ConfigError::invalid(key, "no such config key"))?;
    }
    Ok(v)
}

/// The config `value` (raw JSON, as [`read_value`] gives it) with `key` set to `new`,
/// checked as a whole: only the result must be a sound config, so a broken config can be
/// repaired one key at a time. Only keys the config has can be set; sections missing
/// from `value` are made.
pub fn set_key(
    mut value: serde_json::Value,
    key: &str,
    new: serde_json::Value,
) -> Result<Config, ConfigError> {
    get_key(&Config::default().to_value(), key)?;
    let parts: Vec<&str> = key.split('.').collect();
    let mut v = &mut value;
    for (i, part) in parts.iter().enumerate() {
        let obj = v.as_object_mut().ok_or_else(|| {
            let at = if i == 0 {
                "(the config)".to_string()
            } else {
                parts[..i].join(".")
            };
            ConfigError::invalid(&at, "not an object: set it whole first")
        })?;
        v = obj
            .entry(part.to_string())
            .or_insert_with(|| serde_json::json!({}));
    }
    *v = new;
    Config::from_value(value)
}

/// The profiles `apply_profiles` knows.
pub const PROFILES: &[&str] = &["test", "default-networking", "copy-import", "filestore"];

/// Applies one profile.
fn apply_profile(cfg: &mut Config, name: &str) -> Result<(), ConfigError> {
    let bt = &mut cfg.bittorrent;
    match name {
        // Everything on this machine: loopback only, a random port, no DHT routers, no
        // port mapping, and room for the many peers that all share 127.0.0.1.
        "test" => {
            bt.listen_addresses = vec![IpAddr::from([127, 0, 0, 1])];
            bt.random_port = true;
            bt.dht.bootstrap = Vec::new();
            bt.dht.torrent_nodes = false;
            bt.port_mapping = false;
            bt.max_connections_per_ip = 16;
        }
        "default-networking" => {
            let d = Bittorrent::default();
            bt.listen_addresses = d.listen_addresses;
            bt.random_port = d.random_port;
            bt.dht.bootstrap = d.dht.bootstrap;
            bt.dht.torrent_nodes = d.dht.torrent_nodes;
            bt.port_mapping = d.port_mapping;
            bt.max_connections_per_ip = d.max_connections_per_ip;
        }
        // A self-contained store: downloads copy every byte into blocks.
        "copy-import" => bt.import_mode = ImportMode::Copy,
        // Back to the default: downloads keep their files as the store's copy.
        "filestore" => bt.import_mode = ImportMode::Filestore,
        other => return Err(ConfigError::UnknownProfile(other.into())),
    }
    Ok(())
}

/// Checks that every comma-separated name of `names` is a profile (empty names are
/// skipped).
pub fn check_profiles(names: &str) -> Result<(), ConfigError> {
    match profile_names(names).find(|n| !PROFILES.contains(n)) {
        Some(unknown) => Err(ConfigError::UnknownProfile(unknown.into())),
        None => Ok(()),
    }
}

fn profile_names(names: &str) -> impl Iterator<Item = &str> {
    names.split(',').map(str::trim).filter(|n| !n.is_empty())
}

/// Applies the comma-separated profiles `names` in order (empty names are skipped).
pub fn apply_profiles(cfg: &Config, names: &str) -> Result<Config, ConfigError> {
    let mut out = cfg.clone();
    check_profiles(names)?;
    for name in profile_names(names) {
        apply_profile(&mut out, name)?;
    }
    out.validate()?;
    Ok(out)
}

/// The dotted keys whose values differ between two configs (leaves and lists), in order.
pub fn changed_keys(before: &Config, after: &Config) -> Vec<String> {
    fn walk(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                for (k, va) in x {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    match y.get(k) {
                        Some(vb) => walk(&key, va, vb, out),
                        None => out.push(key),
                    }
                }
            }
            _ if a != b => out.push(prefix.to_string()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", &before.to_value(), &after.to_value(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: serde_json::Value) -> String {
        Config::from_value(v).unwrap_err().to_string()
    }

    fn with_bt(bt: serde_json::Value) -> serde_json::Value {
        let mut v = Config::default().to_value();
        v["Bittorrent"] = bt;
        v
    }

    #[test]
    fn defaults_and_old_configs() {
        let old = json!({"Addresses": {"API": "/ip4/127.0.0.1/tcp/5001", "Gateway": "/ip4/127.0.0.1/tcp/8080"}, "Datastore": {"Sync": true}});
        let cfg = Config::from_value(old).unwrap();
        assert_eq!(cfg, Config::default());
        let bt = &cfg.bittorrent;
        assert_eq!(bt.port.get(), 6881);
        assert_eq!(bt.dht.bootstrap.len(), 4);
        assert_eq!(bt.listen_addresses.len(), 2);
        // A partial section keeps the defaults of the rest.
        let cfg = Config::from_value(with_bt(json!({"DHT": {"Enabled": false}}))).unwrap();
        assert!(!cfg.bittorrent.dht.enabled);
        assert_eq!(cfg.bittorrent.dht.bootstrap.len(), 4);
        // The default round-trips.
        assert_eq!(
            Config::from_value(Config::default().to_value()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = err(with_bt(json!({"DHT": {"Bootstrap": ["a:1", "b:2", 7]}})));
        assert!(
            e.starts_with("Bittorrent.DHT.Bootstrap[2]: invalid type"),
            "{e}"
        );
        let e = err(with_bt(json!({"DHT": {"Bootstrap": ["a:1", "nope"]}})));
        assert!(
            e.starts_with("Bittorrent.DHT.Bootstrap[1]: \"nope\""),
            "{e}"
        );
        let e = err(with_bt(json!({"Bogus": 1})));
        assert!(e.contains("Bittorrent") && e.contains("Bogus"), "{e}");
        let e = err(with_bt(json!({"Port": 0})));
        assert!(e.starts_with("Bittorrent.Port: 0 is not a port"), "{e}");
        let e = err(with_bt(json!({"Port": 70000})));
        assert!(e.starts_with("Bittorrent.Port: 70000 is not a port"), "{e}");
        let e = err(with_bt(json!({"Port": "6881"})));
        assert!(e.starts_with("Bittorrent.Port: invalid type"), "{e}");
        let e = err(with_bt(json!({"ListenAddresses": []})));
        assert!(e.starts_with("Bittorrent.ListenAddresses:"), "{e}");
        let e = err(with_bt(json!({"ListenAddresses": ["0.0.0.0", "x"]})));
        assert!(e.starts_with("Bittorrent.ListenAddresses[1]:"), "{e}");
        let many: Vec<String> = (0..=MAX_LISTEN_ADDRESSES)
            .map(|i| format!("127.0.0.{}", i + 1))
            .collect();
        let e = err(with_bt(json!({ "ListenAddresses": many })));
        assert!(
            e.starts_with("Bittorrent.ListenAddresses: more than 16"),
            "{e}"
        );
        let e = err(with_bt(json!({"MaxPeers": 0})));
        assert!(e.starts_with("Bittorrent.MaxPeers:"), "{e}");
        let e = err(with_bt(json!({"MaxConnectionsPerIP": -1})));
        assert!(e.starts_with("Bittorrent.MaxConnectionsPerIP:"), "{e}");
        let mut v = Config::default().to_value();
        v["Extra"] = json!(1);
        assert!(err(v).contains("Extra"));
        let e = Config::from_json("{nope", Path::new("/r/config")).unwrap_err();
        assert!(e.to_string().starts_with("/r/config is not JSON"), "{e}");
    }

    #[test]
    fn host_ports() {
        for ok in [
            "a.b:1",
            "1.2.3.4:65535",
            "[::1]:6881",
            "router.bittorrent.com:6881",
        ] {
            assert!(HostPort::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "a", "a:", ":1", "a:0", "a:70000", "a:+1", "::1:5", "[::1]", "[x]:1", "a b:1",
            "-a.b:1", "a-.b:1", "a..b:1", "a.:1", ".a:1", "a_b:1", "é.b:1",
        ] {
            assert!(HostPort::parse(bad).is_err(), "{bad}");
        }
        let label = "a".repeat(MAX_LABEL_LEN);
        assert!(HostPort::parse(&format!("{label}.b:1")).is_ok());
        assert!(HostPort::parse(&format!("{label}a.b:1")).is_err());
        let long = [label.as_str(); 4].join(".");
        assert_eq!(long.len(), 255);
        let e = HostPort::parse(&format!("{long}:1")).unwrap_err();
        assert_eq!(e.why, HostPortProblem::BadHost);
        assert_eq!(
            HostPort::parse("a:0").unwrap_err().why,
            HostPortProblem::BadPort
        );
        assert_eq!(Port::new(70000), Err(PortError(70000)));
    }

    #[test]
    fn semantic_checks_name_the_key() {
        let e = err(with_bt(json!({"DownloadDir": "dl"})));
        assert!(
            e.starts_with("Bittorrent.DownloadDir: \"dl\" is not an absolute path"),
            "{e}"
        );
        assert!(Config::from_value(with_bt(json!({"DownloadDir": "/srv/dl"}))).is_ok());
        let many: Vec<String> = (0..=MAX_BOOTSTRAP_ENTRIES)
            .map(|i| format!("h{i}:1"))
            .collect();
        let e = err(with_bt(json!({"DHT": {"Bootstrap": many}})));
        assert!(e.starts_with("Bittorrent.DHT.Bootstrap: more than"), "{e}");
        for (key, value) in [("API", "localhost:5001"), ("Gateway", "/ip4/1.2.3.4/udp/1")] {
            let mut v = Config::default().to_value();
            v["Addresses"][key] = json!(value);
            let e = err(v);
            assert!(e.starts_with(&format!("Addresses.{key}: ")), "{e}");
        }
        let mut v = Config::default().to_value();
        v["Addresses"]["API"] = json!("[::1]:0");
        assert!(Config::from_value(v).is_ok());
    }

    #[test]
    fn a_broken_config_is_repaired_one_key_at_a_time() {
        let mut broken = Config::default().to_value();
        broken["Bittorrent"]["Port"] = json!(0);
        assert!(Config::from_value(broken.clone()).is_err());
        let fixed = set_key(broken.clone(), "Bittorrent.Port", json!(6882)).unwrap();
        assert_eq!(fixed.bittorrent.port.get(), 6882);
        // Another key does not repair it: the result is what is checked.
        let e = set_key(broken, "Bittorrent.MaxPeers", json!(9)).unwrap_err();
        assert!(e.to_string().starts_with("Bittorrent.Port:"), "{e}");
        // A missing section is made.
        let old = json!({"Addresses": Config::default().to_value()["Addresses"], "Datastore": {"Sync": true}});
        let c = set_key(old, "Bittorrent.DHT.Enabled", json!(false)).unwrap();
        assert!(!c.bittorrent.dht.enabled);
        // A section that is not an object is set whole.
        let mut odd = Config::default().to_value();
        odd["Bittorrent"] = json!(5);
        let e = set_key(odd.clone(), "Bittorrent.Port", json!(1)).unwrap_err();
        assert!(
            e.to_string().starts_with("Bittorrent: not an object"),
            "{e}"
        );
        assert!(set_key(odd, "Bittorrent", json!({})).is_ok());
    }

    #[test]
    fn writes_are_whole_and_changes_under_the_lock_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        Config::default().write(&file).unwrap();
        let keys = [
            "MaxPeers",
            "MaxConnectionsPerIP",
            "UploadRateLimit",
            "DownloadRateLimit",
        ];
        std::thread::scope(|s| {
            for (i, key) in keys.iter().enumerate() {
                let (dir, file) = (dir.path(), &file);
                s.spawn(move || {
                    for round in 0..10u64 {
                        let _l = lock(dir).unwrap();
                        let v = read_value(file).unwrap();
                        let key = format!("Bittorrent.{key}");
                        set_key(v, &key, json!(100 + i as u64 * 10 + round))
                            .unwrap()
                            .write(file)
                            .unwrap();
                    }
                });
            }
        });
        let bt = Config::read(&file).unwrap().bittorrent;
        assert_eq!(
            (
                bt.max_peers,
                bt.max_connections_per_ip,
                bt.upload_rate_limit,
                bt.download_rate_limit
            ),
            (109, 119, 129, 139)
        );
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let mut names = names;
        names.sort();
        assert_eq!(names, ["config", LOCK_FILE]);
    }

    #[test]
    fn keys_and_profiles() {
        let cfg = Config::default();
        let v = cfg.to_value();
        assert_eq!(get_key(&v, "Bittorrent.Port").unwrap(), &json!(6881));
        assert!(get_key(&v, "Bittorrent.Nope").is_err());
        let c = set_key(v.clone(), "Bittorrent.Port", json!(7000)).unwrap();
        assert_eq!(c.bittorrent.port.get(), 7000);
        assert!(set_key(v.clone(), "Bittorrent.Port", json!(0)).is_err());
        let e = set_key(v.clone(), "Bittorrent.Nope", json!(1)).unwrap_err();
        assert!(e.to_string().starts_with("Bittorrent.Nope:"), "{e}");
        let t = apply_profiles(&cfg, "test").unwrap();
        assert!(t.bittorrent.dht.bootstrap.is_empty() && t.bittorrent.random_port);
        let changed = changed_keys(&cfg, &t);
        assert_eq!(
            changed,
            [
                "Bittorrent.DHT.Bootstrap",
                "Bittorrent.DHT.TorrentNodes",
                "Bittorrent.ListenAddresses",
                "Bittorrent.MaxConnectionsPerIP",
                "Bittorrent.PortMapping",
                "Bittorrent.RandomPort"
            ]
        );
        let back = apply_profiles(&t, "default-networking").unwrap();
        assert_eq!(back, cfg);
        assert!(apply_profiles(&cfg, "test,nope").is_err());
    }
}
