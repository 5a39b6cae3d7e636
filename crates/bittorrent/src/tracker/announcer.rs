//! The multitracker announcer (BEP 12) for one torrent.
//!
//! Tiers are tried in order and the trackers of a tier in an order shuffled once; the
//! first tracker that answers ends the round and moves to the front of its tier.
//! Peers from every answer go to the [`PeerSink`]. [`Schedule`] decides what to send
//! and when, as a pure state machine (tested without sleeping): `started` first,
//! `completed` once when a download finishes during the session, `interval` honoured
//! (never below `min interval` nor [`MIN_INTERVAL_FLOOR`]), failures backed off
//! exponentially, and `stopped` to the last tracker that answered on shutdown.
//! Announces of a private torrent carry BEP 7 `ipv4=`/`ipv6=`, from the addresses we
//! listen on (see [`crate::listen`]); a public torrent's never do (as libtorrent 2.0).

use super::{
    AnnounceRequest, AnnounceResponse, Event, TrackerClient, TrackerError, MIN_INTERVAL_FLOOR,
};
use crate::infohash::InfoHash;
use crate::listen::Listening;
use crate::peers::{PeerSink, PeerSource};
use rand::seq::SliceRandom;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Tracker tiers with BEP 12 ordering.
#[derive(Debug, Clone)]
pub struct Tiers(Vec<Vec<String>>);

impl Tiers {
    /// Drops empty tiers and duplicate URLs, and shuffles each tier once.
    pub fn new(tiers: Vec<Vec<String>>) -> Self {
        let mut seen = std::collections::HashSet::new();
        let mut rng = rand::rng();
        Tiers(
            tiers
                .into_iter()
                .map(|t| {
                    let mut t: Vec<String> =
                        t.into_iter().filter(|u| seen.insert(u.clone())).collect();
                    t.shuffle(&mut rng);
                    t
                })
                .filter(|t| !t.is_empty())
                .collect(),
        )
    }

    /// Every tracker in the order a round tries them: `(tier, index, url)`.
    pub fn order(&self) -> impl Iterator<Item = (usize, usize, &str)> {
        self.0.iter().enumerate().flat_map(|(t, tier)| {
            tier.iter()
                .enumerate()
                .map(move |(i, u)| (t, i, u.as_str()))
        })
    }

    /// Moves a tracker that answered to the front of its tier.
    pub fn promote(&mut self, tier: usize, index: usize) {
        if let Some(t) = self.0.get_mut(tier) {
            if index < t.len() {
                let u = t.remove(index);
                t.insert(0, u);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn tiers(&self) -> &[Vec<String>] {
        &self.0
    }
}

/// Transfer totals for announces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
}

/// Shortest wait after a failed round, doubled per consecutive failure.
pub const RETRY_BASE: Duration = Duration::from_secs(15);
/// Longest wait after failures.
pub const RETRY_MAX: Duration = Duration::from_secs(30 * 60);

/// What to announce and when; no I/O and no clock of its own.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    started_sent: bool,
    completed_sent: bool,
    /// Whether the torrent had bytes left when the session began (only then is
    /// `completed` sent).
    was_incomplete: Option<bool>,
    failures: u32,
}

impl Schedule {
    /// The event for the next announce, given what is left to download.
    pub fn next_event(&mut self, left: u64) -> Event {
        let was_incomplete = *self.was_incomplete.get_or_insert(left > 0);
        if !self.started_sent {
            Event::Started
        } else if left == 0 && was_incomplete && !self.completed_sent {
            Event::Completed
        } else {
            Event::None
        }
    }

    /// Records a successful announce of `event`; returns the wait until the next one.
    pub fn succeeded(&mut self, event: Event, resp: &AnnounceResponse) -> Duration {
        self.failures = 0;
        match event {
            Event::Started => self.started_sent = true,
            Event::Completed => self.completed_sent = true,
            _ => {}
        }
        resp.interval
            .max(resp.min_interval.unwrap_or_default())
            .max(MIN_INTERVAL_FLOOR)
    }

    /// Records a round in which no tracker answered; returns the wait before retrying.
    pub fn failed(&mut self) -> Duration {
        let wait = RETRY_BASE.saturating_mul(1 << self.failures.min(10));
        self.failures += 1;
        wait.min(RETRY_MAX)
    }

