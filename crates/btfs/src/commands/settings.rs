//! The BitTorrent settings of one run: the `Bittorrent` section of the config (or, with
//! no repo yet, the default with `$BTFS_PROFILE` applied) with the command's flags laid
//! over it. `download`, `serve` and `metainfo -m` take their network settings from here
//! only; nothing else reads those config keys.
//!
//! Policy: a flag wins over the config for this run only; nothing is written back. The
//! DHT is off, with a one-line note, when no listen address is IPv4 (the mainline DHT is
//! IPv4 only). A relative `Bittorrent.IPFilter` is taken from `$BTFS_PATH` (the daemon's
//! jobs run elsewhere than where the config was written), a relative `--ip-filter` from
//! the working directory. A rate of 0 is no limit. No locks.

use crate::cli::NetArgs;
use anyhow::Context;
use bittorrent::listen::{Listeners, MAX_PORT_FALLBACK_TRIES};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use store::config::{HostPort, MAX_BOOTSTRAP_ENTRIES};
use store::Repo;

// A config the store accepts never lists more addresses than the listeners take.
const _: () =
    assert!(store::config::MAX_LISTEN_ADDRESSES == bittorrent::listen::MAX_LISTEN_ADDRESSES);

/// The effective BitTorrent settings of this run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Addresses to listen on for peers (never empty), all with one port.
    pub listen: Vec<IpAddr>,
    /// The port to listen on (or the next free of the
    /// [`MAX_PORT_FALLBACK_TRIES`] after it), or 0 for a random one of 49152-65535.
    pub port: u16,
    /// The DHT, when on.
    pub dht: Option<DhtSettings>,
    /// Why `dht` is `None`.
    pub dht_off: DhtOff,
    /// Map the listen port and the DHT's on the LAN's gateway (UPnP IGD, NAT-PMP/PCP;
    /// see `commands::portmap`).
    pub port_mapping: bool,
    /// Bytes per second over all torrents of the process.
    pub upload_rate_limit: Option<u64>,
    /// Bytes per second over all torrents of the process (peers and web seeds).
    pub download_rate_limit: Option<u64>,
    pub max_peers: usize,
    pub max_connections_per_ip: usize,
    /// A block list of IP ranges (see [`load_ip_filter`]).
    pub ip_filter: Option<IpFilterPath>,
    /// Where downloads keep their files (`-o` wins).
    pub download_dir: Option<PathBuf>,
    /// Whether downloads keep their files as the store's copy (see `node::bridge`).
    pub import_mode: store::config::ImportMode,
}

/// Where the block list comes from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpFilterPath {
    pub path: PathBuf,
    /// From `Bittorrent.IPFilter` (else `--ip-filter`).
    pub from_config: bool,
}

/// The block list of a run: `--ip-filter` (relative to the working directory), else
/// `Bittorrent.IPFilter` (relative to `btfs_path`; "" none).
pub fn ip_filter_path(
    cfg: &store::Config,
    flag: Option<&Path>,
    btfs_path: &Path,
) -> Option<IpFilterPath> {
    if let Some(p) = flag {
        return Some(IpFilterPath {
            path: p.to_path_buf(),
            from_config: false,
        });
    }
    let c = &cfg.bittorrent.ip_filter;
    (!c.is_empty()).then(|| IpFilterPath {
        path: btfs_path.join(c),
        from_config: true,
    })
}

/// Reads the block list, if there is one: a list that does not parse, or cannot be
/// read, is an error naming the file, the line and its text (and the config key when
/// the path came from it). Done before anything reaches the network.
pub fn load_ip_filter(
    path: Option<&IpFilterPath>,
) -> anyhow::Result<Option<Arc<bittorrent::ipfilter::IpFilter>>> {
    let Some(p) = path else { return Ok(None) };
    let f = bittorrent::ipfilter::IpFilter::load(&p.path);
    let f = if p.from_config {
        f.context("the IP filter set in Bittorrent.IPFilter")?
    } else {
        f?
    };
    Ok(Some(Arc::new(f)))
}

/// The download limiter of a run, if there is a limit.
pub fn download_limiter(s: &Settings) -> Option<Arc<bittorrent::ratelimit::RateLimiter>> {
    s.download_rate_limit
        .map(|r| Arc::new(bittorrent::ratelimit::RateLimiter::new(r)))
}

