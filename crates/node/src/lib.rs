//! The BTFS node: the HTTP gateway over the local store, and the bridge that imports
//! BitTorrent downloads into it.

pub mod bridge;
pub mod dashboard;
pub mod gateway;
pub mod host;
pub mod http;
pub mod portmap;
pub mod seed;