    /// Does finishing the download call for an announce before the interval is up?
    pub fn completion_due(&self, left: u64) -> bool {
        left == 0 && self.was_incomplete == Some(true) && self.started_sent && !self.completed_sent
    }
}

/// The last result from one tracker, for status displays.
#[derive(Debug, Clone)]
pub struct TrackerStatus {
    pub url: String,
    pub tier: usize,
    pub at: SystemTime,
    /// Peers received, or the error.
    pub result: Result<usize, String>,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
    pub warning: Option<String>,
}

pub type StatusBoard = Arc<Mutex<HashMap<String, TrackerStatus>>>;

/// One torrent's announcer; run it with [`Announcer::run`].
pub struct Announcer {
    pub client: Arc<TrackerClient>,
    pub tiers: Tiers,
    pub info_hash: InfoHash,
    pub peer_id: [u8; 20],
    pub port: u16,
    pub numwant: Option<u32>,
    pub key: u32,
    pub progress: watch::Receiver<Progress>,
    pub sink: PeerSink,
    pub status: StatusBoard,
    /// What we listen on: which of our addresses a private torrent announces (BEP 7).
    pub listening: Listening,
    /// A private torrent (BEP 27): only then are BEP 7 addresses sent.
    pub private: bool,
}

impl Announcer {
    pub fn new(
        client: Arc<TrackerClient>,
        tiers: Vec<Vec<String>>,
        info_hash: InfoHash,
        peer_id: [u8; 20],
        port: u16,
        progress: watch::Receiver<Progress>,
        sink: PeerSink,
    ) -> Self {
        Announcer {
            client,
            tiers: Tiers::new(tiers),
            info_hash,
            peer_id,
            port,
            numwant: Some(200),
            key: rand::random(),
            progress,
            sink,
            status: Arc::default(),
            listening: Listening::default(),
            private: false,
        }
    }

    fn request(&self, event: Event) -> AnnounceRequest {
        let p = *self.progress.borrow();
        AnnounceRequest {
            info_hash: self.info_hash,
            peer_id: self.peer_id,
            port: self.port,
            uploaded: p.uploaded,
            downloaded: p.downloaded,
            left: p.left,
            event,
            numwant: if event == Event::Stopped {
                Some(0)
            } else {
                self.numwant
            },
            key: self.key,
            ipv4: self.bep7_ipv4(),
            ipv6: self.bep7_ipv6(),
        }
    }

    /// BEP 7 `ipv4=`: private torrents only (as libtorrent 2.0), an address we listen on.
    fn bep7_ipv4(&self) -> Option<Ipv4Addr> {
        self.private
            .then(|| self.listening.ipv4_to_announce())
            .flatten()
    }

    /// BEP 7 `ipv6=`: as [`Announcer::bep7_ipv4`].
    fn bep7_ipv6(&self) -> Option<Ipv6Addr> {
        self.private
            .then(|| self.listening.ipv6_to_announce())
            .flatten()
    }

