//! The BTFS repo: a flatfs-style blockstore, UnixFS import (kubo-identical CIDs) and
//! export, pins, the torrent ↔ CID index, and the repo's config with its profiles.

pub mod blockstore;
pub mod cid;
pub mod config;
pub mod dag;
pub mod dagpb;
pub mod filestore;
pub mod hamt;
pub mod importer;
pub mod refs;
pub mod repo;

pub use blockstore::Blockstore;
pub use cid::Cid;
pub use config::Config;
pub use dag::{Dag, DagError};
pub use importer::{ImportOptions, Node};
pub use repo::{LockMode, PinKind, Repo, RepoError};