/// How the DHT node joins.
#[derive(Debug, Clone)]
pub struct DhtSettings {
    /// `host:port` of nodes to join through; empty: no routers (a torrent's `nodes`, when
    /// `torrent_nodes` allows, or nothing).
    pub bootstrap: Vec<String>,
    /// UDP port (`--dht-port`; 0: any). `None`: the port the peer listeners have
    /// (as libtorrent, so one port mapping serves TCP and UDP), or any when that UDP
    /// port is taken.
    pub port: Option<u16>,
    /// Whether a torrent's own `nodes` may be joined through when `bootstrap` is empty
    /// (Bittorrent.DHT.TorrentNodes).
    pub torrent_nodes: bool,
    /// Whether the routing table saved by an earlier run is added to `bootstrap` (never
    /// when joining through a torrent's `nodes`).
    pub saved_nodes: bool,
}

/// Why a run has no DHT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhtOff {
    /// `--no-dht` or `Bittorrent.DHT.Enabled: false`.
    Disabled,
    /// No IPv4 listen address, and the mainline DHT is IPv4 only.
    NoIpv4,
}

impl DhtOff {
    pub fn reason(self) -> &'static str {
        match self {
            DhtOff::Disabled => "the DHT is off (--no-dht or Bittorrent.DHT.Enabled)",
            DhtOff::NoIpv4 => {
                "the DHT is off: no listen address is IPv4 (--listen-ip or \
                 Bittorrent.ListenAddresses), and the mainline DHT is IPv4 only"
            }
        }
    }
}

impl Settings {
    /// Binds the peer listeners: every address of [`Settings::listen`] with one port, the
    /// configured one or the next free of the [`MAX_PORT_FALLBACK_TRIES`] after it (a
    /// random one for port 0). Must run inside a Tokio runtime.
    pub fn bind_listeners(&self) -> anyhow::Result<Listeners> {
        Listeners::bind(&self.listen, self.port, MAX_PORT_FALLBACK_TRIES)
            .with_context(|| format!("listening for peers on {}", self.describe_listen()))
    }

    /// The addresses and port asked for, for messages (`0.0.0.0, :: port 6881`).
    pub fn describe_listen(&self) -> String {
        let ips: Vec<String> = self.listen.iter().map(IpAddr::to_string).collect();
        match self.port {
            0 => format!("{} (a random port)", ips.join(", ")),
            p => format!("{} port {p}", ips.join(", ")),
        }
    }

    /// The IPv4 address of the DHT's UDP socket: the first IPv4 listen address (there is
    /// one whenever `dht` is on).
    pub fn dht_bind(&self) -> Ipv4Addr {
        self.listen
            .iter()
            .find_map(|ip| match ip {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            })
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// Prints a one-line note when the DHT is off although the config and flags want
    /// it (no IPv4 listen address).
    pub fn note_dht_off(&self) {
        if self.dht.is_none() && self.dht_off == DhtOff::NoIpv4 {
            eprintln!("note: {}", self.dht_off.reason());
        }
    }

    /// Why the run has no DHT to find peers with, for messages.
    pub fn no_dht_reason(&self) -> &'static str {
        match &self.dht {
            None => self.dht_off.reason(),
            Some(_) => {
                "no DHT node to look the infohash up through (Bittorrent.DHT.Bootstrap is \
                 empty): add --dht-bootstrap HOST:PORT or set Bittorrent.DHT.Bootstrap"
            }
        }
    }
}

/// The config in effect for this run (the repo's, or the default with `$BTFS_PROFILE`).
pub fn config() -> anyhow::Result<store::Config> {
    let path = super::btfs_path()?;
    Ok(Repo::effective_config(&path)?)
}

/// The environment variable an earlier btfs read for `--max-connections-per-ip`.
const OLD_PER_IP_ENV: &str = "BTFS_MAX_CONNECTIONS_PER_IP";