    /// One BEP 12 round: the first tracker that answers wins. Returns the answer and
    /// the URL that gave it, or the last error.
    pub async fn announce_round(
        &mut self,
        event: Event,
        tracker_ids: &mut HashMap<String, Vec<u8>>,
    ) -> Result<(AnnounceResponse, String), TrackerError> {
        let req = self.request(event);
        let mut last_err = None;
        let order: Vec<(usize, usize, String)> = self
            .tiers
            .order()
            .map(|(t, i, u)| (t, i, u.to_owned()))
            .collect();
        for (tier, index, url) in order {
            let result = self
                .client
                .announce(&url, &req, tracker_ids.get(&url).map(Vec::as_slice))
                .await;
            self.record(&url, tier, &result);
            match result {
                Ok(resp) => {
                    if let Some(id) = &resp.tracker_id {
                        tracker_ids.insert(url.clone(), id.clone());
                    }
                    if let Some(w) = &resp.warning {
                        tracing::warn!(tracker = url, warning = w, "tracker warning");
                    }
                    self.tiers.promote(tier, index);
                    let source = PeerSource::Tracker(url.as_str().into());
                    self.sink.offer(resp.peers.iter().copied(), &source).await;
                    return Ok((resp, url));
                }
                Err(e) => {
                    tracing::debug!(tracker = url, error = %e, "announce failed");
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or(TrackerError::BadUrl {
            url: String::new(),
            reason: "the torrent has no trackers".into(),
        }))
    }

    fn record(&self, url: &str, tier: usize, result: &Result<AnnounceResponse, TrackerError>) {
        if let Ok(mut board) = self.status.lock() {
            board.insert(
                url.to_owned(),
                TrackerStatus {
                    url: url.to_owned(),
                    tier,
                    at: SystemTime::now(),
                    result: result
                        .as_ref()
                        .map(|r| r.peers.len())
                        .map_err(ToString::to_string),
                    seeders: result.as_ref().ok().and_then(|r| r.seeders),
                    leechers: result.as_ref().ok().and_then(|r| r.leechers),
                    warning: result.as_ref().ok().and_then(|r| r.warning.clone()),
                },
            );
        }
    }

    /// Announces until `shutdown` turns true (or its sender is dropped), then sends
    /// `stopped` to the tracker that last answered.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        if self.tiers.is_empty() {
            return;
        }
        let mut schedule = Schedule::default();
        let mut tracker_ids = HashMap::new();
        let mut last_ok: Option<String> = None;
        loop {
            let left = self.progress.borrow().left;
            let event = schedule.next_event(left);
            let wait = match self.announce_round(event, &mut tracker_ids).await {
                Ok((resp, url)) => {
                    last_ok = Some(url);
                    schedule.succeeded(event, &resp)
                }
                Err(_) => schedule.failed(),
            };
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    r = shutdown.changed() => {
                        if r.is_err() || *shutdown.borrow() {
                            self.stop(last_ok.as_deref(), &tracker_ids).await;
                            return;
                        }
                    }
                    r = self.progress.changed() => {
                        if r.is_err() {
                            // The torrent is gone.
                            self.stop(last_ok.as_deref(), &tracker_ids).await;
                            return;
                        }
                        if schedule.completion_due(self.progress.borrow().left) {
                            break;
                        }
                    }
                }
            }
            if self.sink.is_closed() {
                self.stop(last_ok.as_deref(), &tracker_ids).await;
                return;
            }
        }
    }

    async fn stop(&self, url: Option<&str>, tracker_ids: &HashMap<String, Vec<u8>>) {
        let Some(url) = url else { return };
        let req = self.request(Event::Stopped);
        if let Err(e) = self
            .client
            .announce(url, &req, tracker_ids.get(url).map(Vec::as_slice))
            .await
        {
            tracing::debug!(tracker = url, error = %e, "stopped announce failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BEP 7 addresses go with private torrents only, and only from what we listen on.
    #[tokio::test]
    async fn only_private_torrents_announce_their_addresses() {
        let client = Arc::new(TrackerClient::new(super::super::TrackerConfig::default()).unwrap());
        let (_progress_tx, progress) = watch::channel(Progress::default());
        let (sink, _stream) = crate::peers::peer_channel(1);
        let mut a = Announcer::new(
            client,
            vec![vec!["http://t.invalid/announce".into()]],
            InfoHash([1; 20]),
            [b'p'; 20],
            6881,
            progress,
            sink,
        );
        let (v4, v6): (Ipv4Addr, Ipv6Addr) = (
            "81.2.69.160".parse().unwrap(),
            "2a00:1450::9".parse().unwrap(),
        );
        a.listening = Listening::new(vec![v4.into(), v6.into()], false);
        let sent = |a: &Announcer| {
            let r = a.request(Event::Started);
            (r.ipv4, r.ipv6)
        };
        assert_eq!(sent(&a), (None, None), "a public torrent");
        a.private = true;
        assert_eq!(sent(&a), (Some(v4), Some(v6)));
        a.listening = Listening::new(
            vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            false,
        );
        assert_eq!(sent(&a), (None, None), "loopback is never announced");
    }

    fn resp(interval: u64, min: Option<u64>) -> AnnounceResponse {
        AnnounceResponse {
            interval: Duration::from_secs(interval),
            min_interval: min.map(Duration::from_secs),
            ..Default::default()
        }
    }

    #[test]
    fn events_for_a_download() {
        let mut s = Schedule::default();
        assert_eq!(s.next_event(100), Event::Started);
        // A failed round does not count as having started.
        assert_eq!(s.failed(), Duration::from_secs(15));
        assert_eq!(s.next_event(100), Event::Started);
        assert_eq!(
            s.succeeded(Event::Started, &resp(1800, None)),
            Duration::from_secs(1800)
        );
        assert_eq!(s.next_event(50), Event::None);
        assert!(!s.completion_due(50));
        assert!(s.completion_due(0));
        assert_eq!(s.next_event(0), Event::Completed);
        s.succeeded(Event::Completed, &resp(1800, None));
        assert!(!s.completion_due(0));
        assert_eq!(s.next_event(0), Event::None, "completed is sent once");
    }

    #[test]
    fn a_seed_never_sends_completed() {
        let mut s = Schedule::default();
        assert_eq!(s.next_event(0), Event::Started);
        s.succeeded(Event::Started, &resp(60, None));
        assert!(!s.completion_due(0));
        assert_eq!(s.next_event(0), Event::None);
    }

    #[test]
    fn intervals_and_backoff() {
        let mut s = Schedule::default();
        assert_eq!(
            s.succeeded(Event::None, &resp(100, Some(300))),
            Duration::from_secs(300)
        );
        assert_eq!(s.succeeded(Event::None, &resp(1, None)), MIN_INTERVAL_FLOOR);
        let waits: Vec<u64> = (0..10).map(|_| s.failed().as_secs()).collect();
        assert_eq!(waits, [15, 30, 60, 120, 240, 480, 960, 1800, 1800, 1800]);
        s.succeeded(Event::None, &resp(100, None));
        assert_eq!(s.failed(), RETRY_BASE, "success resets the back-off");
    }

    #[test]
    fn tiers_shuffle_within_and_promote() {
        let t = Tiers::new(vec![
            vec!["a".into(), "b".into(), "c".into()],
            vec![],
            vec!["d".into(), "a".into()],
        ]);
        assert_eq!(t.tiers().len(), 2, "empty tier dropped");
        assert_eq!(t.tiers()[1], vec!["d"], "duplicate URL dropped");
        let mut first: Vec<&str> = t.tiers()[0].iter().map(String::as_str).collect();
        first.sort();
        assert_eq!(first, ["a", "b", "c"]);
        let mut t = t;
        let last = t.tiers()[0][2].clone();
        t.promote(0, 2);
        assert_eq!(t.tiers()[0][0], last);
        let order: Vec<(usize, usize)> = t.order().map(|(a, b, _)| (a, b)).collect();
        assert_eq!(order, [(0, 0), (0, 1), (0, 2), (1, 0)]);
    }
}
