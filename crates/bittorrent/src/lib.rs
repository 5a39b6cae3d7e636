//! The BitTorrent side of btfs.
//!
//! - [`bencode`]: strict, bounded decoding that keeps raw spans; canonical encoding;
//!   a lossless JSON form.
//! - [`metainfo`]: checked `.torrent` parsing (v1, v2, hybrid) with safe file paths.
//! - [`magnet`]: magnet links in and out.
//! - [`geometry`]: piece geometry and the piece ↔ file mapping as checked types.
//! - [`create`]: deterministic, parallel torrent creation.
//! - [`peer_id`]: BEP 20 peer ids.

pub mod bencode;
pub mod create;
pub mod geometry;
pub mod infohash;
pub mod magnet;
pub mod metainfo;
pub mod peer_id;

pub use infohash::{InfoHash, InfoHashV2};
pub use magnet::Magnet;
pub use metainfo::Metainfo;