/// The settings of a run: the config with `flags` over it. Notes on stderr what is off
/// for a reason the user may not expect.
pub fn effective(flags: &NetArgs) -> anyhow::Result<Settings> {
    if std::env::var_os(OLD_PER_IP_ENV).is_some() {
        eprintln!(
            "warning: {OLD_PER_IP_ENV} is no longer read; use --max-connections-per-ip or \
             `btfs config --json Bittorrent.MaxConnectionsPerIP N`"
        );
    }
    let s = resolve(&config()?, flags, &super::btfs_path()?)?;
    s.note_dht_off();
    Ok(s)
}

/// `flags` laid over `cfg` (of the repo at `btfs_path`).
pub fn resolve(cfg: &store::Config, flags: &NetArgs, btfs_path: &Path) -> anyhow::Result<Settings> {
    let bt = &cfg.bittorrent;
    let listen = if flags.listen_ip.is_empty() {
        bt.listen_addresses.clone()
    } else {
        flags.listen_ip.clone()
    };
    let port = match flags.port {
        Some(p) => p,
        None if flags.random_port || bt.random_port => 0,
        None => bt.port.get(),
    };
    let has_v4 = listen.iter().any(IpAddr::is_ipv4);
    let (dht, dht_off) =
        match dht_settings(cfg, &flags.dht_bootstrap, flags.no_dht, flags.dht_port)? {
            None => (None, DhtOff::Disabled),
            Some(_) if !has_v4 => (None, DhtOff::NoIpv4),
            Some(d) => (Some(d), DhtOff::Disabled),
        };
    let rate = |flag: Option<u64>, config: u64| flag.or(Some(config)).filter(|&r| r > 0);
    let ip_filter = ip_filter_path(cfg, flags.ip_filter.as_deref(), btfs_path);
    Ok(Settings {
        listen,
        port,
        dht,
        dht_off,
        port_mapping: bt.port_mapping && !flags.no_port_mapping,
        upload_rate_limit: rate(flags.max_upload_rate, bt.upload_rate_limit),
        download_rate_limit: rate(flags.max_download_rate, bt.download_rate_limit),
        max_peers: flags.max_peers.unwrap_or(bt.max_peers) as usize,
        max_connections_per_ip: flags
            .max_connections_per_ip
            .unwrap_or(bt.max_connections_per_ip) as usize,
        ip_filter,
        download_dir: (!bt.download_dir.is_empty()).then(|| PathBuf::from(&bt.download_dir)),
        import_mode: bt.import_mode,
    })
}

