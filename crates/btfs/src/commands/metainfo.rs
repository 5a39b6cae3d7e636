//! `btfs bittorrent metainfo`: what a .torrent file or a magnet link describes.
//!
//! JSON field names follow go-btfs (`Name`, `InfoHash`, `PieceHashes`, …) so scripts
//! written for it keep working; fields go-btfs lacks (v2 hash, private flag, magnet)
//! are added after them.

use super::read_input;
use crate::cli::MetainfoArgs;
use crate::output::{clean, emit, human_size, utc_date, Encoding, Output};
use anyhow::Context;
use bittorrent::{Magnet, Metainfo};
use serde::Serialize;
use std::io::{self, Write};

pub fn run(args: MetainfoArgs, enc: Encoding) -> anyhow::Result<()> {
    if let Some(m) = args.magnet {
        let magnet: Magnet = m.parse().context("reading the magnet link")?;
        // The DHT as download runs it: on the IPv4 listen address of the config.
        let flags = crate::cli::NetArgs {
            dht_bootstrap: args.dht_bootstrap.clone(),
            no_dht: args.no_dht,
            ip_filter: args.ip_filter.clone(),
            ..Default::default()
        };
        let settings =
            super::settings::resolve(&super::settings::config()?, &flags, &super::btfs_path()?)?;
        let dht_usable = settings
            .dht
            .as_ref()
            .is_some_and(|d| !d.bootstrap.is_empty());
        let no_source =
            magnet.peers.is_empty() && magnet.trackers.is_empty() && args.peers.is_empty();
        if !args.offline {
            settings.note_dht_off();
        }
        if args.offline || (no_source && !dht_usable) {
            // Nobody to ask: show what the link holds.
            if args.save.is_some() {
                anyhow::bail!("--save needs the metadata, and there is no peer or tracker to fetch it from (the link names none, or --offline; add --peer IP:PORT), and no DHT (off, or Bittorrent.DHT.Bootstrap is empty)");
            }
            return emit(&MagnetReport::from(&magnet), enc);
        }
        // Before anything reaches the network: a list that does not parse stops here.
        let filter = super::settings::load_ip_filter(settings.ip_filter.as_ref())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        // One JSON document on stdout: a warning goes to stderr. No peer listeners here,
        // so the DHT's UDP port is any (or --dht-port).
        let node = super::magnet::magnet_dht(&runtime, &settings, no_source, Encoding::Text, None)?;
        let fetched = runtime.block_on(super::magnet::fetch(
            &magnet,
            &args.peers,
            true,
            args.timeout,
            node,
            settings.no_dht_reason(),
            filter,
            None,
        ))?;
        if let Some(path) = &args.save {
            std::fs::write(path, &fetched.torrent)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        return emit(&TorrentReport::from(&fetched.meta), enc);
    }
    let Some(path) = args.torrent else {
        anyhow::bail!("give a .torrent file with -t FILE or a magnet link with -m MAGNET");
    };
    let bytes = read_input(&path)?;
    let m = Metainfo::from_bytes(&bytes).with_context(|| format!("{}", path.display()))?;
    emit(&TorrentReport::from(&m), enc)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FileReport {
    length: u64,
    path: Vec<String>,
    path_utf8: Vec<String>,
    /// Where the file is stored below the torrent's folder (names made safe, repeats
    /// renamed): what `download`, the store and `serve` use.
    stored_path: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    symlink: Option<Vec<String>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    padding: bool,
}

#[derive(Serialize)]
pub struct TorrentReport {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Name.Utf8")]
    name_utf8: String,
    /// The folder (or file) name the torrent is stored under.
    #[serde(rename = "StoredName")]
    stored_name: String,
    #[serde(rename = "NumPieces")]
    num_pieces: u64,
    #[serde(rename = "PieceLength")]
    piece_length: u64,
    /// v1 infohash (the truncated v2 hash for v2-only torrents).
    #[serde(rename = "InfoHash")]
    info_hash: String,
    #[serde(rename = "NumFiles")]
    num_files: usize,
    #[serde(rename = "TotalLength")]
    total_length: u64,
    #[serde(rename = "Announce")]
    announce: String,
    #[serde(rename = "AnnounceList")]
    announce_list: Vec<Vec<String>>,
    #[serde(rename = "UrlList")]
    url_list: Vec<String>,
    #[serde(rename = "Files")]
    files: Vec<FileReport>,
    #[serde(rename = "Nodes")]
    nodes: Vec<String>,
    #[serde(rename = "PieceHashes")]
    piece_hashes: Vec<String>,
    #[serde(rename = "InfoHashV2", skip_serializing_if = "Option::is_none")]
    info_hash_v2: Option<String>,
    #[serde(rename = "MetaVersion")]
    meta_version: i64,
    #[serde(rename = "Private")]
    private: bool,
    #[serde(rename = "HttpSeeds")]
    http_seeds: Vec<String>,
    #[serde(rename = "CreationDate", skip_serializing_if = "Option::is_none")]
    creation_date: Option<i64>,
    #[serde(rename = "Comment", skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
    #[serde(rename = "CreatedBy", skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
    #[serde(rename = "Magnet")]
    magnet: String,
    #[serde(rename = "Warnings", skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

impl From<&Metainfo> for TorrentReport {
    fn from(m: &Metainfo) -> Self {
        let info = &m.info;
        TorrentReport {
            name: info.name.clone(),
            name_utf8: info.name_utf8.clone().unwrap_or_default(),
            stored_name: info.stored_name.clone(),
            num_pieces: info.piece_count(),
            piece_length: info.piece_length,
            info_hash: m.wire_info_hash().to_hex(),
            num_files: info.files.iter().filter(|f| !f.attr.pad).count(),
            total_length: info.content_length(),
            announce: m.announce.clone().unwrap_or_default(),
            announce_list: m.announce_list.clone(),
            url_list: m.url_list.clone(),
            files: info
                .files
                .iter()
                .map(|f| FileReport {
                    length: f.length,
                    path: f.path.clone(),
                    path_utf8: f.path_utf8.clone().unwrap_or_default(),
                    stored_path: f.stored.clone(),
                    symlink: f.attr.symlink.clone(),
                    padding: f.attr.pad,
                })
                .collect(),
            nodes: m.nodes.iter().map(|(h, p)| format!("{h}:{p}")).collect(),
            piece_hashes: info.pieces.iter().map(hex::encode).collect(),
            info_hash_v2: m.info_hash_v2.map(|h| h.to_hex()),
            meta_version: info.meta_version.unwrap_or(1),
            private: info.private,
            http_seeds: m.httpseeds.clone(),
            creation_date: m.creation_date,
            comment: m.comment.clone(),
            created_by: m.created_by.clone(),
            magnet: m.magnet().to_string(),
            warnings: m.warnings.clone(),
        }
    }
}

/// One `Label:     value` line; the value comes from the torrent, so its control
/// characters are escaped.
fn label(w: &mut dyn Write, name: &str, value: impl std::fmt::Display) -> io::Result<()> {
    writeln!(w, "{name:<12} {}", clean(&value.to_string()))
}

impl Output for TorrentReport {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        let name = if self.name_utf8.is_empty() {
            &self.name
        } else {
            &self.name_utf8
        };
        if *name == self.stored_name {
            label(w, "Name:", name)?;
        } else {
            label(
                w,
                "Name:",
                format!("{} (in the torrent: {name:?})", self.stored_name),
            )?;
        }
        let kind = match (self.meta_version, self.piece_hashes.is_empty()) {
            (2, false) => "hybrid v1 + v2",
            (2, true) => "v2",
            _ => "v1",
        };
        if self.piece_hashes.is_empty() {
            label(
                w,
                "Info hash:",
                format!("{} (v2, truncated)", self.info_hash),
            )?;
        } else {
            label(w, "Info hash:", &self.info_hash)?;
        }
        if let Some(v2) = &self.info_hash_v2 {
            label(w, "Info hash v2:", v2)?;
        }
        label(w, "Format:", kind)?;
        label(
            w,
            "Size:",
            format!(
                "{} ({} bytes) in {} pieces of {}",
                human_size(self.total_length),
                self.total_length,
                self.num_pieces,
                human_size(self.piece_length)
            ),
        )?;
        label(w, "Private:", if self.private { "yes" } else { "no" })?;
        if let Some(d) = self.creation_date {
            label(w, "Created:", utc_date(d))?;
        }
        if let Some(c) = &self.created_by {
            label(w, "Created by:", c)?;
        }
        if let Some(c) = &self.comment {
            label(w, "Comment:", c)?;
        }
        let tiers: Vec<Vec<String>> = if self.announce_list.is_empty() && !self.announce.is_empty()
        {
            vec![vec![self.announce.clone()]]
        } else {
            self.announce_list.clone()
        };
        for (i, tier) in tiers.iter().enumerate() {
            label(
                w,
                if i == 0 { "Trackers:" } else { "" },
                format!("tier {}: {}", i + 1, tier.join(" ")),
            )?;
        }
        for (i, u) in self.url_list.iter().chain(&self.http_seeds).enumerate() {
            label(w, if i == 0 { "Web seeds:" } else { "" }, u)?;
        }
        if !self.nodes.is_empty() {
            label(w, "DHT nodes:", self.nodes.join(" "))?;
        }
        writeln!(w, "Files ({}):", self.num_files)?;
        for f in self.files.iter().filter(|f| !f.padding) {
            let written = if f.path_utf8.is_empty() {
                &f.path
            } else {
                &f.path_utf8
            };
            let mut line = format!(
                "  {:>12}  {}",
                human_size(f.length),
                clean(&f.stored_path.join("/"))
            );
            if let Some(target) = &f.symlink {
                line += &format!(
                    " -> {} (a symlink; stored as an empty file)",
                    clean(&target.join("/"))
                );
            }
            if *written != f.stored_path && (self.files.len() > 1 || *written != [name.clone()]) {
                line += &format!(" (in the torrent: {:?})", written.join("/"));
            }
            writeln!(w, "{line}")?;
        }
        label(w, "Magnet:", &self.magnet)?;
        for warning in &self.warnings {
            label(w, "Warning:", warning)?;
        }
        Ok(())
    }
}

/// What a magnet link holds by itself (no info dictionary until it is fetched).
#[derive(Serialize)]
pub struct MagnetReport {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "InfoHash")]
    info_hash: String,
    #[serde(rename = "InfoHashV2", skip_serializing_if = "Option::is_none")]
    info_hash_v2: Option<String>,
    #[serde(rename = "Announce")]
    announce: String,
    #[serde(rename = "AnnounceList")]
    announce_list: Vec<Vec<String>>,
    #[serde(rename = "UrlList")]
    url_list: Vec<String>,
    #[serde(rename = "Peers")]
    peers: Vec<String>,
    #[serde(rename = "TotalLength", skip_serializing_if = "Option::is_none")]
    total_length: Option<u64>,
    #[serde(rename = "SelectOnly", skip_serializing_if = "Vec::is_empty")]
    select_only: Vec<[u32; 2]>,
    #[serde(rename = "Magnet")]
    magnet: String,
    /// False: files and pieces come from peers (BEP 9), which this command did not ask.
    #[serde(rename = "MetadataFetched")]
    metadata_fetched: bool,
}

