//! The repo's `config` file (JSON, PascalCase keys as kubo writes them): its typed form,
//! strict reading, key paths for `btfs config KEY [VALUE]`, and profiles.
//!
//! Policy: the file is untrusted input. Reading refuses text that is not JSON (naming the
//! file), unknown keys and wrong types (naming the full key path, such as
//! `Bittorrent.DHT.Bootstrap[2]`), and values that parse but make no sense (a port of 0,
//! a bootstrap entry that is not `host:port`, no listen address). A missing section takes
//! its defaults, so configs written before a section existed still load. A change
//! ([`set_key`], [`apply_profiles`]) is checked as a whole config before anything is
//! written; the file is replaced by a rename, so a refused or interrupted change leaves
//! it as it was. No locks: the file is read once per command and replaced atomically.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Longest config file read (a config is a few KiB; this bounds a hostile one).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Most bootstrap entries and listen addresses kept in a config.
pub const MAX_LIST_ENTRIES: usize = 256;
/// Longest bootstrap entry (`host:port`; a DNS name is at most 253 bytes).
pub const MAX_HOST_PORT_LEN: usize = 300;

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
    /// IPs to listen on for peers (TCP; the DHT's UDP on the IPv4 one). Never empty.
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
    /// Default folder for `download -o`; empty: the files stay only in the store.
    pub download_dir: String,
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
}

impl Default for Dht {
    fn default() -> Self {
        Dht {
            enabled: true,
            bootstrap: DEFAULT_BOOTSTRAP
                .iter()
                .map(|s| HostPort::parse(s).expect("the built-in routers parse"))
                .collect(),
        }
    }
}

/// A TCP/UDP port of 1-65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Port(u16);

impl Port {
    pub fn new(n: u64) -> Result<Port, String> {
        match u16::try_from(n) {
            Ok(p) if p != 0 => Ok(Port(p)),
            _ => Err(format!("{n} is not a port (1-65535)")),
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

/// `host:port` of a DHT node: a DNS name, an IPv4 address or a bracketed IPv6 literal,
/// and a port of 1-65535.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct HostPort(String);

impl HostPort {
    pub fn parse(s: &str) -> Result<HostPort, String> {
        let bad = |why: &str| Err(format!("{s:?} is not HOST:PORT ({why})"));
        if s.len() > MAX_HOST_PORT_LEN {
            return bad("too long");
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return bad("no port");
        };
        let port_ok = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port
                .parse::<u64>()
                .ok()
                .and_then(|p| Port::new(p).ok())
                .is_some();
        if !port_ok {
            return bad("the port must be 1-65535");
        }
        let host_ok = if let Some(inner) = host.strip_prefix('[') {
            inner
                .strip_suffix(']')
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
        } else {
            !host.is_empty()
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        };
        if !host_ok {
            return bad("the host must be a name, an IPv4 address or [IPv6]");
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
        if bt.listen_addresses.len() > MAX_LIST_ENTRIES {
            return Err(ConfigError::invalid(
                "Bittorrent.ListenAddresses",
                format!("more than {MAX_LIST_ENTRIES} addresses"),
            ));
        }
        if bt.dht.bootstrap.len() > MAX_LIST_ENTRIES {
            return Err(ConfigError::invalid(
                "Bittorrent.DHT.Bootstrap",
                format!("more than {MAX_LIST_ENTRIES} nodes"),
            ));
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
        Config::from_json(&text, file)
    }

    /// Writes the config to `file` through `file.tmp` and a rename.
    pub fn write(&self, file: &Path) -> Result<(), ConfigError> {
        let text = serde_json::to_string_pretty(self).expect("a config serialises") + "\n";
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(|source| ConfigError::Io {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, file).map_err(|source| ConfigError::Io {
            path: file.to_path_buf(),
            source,
        })
    }
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

/// The config with `key` set to `new`, checked as a whole. Only existing keys can be set.
pub fn set_key(cfg: &Config, key: &str, new: serde_json::Value) -> Result<Config, ConfigError> {
    let mut value = cfg.to_value();
    let mut v = &mut value;
    for part in key.split('.') {
        v = v
            .as_object_mut()
            .and_then(|o| o.get_mut(part))
            .ok_or_else(|| ConfigError::invalid(key, "no such config key"))?;
    }
    *v = new;
    Config::from_value(value)
}

/// The profiles `apply_profiles` knows.
pub const PROFILES: &[&str] = &["test", "default-networking"];

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
            bt.port_mapping = false;
            bt.max_connections_per_ip = 16;
        }
        "default-networking" => {
            let d = Bittorrent::default();
            bt.listen_addresses = d.listen_addresses;
            bt.random_port = d.random_port;
            bt.dht.bootstrap = d.dht.bootstrap;
            bt.port_mapping = d.port_mapping;
            bt.max_connections_per_ip = d.max_connections_per_ip;
        }
        other => return Err(ConfigError::UnknownProfile(other.into())),
    }
    Ok(())
}

/// Applies the comma-separated profiles `names` in order (empty names are skipped).
pub fn apply_profiles(cfg: &Config, names: &str) -> Result<Config, ConfigError> {
    let mut out = cfg.clone();
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
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
        ] {
            assert!(HostPort::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_and_profiles() {
        let cfg = Config::default();
        let v = cfg.to_value();
        assert_eq!(get_key(&v, "Bittorrent.Port").unwrap(), &json!(6881));
        assert!(get_key(&v, "Bittorrent.Nope").is_err());
        let c = set_key(&cfg, "Bittorrent.Port", json!(7000)).unwrap();
        assert_eq!(c.bittorrent.port.get(), 7000);
        assert!(set_key(&cfg, "Bittorrent.Port", json!(0)).is_err());
        let e = set_key(&cfg, "Bittorrent.Nope", json!(1)).unwrap_err();
        assert!(e.to_string().starts_with("Bittorrent.Nope:"), "{e}");
        let t = apply_profiles(&cfg, "test").unwrap();
        assert!(t.bittorrent.dht.bootstrap.is_empty() && t.bittorrent.random_port);
        let changed = changed_keys(&cfg, &t);
        assert_eq!(
            changed,
            [
                "Bittorrent.DHT.Bootstrap",
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