/// The DHT of a run: off with `--no-dht` or `DHT.Enabled: false`; `--dht-bootstrap`
/// replaces the config's list.
fn dht_settings(
    cfg: &store::Config,
    flag_bootstrap: &[String],
    no_dht: bool,
    port: Option<u16>,
) -> anyhow::Result<Option<DhtSettings>> {
    let d = &cfg.bittorrent.dht;
    if no_dht || !d.enabled {
        return Ok(None);
    }
    let bootstrap = if flag_bootstrap.is_empty() {
        d.bootstrap.iter().map(|h| h.as_str().to_owned()).collect()
    } else {
        if flag_bootstrap.len() > MAX_BOOTSTRAP_ENTRIES {
            anyhow::bail!("--dht-bootstrap: more than {MAX_BOOTSTRAP_ENTRIES} nodes");
        }
        for b in flag_bootstrap {
            HostPort::parse(b).context("--dht-bootstrap")?;
        }
        flag_bootstrap.to_vec()
    };
    Ok(Some(DhtSettings {
        bootstrap,
        port,
        torrent_nodes: d.torrent_nodes,
        saved_nodes: true,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_config() {
        let repo = Path::new("/repo");
        let cfg = store::Config::default();
        let s = resolve(&cfg, &NetArgs::default(), repo).unwrap();
        assert_eq!(s.port, 6881);
        assert_eq!(
            s.listen,
            [IpAddr::from([0, 0, 0, 0]), IpAddr::from([0u16; 8])]
        );
        assert_eq!(s.dht.as_ref().unwrap().bootstrap.len(), 4);
        assert!(s.port_mapping && s.upload_rate_limit.is_none());
        assert_eq!((s.max_peers, s.max_connections_per_ip), (50, 1));
        let flags = NetArgs {
            port: Some(7000),
            listen_ip: vec![IpAddr::from([127, 0, 0, 1])],
            dht_bootstrap: vec!["127.0.0.1:9".into()],
            max_upload_rate: Some(1000),
            no_port_mapping: true,
            max_connections_per_ip: Some(4),
            ..NetArgs::default()
        };
        let s = resolve(&cfg, &flags, repo).unwrap();
        assert_eq!(s.port, 7000);
        assert_eq!(s.listen, [IpAddr::from([127, 0, 0, 1])]);
        assert_eq!(s.dht.unwrap().bootstrap, ["127.0.0.1:9"]);
        assert_eq!(s.upload_rate_limit, Some(1000));
        assert!(!s.port_mapping);
        assert_eq!(s.max_connections_per_ip, 4);
        let test = store::config::apply_profiles(&cfg, "test").unwrap();
        let s = resolve(&test, &NetArgs::default(), repo).unwrap();
        assert_eq!(s.port, 0);
        assert!(s.dht.unwrap().bootstrap.is_empty());
        let off = NetArgs {
            no_dht: true,
            ..NetArgs::default()
        };
        assert!(resolve(&cfg, &off, repo).unwrap().dht.is_none());
        let bad = NetArgs {
            dht_bootstrap: vec!["nohost".into()],
            ..NetArgs::default()
        };
        assert!(resolve(&cfg, &bad, repo).is_err());
        let many = NetArgs {
            dht_bootstrap: vec!["127.0.0.1:9".into(); MAX_BOOTSTRAP_ENTRIES + 1],
            ..NetArgs::default()
        };
        let e = resolve(&cfg, &many, repo).unwrap_err().to_string();
        assert!(e.starts_with("--dht-bootstrap: more than"), "{e}");
    }

    #[test]
    fn no_ipv4_listen_address_turns_the_dht_off() {
        let repo = Path::new("/repo");
        let cfg = store::Config::default();
        let v6 = NetArgs {
            listen_ip: vec![IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])],
            ..NetArgs::default()
        };
        let s = resolve(&cfg, &v6, repo).unwrap();
        assert!(s.dht.is_none());
        assert_eq!(s.dht_off, DhtOff::NoIpv4);
        assert!(s.no_dht_reason().contains("IPv4 only"));
        let test = store::config::apply_profiles(&cfg, "test").unwrap();
        let s = resolve(&test, &NetArgs::default(), repo).unwrap();
        assert_eq!(s.dht_bind(), Ipv4Addr::LOCALHOST);
        assert!(!s.dht.unwrap().torrent_nodes);
    }

    /// The rate limits (0: none) and the block list: a flag over the config; a
    /// relative path from the config is under the repo, one from the flag is not.
    #[test]
    fn limits_and_the_ip_filter() {
        let repo = Path::new("/repo");
        let mut cfg = store::Config::default();
        let s = resolve(&cfg, &NetArgs::default(), repo).unwrap();
        assert_eq!((s.download_rate_limit, s.ip_filter.clone()), (None, None));
        assert!(download_limiter(&s).is_none());
        cfg.bittorrent.download_rate_limit = 1 << 20;
        cfg.bittorrent.ip_filter = "lists/block.p2p".into();
        let s = resolve(&cfg, &NetArgs::default(), repo).unwrap();
        assert_eq!(s.download_rate_limit, Some(1 << 20));
        assert_eq!(download_limiter(&s).unwrap().rate(), 1 << 20);
        let from_config = IpFilterPath {
            path: PathBuf::from("/repo/lists/block.p2p"),
            from_config: true,
        };
        assert_eq!(s.ip_filter, Some(from_config));
        cfg.bittorrent.ip_filter = "/etc/block.dat".into();
        let s = resolve(&cfg, &NetArgs::default(), repo).unwrap();
        assert_eq!(s.ip_filter.unwrap().path, PathBuf::from("/etc/block.dat"));
        let flags = NetArgs {
            max_download_rate: Some(0),
            ip_filter: Some(PathBuf::from("mine.p2p")),
            ..NetArgs::default()
        };
        let s = resolve(&cfg, &flags, repo).unwrap();
        assert_eq!(s.download_rate_limit, None, "0 is no limit");
        let from_flag = IpFilterPath {
            path: PathBuf::from("mine.p2p"),
            from_config: false,
        };
        assert_eq!(s.ip_filter, Some(from_flag));
    }
}