impl From<&Magnet> for MagnetReport {
    fn from(m: &Magnet) -> Self {
        MagnetReport {
            name: m.display_name.clone().unwrap_or_default(),
            info_hash: m.wire_info_hash().to_hex(),
            info_hash_v2: m.info_hash_v2.map(|h| h.to_hex()),
            announce: m.trackers.first().cloned().unwrap_or_default(),
            announce_list: m.trackers.iter().map(|t| vec![t.clone()]).collect(),
            url_list: m.web_seeds.clone(),
            peers: m.peers.iter().map(ToString::to_string).collect(),
            total_length: m.exact_length,
            select_only: m
                .select_only
                .iter()
                .map(|r| [*r.start(), *r.end()])
                .collect(),
            magnet: m.to_string(),
            metadata_fetched: false,
        }
    }
}

impl Output for MagnetReport {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        label(
            w,
            "Name:",
            if self.name.is_empty() {
                "(not given)"
            } else {
                &self.name
            },
        )?;
        label(w, "Info hash:", &self.info_hash)?;
        if let Some(v2) = &self.info_hash_v2 {
            label(w, "Info hash v2:", v2)?;
        }
        if let Some(l) = self.total_length {
            label(w, "Size:", format!("{} ({l} bytes)", human_size(l)))?;
        }
        for (i, t) in self.announce_list.iter().flatten().enumerate() {
            label(w, if i == 0 { "Trackers:" } else { "" }, t)?;
        }
        for (i, u) in self.url_list.iter().enumerate() {
            label(w, if i == 0 { "Web seeds:" } else { "" }, u)?;
        }
        if !self.peers.is_empty() {
            label(w, "Peers:", self.peers.join(" "))?;
        }
        if !self.select_only.is_empty() {
            let so: Vec<String> = self
                .select_only
                .iter()
                .map(|[a, b]| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            label(w, "Files:", format!("only {}", so.join(",")))?;
        }
        label(w, "Magnet:", &self.magnet)?;
        writeln!(
            w,
            "Files and pieces are not in the link itself; they come from peers when it is downloaded."
        )
    }
}
