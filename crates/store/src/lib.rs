//! The BTFS repo: a flatfs-style blockstore, UnixFS import (kubo-identical CIDs) and
//! export, pins, and the torrent ↔ CID index.

pub mod blockstore;
pub mod cid;
pub mod dag;
pub mod dagpb;
pub mod hamt;
pub mod importer;
pub mod repo;

pub use blockstore::Blockstore;
pub use cid::Cid;
pub use dag::{Dag, DagError};
pub use importer::{ImportOptions, Node};
pub use repo::{LockMode, PinKind, Repo, RepoError};
