//! Requests in flight under a download limit, and how long a request may wait.
//!
//! Policy: without a limit each peer's pipeline depth follows its rate (set each tick
//! by the torrent loop). Under a limit of R bytes/s the torrent keeps about
//! [`LIMIT_QUEUE_SECS`] seconds of R in flight over all its peers (the budget, in
//! blocks, at least one), applied where requests are filled, so a new peer never
//! starts deeper than that. A peer may use what the others leave of the budget, and
//! always gets a fair share of it: the budget divided among the peers that unchoke us
//! and have pieces we want (choked or uninteresting peers hold none), at least one
//! block. So one seed among fifty choking peers gets the whole budget, and fifty
//! unchoking ones get a few blocks each; the total stays within the budget plus one
//! share a peer (twice the budget, or one block a peer under a tiny limit).
//!
//! A request expires after [`REQUEST_TIMEOUT`], plus under a limit the time the
//! limiter needs for what is ahead of it: the torrent's blocks in flight at R, and the
//! limiter's backlog (data read and waiting, of every torrent sharing it). So a block
//! that is only slow because of our own limit is not given up on and fetched again.
//!
//! Pure functions: no state, no lock.

use crate::wire;
use std::time::Duration;

/// Seconds of the download limit kept in flight over all peers.
pub const LIMIT_QUEUE_SECS: u64 = 3;
/// How long a block request may go unanswered before it goes to another peer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The torrent's budget of blocks in flight under a limit of `rate` bytes/s.
pub fn budget(rate: u64) -> usize {
    let blocks = rate.saturating_mul(LIMIT_QUEUE_SECS) / u64::from(wire::BLOCK_SIZE);
    usize::try_from(blocks).unwrap_or(usize::MAX).max(1)
}

/// How many blocks one peer may have in flight: its own `depth`, capped under a limit
/// by the larger of its fair share of `budget` among `active` peers (those unchoking
/// us that we are interested in, counting it) and what `others` (blocks in flight to
/// the other peers) leave; at least one.
pub fn limited_depth(depth: usize, budget: usize, active: usize, others: usize) -> usize {
    let share = budget / active.max(1);
    let left = budget.saturating_sub(others);
    depth.min(share.max(left).max(1))
}

/// How long a request may wait: [`REQUEST_TIMEOUT`], plus under a limit of `rate`
/// bytes/s the time to take the `in_flight` blocks of this torrent and the limiter's
/// `backlog`.
pub fn request_expiry(limit: Option<(u64, Duration)>, in_flight: usize) -> Duration {
    let Some((rate, backlog)) = limit else {
        return REQUEST_TIMEOUT;
    };
    let bytes = (in_flight as u64).saturating_mul(u64::from(wire::BLOCK_SIZE));
    let ahead =
        Duration::try_from_secs_f64(bytes as f64 / rate.max(1) as f64).unwrap_or(Duration::MAX);
    REQUEST_TIMEOUT
        .saturating_add(ahead)
        .saturating_add(backlog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_a_few_seconds_of_the_limit() {
        // 1 MiB/s: 3 MiB in 16 KiB blocks.
        assert_eq!(budget(1 << 20), 192);
        assert_eq!(budget(1), 1);
        assert_eq!(budget(0), 1);
        // No overflow at the top.
        assert!(budget(u64::MAX) > 1 << 40);
    }

    #[test]
    fn one_unchoking_seed_gets_the_whole_budget() {
        // Fifty peers connected, one unchokes us: it may use all of it.
        assert_eq!(limited_depth(128, 192, 1, 0), 128);
        assert_eq!(limited_depth(1000, 192, 1, 0), 192);
        // A new peer (depth 128) under a small limit starts at the budget.
        assert_eq!(limited_depth(128, budget(64 << 10), 1, 0), 12);
    }

    #[test]
    fn active_peers_share_the_budget() {
        // Fifty unchoking peers: about four blocks each, whatever the others hold.
        assert_eq!(limited_depth(128, 192, 50, 0), 128);
        assert_eq!(limited_depth(128, 192, 50, 180), 12);
        assert_eq!(limited_depth(128, 192, 50, 192), 3);
        // Never below one block, so a tiny limit still downloads from everyone.
        assert_eq!(limited_depth(128, 1, 50, 49), 1);
        assert_eq!(limited_depth(0, 1, 50, 49), 0);
    }

    #[test]
    fn the_expiry_grows_with_what_waits_for_the_limit() {
        assert_eq!(request_expiry(None, 10_000), REQUEST_TIMEOUT);
        // 50 blocks at 16 KiB/s: 50 s more, plus 5 s of backlog.
        let e = request_expiry(Some((16 << 10, Duration::from_secs(5))), 50);
        assert_eq!(e, REQUEST_TIMEOUT + Duration::from_secs(55));
        // At 1 MiB/s with the budget in flight: 3 s more.
        let e = request_expiry(Some((1 << 20, Duration::ZERO)), budget(1 << 20));
        assert_eq!(e, REQUEST_TIMEOUT + Duration::from_secs(3));
        // Absurd values saturate instead of panicking.
        let e = request_expiry(Some((1, Duration::MAX)), usize::MAX);
        assert_eq!(e, Duration::MAX);
    }
}
