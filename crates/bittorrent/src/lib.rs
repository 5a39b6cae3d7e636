//! The BitTorrent side of btfs.
//!
//! - [`bencode`]: strict, bounded decoding that keeps raw spans; canonical encoding;
//!   a lossless JSON form.
//! - [`metainfo`]: checked `.torrent` parsing (v1, v2, hybrid) with safe file paths.
//! - [`magnet`]: magnet links in and out.
//! - [`geometry`]: piece geometry and the piece ↔ file mapping as checked types.
//! - [`create`]: deterministic, parallel torrent creation.
//! - [`peer_id`]: BEP 20 peer ids.
//! - [`dht`]: the mainline DHT (BEP 5) as a peer source.
//! - [`tracker`]: HTTP and UDP trackers, scrape, and the BEP 12 announcer.
//! - [`listen`]: the peer listeners (one port on IPv4 and IPv6) and our global addresses.
//! - [`ipfilter`]: IP block lists (P2P text, eMule .dat) applied to every peer.
//! - [`peers`]: the stream of candidate peers that every peer source feeds.
//! - [`wire`], [`picker`], [`storage`], [`resume`], [`engine`]: the download engine.

pub mod bencode;
pub mod bitfield;
pub mod create;
pub mod dht;
pub mod engine;
pub mod geometry;
pub mod infohash;
pub mod ipfilter;
pub mod listen;
pub mod magnet;
pub mod metadata;
pub mod metainfo;
pub mod peer_id;
pub mod peers;
pub mod pex;
pub mod picker;
pub mod ratelimit;
pub mod resume;
pub mod session;
pub mod storage;
pub mod tracker;
pub mod wire;

pub use infohash::{InfoHash, InfoHashV2};
pub use magnet::Magnet;
pub use metainfo::Metainfo;

/// Makes ring the process's TLS provider (the one provider btfs links). Idempotent;
/// called before any HTTPS client is built.
pub fn install_tls_provider() {
    // An error means a provider is already installed, which is what is wanted.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
