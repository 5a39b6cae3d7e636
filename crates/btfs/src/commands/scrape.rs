//! `btfs bittorrent scrape`: seeders, leechers and completed counts from one tracker.

use crate::cli::ScrapeArgs;
use crate::output::{emit, Encoding, Output};
use anyhow::{bail, Context};
use bittorrent::tracker::{ScrapeStats, TrackerClient, TrackerConfig};
use bittorrent::InfoHash;
use serde::Serialize;
use std::io::{self, Write};
use std::time::Duration;

pub fn run(args: ScrapeArgs, enc: Encoding) -> anyhow::Result<()> {
    let hashes = parse_hashes(&args.infohashes)?;
    let url = args.tracker.trim();
    let lower = url.to_ascii_lowercase();
    if !["udp://", "http://", "https://"]
        .iter()
        .any(|s| lower.starts_with(s))
    {
        bail!("{url:?} is not a tracker URL: use udp://, http:// or https://");
    }
    let timeout = args.timeout;
    let config = TrackerConfig {
        timeout,
        // Three UDP tries (t/7, 2t/7, 4t/7) fit in the timeout, as BEP 15 doubles them.
        udp_base_timeout: (timeout / 7).max(Duration::from_millis(100)),
        udp_max_retries: 2,
        ..TrackerConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let stats = runtime.block_on(async {
        let client = TrackerClient::new(config)?;
        client.scrape(url, &hashes).await
    })?;
    let report = ScrapeReport(
        hashes
            .iter()
            .zip(stats)
            .map(|(h, s)| (h.to_hex(), s))
            .collect(),
    );
    emit(&report, enc)
}

/// Checks every hash before any network traffic, naming the first bad one.
fn parse_hashes(raw: &[String]) -> anyhow::Result<Vec<InfoHash>> {
    let raw: Vec<&str> = raw
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if raw.is_empty() {
        bail!("give at least one infohash with -i HASH1,HASH2,…");
    }
    raw.iter()
        .enumerate()
        .map(|(i, h)| {
            h.parse::<InfoHash>()
                .map_err(|e| anyhow::anyhow!("infohash {} of {}: {e}", i + 1, raw.len()))
        })
        .collect()
}

/// Scrape results in input order; JSON is go-btfs's list of `{Seeders, Completed, Leechers}`.
pub struct ScrapeReport(Vec<(String, ScrapeStats)>);

impl Serialize for ScrapeReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(_, st)| st))
    }
}

impl Output for ScrapeReport {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        for (hash, s) in &self.0 {
            writeln!(
                w,
                "{hash}  seeders {:>6}  leechers {:>6}  completed {:>6}",
                s.seeders, s.leechers, s.completed
            )?;
        }
        Ok(())
    }
}

/// Parses `15`, `15s`, `500ms`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (examples: 15s, 500ms, 2m)"))?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("{s:?}: unknown unit (use ms, s or m)")),
    };
    if d.is_zero() {
        return Err("the timeout must be more than zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn hashes_are_checked_first() {
        let ok = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a".to_string();
        assert_eq!(parse_hashes(std::slice::from_ref(&ok)).unwrap().len(), 1);
        let e = parse_hashes(&[ok.clone(), ok[..39].to_string()]).unwrap_err();
        assert!(e.to_string().starts_with("infohash 2 of 2"), "{e}");
        assert!(parse_hashes(&[]).is_err());
        assert!(parse_hashes(&[" ".into()]).is_err());
        assert!(parse_hashes(&["zz".repeat(20)]).is_err());
    }
}
