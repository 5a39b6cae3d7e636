//! The piece picker: which 16 KiB blocks to request from which peer.
//!
//! Policy: blocks of pieces already started come first (so pieces finish and can be
//! verified); then new pieces, rarest first across connected peers with a random
//! tie-break fixed per piece (or lowest index first in sequential mode); when every
//! wanted piece is started and no block is free, endgame: a block already requested
//! from another peer may be requested from one more, and the first copy to arrive
//! cancels the others. Pieces of files not selected are never started.
//!
//! The picker holds no I/O and no clock: callers pass `now`, so timeouts are tested
//! with virtual time.

use crate::bitfield::Bitfield;
use crate::geometry::Geometry;
use crate::wire::BLOCK_SIZE;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Identifies a peer connection within one torrent.
pub type PeerKey = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Block {
    pub piece: u32,
    pub begin: u32,
    pub len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum BlockState {
    Free,
    Requested { by: Vec<PeerKey>, at: Instant },
    Received,
}

#[derive(Debug)]
struct InProgress {
    blocks: Vec<BlockState>,
    received: u32,
    /// Blocks in the `Free` state, so full pieces are skipped without a scan.
    free: u32,
}

/// The outcome of a block arriving.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Stored; `complete` when it was the piece's last block; `cancel` lists other
    /// peers that were asked for the same block (endgame).
    Accepted {
        complete: bool,
        cancel: Vec<PeerKey>,
    },
    /// Nobody asked this peer for it, or it was already received: drop the data.
    Unwanted,
}

#[derive(Debug)]
pub struct Picker {
    geometry: Geometry,
    have: Bitfield,
    wanted: Vec<bool>,
    availability: Vec<u32>,
    tie: Vec<u32>,
    /// Wanted pieces neither had nor started: (availability, tie, piece).
    fresh: BTreeSet<(u32, u32, u32)>,
    started: BTreeMap<u32, InProgress>,
    sequential: bool,
    /// Pieces wanted and not yet had.
    missing: u32,
    /// Most pieces in progress at once: each holds a piece buffer, so this bounds memory
    /// whatever peers do (see [`Picker::set_max_started`]).
    max_started: usize,
}

impl Picker {
    pub fn new(geometry: Geometry, have: Bitfield, wanted: Vec<bool>, sequential: bool) -> Self {
        let n = geometry.piece_count();
        let mut seed = rand::random::<u64>() | 1;
        let tie: Vec<u32> = (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u32
            })
            .collect();
        let mut p = Picker {
            geometry,
            availability: vec![0; n as usize],
            fresh: BTreeSet::new(),
            started: BTreeMap::new(),
            sequential,
            missing: 0,
            tie,
            have,
            wanted,
            max_started: usize::MAX,
        };
        for i in 0..n {
            if p.wanted[i as usize] && !p.have.get(i) {
                p.missing += 1;
                p.fresh.insert(p.key(i));
            }
        }
        p
    }

    /// Bounds the number of pieces in progress (new pieces are not started above it).
    pub fn set_max_started(&mut self, max: usize) {
        self.max_started = max.max(1);
    }

    fn key(&self, i: u32) -> (u32, u32, u32) {
        if self.sequential {
            (0, i, i)
        } else {
            (self.availability[i as usize], self.tie[i as usize], i)
        }
    }

    fn is_fresh(&self, i: u32) -> bool {
        self.wanted[i as usize] && !self.have.get(i) && !self.started.contains_key(&i)
    }

    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    pub fn is_wanted(&self, i: u32) -> bool {
        self.wanted.get(i as usize).copied().unwrap_or(false)
    }

    /// Wanted pieces not yet verified.
    pub fn missing(&self) -> u32 {
        self.missing
    }

    pub fn is_complete(&self) -> bool {
        self.missing == 0
    }

    /// Does a peer with these pieces have something we want?
    pub fn interesting(&self, peer: &Bitfield) -> bool {
        self.fresh.iter().any(|&(_, _, i)| peer.get(i)) || self.started.keys().any(|&i| peer.get(i))
    }

    fn adjust(&mut self, i: u32, up: bool) {
        if i >= self.geometry.piece_count() {
            return;
        }
        let fresh = self.is_fresh(i);
        if fresh {
            self.fresh.remove(&self.key(i));
        }
        let a = &mut self.availability[i as usize];
        *a = if up {
            a.saturating_add(1)
        } else {
            a.saturating_sub(1)
        };
        if fresh {
            self.fresh.insert(self.key(i));
        }
    }

    pub fn peer_has(&mut self, i: u32) {
        self.adjust(i, true);
    }

    pub fn peer_bitfield(&mut self, b: &Bitfield) {
        for i in b.ones() {
            self.adjust(i, true);
        }
    }

    /// A peer went away: its pieces no longer count, its requests are freed.
    pub fn peer_gone(&mut self, peer: PeerKey, b: &Bitfield) {
        for i in b.ones() {
            self.adjust(i, false);
        }
        self.release_all(peer);
    }

    /// Frees every block requested from `peer` (it choked us or left).
    pub fn release_all(&mut self, peer: PeerKey) {
        for prog in self.started.values_mut() {
            for b in &mut prog.blocks {
                if let BlockState::Requested { by, .. } = b {
                    by.retain(|&p| p != peer);
                    if by.is_empty() {
                        *b = BlockState::Free;
                        prog.free += 1;
                    }
                }
            }
        }
    }

    /// Frees one block requested from `peer` (it rejected the request).
    pub fn release(&mut self, peer: PeerKey, block: Block) {
        if !block.begin.is_multiple_of(BLOCK_SIZE) {
            return;
        }
        let Some(prog) = self.started.get_mut(&block.piece) else {
            return;
        };
        if let Some(state) = prog.blocks.get_mut((block.begin / BLOCK_SIZE) as usize) {
            if let BlockState::Requested { by, .. } = state {
                by.retain(|&p| p != peer);
                if by.is_empty() {
                    *state = BlockState::Free;
                    prog.free += 1;
                }
            }
        }
    }

    fn block(&self, piece: u32, idx: usize) -> Block {
        let size = self
            .geometry
            .piece(piece)
            .map_or(0, |p| self.geometry.piece_size(p));
        let begin = idx as u32 * BLOCK_SIZE;
        Block {
            piece,
            begin,
            len: BLOCK_SIZE.min(size - begin),
        }
    }

    fn start(&mut self, i: u32) {
        self.fresh.remove(&self.key(i));
        let size = self
            .geometry
            .piece(i)
            .map_or(0, |p| self.geometry.piece_size(p));
        let n = size.div_ceil(BLOCK_SIZE) as usize;
        self.started.insert(
            i,
            InProgress {
                blocks: vec![BlockState::Free; n],
                received: 0,
                free: n as u32,
            },
        );
    }

    /// Up to `max` blocks to request from `peer`, which has `peer_has`.
    pub fn pick(
        &mut self,
        peer: PeerKey,
        peer_has: &Bitfield,
        max: usize,
        now: Instant,
    ) -> Vec<Block> {
        let mut out = Vec::new();
        if max == 0 {
            return out;
        }
        // 1. Free blocks of started pieces.
        let started: Vec<u32> = self
            .started
            .keys()
            .copied()
            .filter(|&i| peer_has.get(i))
            .collect();
        for i in started {
            self.take_free(i, peer, max, now, &mut out);
            if out.len() >= max {
                return out;
            }
        }
        // 2. New pieces, rarest first (or in order), while under the cap.
        while out.len() < max && self.started.len() < self.max_started {
            let Some(&(_, _, i)) = self.fresh.iter().find(|&&(_, _, i)| peer_has.get(i)) else {
                break;
            };
            self.start(i);
            self.take_free(i, peer, max, now, &mut out);
        }
        // 3. Endgame: nothing fresh is left anywhere; double up on outstanding blocks.
        if out.is_empty() && self.fresh.is_empty() {
            let ids: Vec<u32> = self
                .started
                .keys()
                .copied()
                .filter(|&i| peer_has.get(i))
                .collect();
            'outer: for i in ids {
                let n = self.started[&i].blocks.len();
                for idx in 0..n {
                    let block = self.block(i, idx);
                    if let Some(BlockState::Requested { by, .. }) =
                        self.started.get_mut(&i).map(|p| &mut p.blocks[idx])
                    {
                        if by.len() < 2 && !by.contains(&peer) {
                            by.push(peer);
                            out.push(block);
                            if out.len() >= max {
                                break 'outer;
                            }
                        }
                    }
                }
            }
        }
        out
    }

    fn take_free(&mut self, i: u32, peer: PeerKey, max: usize, now: Instant, out: &mut Vec<Block>) {
        let n = match self.started.get(&i) {
            Some(p) if p.free > 0 => p.blocks.len(),
            _ => return,
        };
        for idx in 0..n {
            if out.len() >= max {
                return;
            }
            let block = self.block(i, idx);
            if let Some(prog) = self.started.get_mut(&i) {
                if prog.free == 0 {
                    return;
                }
                if prog.blocks[idx] == BlockState::Free {
                    prog.blocks[idx] = BlockState::Requested {
                        by: vec![peer],
                        at: now,
                    };
                    prog.free -= 1;
                    out.push(block);
                }
            }
        }
    }

    /// Up to `max` consecutive fresh pieces for a web seed, starting at the lowest fresh
    /// piece at or after `from` (wrapping once) that `usable` accepts; every block of
    /// them is marked requested by `key`, so peers leave them alone until endgame.
    pub fn pick_run(
        &mut self,
        key: PeerKey,
        max: usize,
        from: u32,
        usable: impl Fn(u32) -> bool,
        now: Instant,
    ) -> Vec<u32> {
        let n = self.geometry.piece_count();
        // Fresh pieces, or started ones whose every block is free again (a run that
        // failed, a piece that failed its hash check).
        let takeable = |p: &Self, i: u32| {
            p.is_fresh(i)
                || p.started
                    .get(&i)
                    .is_some_and(|g| g.received == 0 && g.free as usize == g.blocks.len())
        };
        let start = (from..n)
            .chain(0..from.min(n))
            .find(|&i| takeable(self, i) && usable(i));
        let Some(start) = start else {
            return Vec::new();
        };
        let mut run = Vec::new();
        let mut i = start;
        while run.len() < max && i < n && takeable(self, i) && usable(i) {
            if self.is_fresh(i) {
                self.start(i);
            }
            if let Some(prog) = self.started.get_mut(&i) {
                for b in &mut prog.blocks {
                    *b = BlockState::Requested {
                        by: vec![key],
                        at: now,
                    };
                }
                prog.free = 0;
            }
            run.push(i);
            i += 1;
        }
        run
    }

    /// A web seed delivered all of piece `i`: marks every block received if they are
    /// all still requested from `key` (false if someone else got some of them first).
    pub fn take_whole(&mut self, key: PeerKey, i: u32) -> bool {
        let Some(prog) = self.started.get_mut(&i) else {
            return false;
        };
        let all_ours = prog
            .blocks
            .iter()
            .all(|b| matches!(b, BlockState::Requested { by, .. } if by.contains(&key)));
        if all_ours {
            prog.blocks
                .iter_mut()
                .for_each(|b| *b = BlockState::Received);
            prog.received = prog.blocks.len() as u32;
        }
        all_ours
    }

    /// Records a block that arrived from `peer`.
    pub fn received(&mut self, peer: PeerKey, block: Block) -> Arrival {
        let expected = match self.geometry.piece(block.piece) {
            Some(p) => {
                let size = self.geometry.piece_size(p);
                block.begin.is_multiple_of(BLOCK_SIZE)
                    && block.begin < size
                    && block.len == BLOCK_SIZE.min(size - block.begin)
            }
            None => false,
        };
        if !expected {
            return Arrival::Unwanted;
        }
        let Some(prog) = self.started.get_mut(&block.piece) else {
            return Arrival::Unwanted;
        };
        let state = &mut prog.blocks[(block.begin / BLOCK_SIZE) as usize];
        match state {
            BlockState::Requested { by, .. } if by.contains(&peer) => {
                let cancel = by.iter().copied().filter(|&p| p != peer).collect();
                *state = BlockState::Received;
                prog.received += 1;
                Arrival::Accepted {
                    complete: prog.received as usize == prog.blocks.len(),
                    cancel,
                }
            }
            _ => Arrival::Unwanted,
        }
    }

    /// The piece hashed correctly and is stored.
    pub fn verified(&mut self, i: u32) {
        self.started.remove(&i);
        if self.is_fresh(i) {
            self.fresh.remove(&self.key(i));
        }
        if self.have.set(i) && self.wanted.get(i as usize).copied().unwrap_or(false) {
            self.missing -= 1;
        }
    }

    /// The piece failed its hash check: every block is requested again.
    pub fn failed(&mut self, i: u32) {
        if let Some(prog) = self.started.get_mut(&i) {
            prog.blocks.iter_mut().for_each(|b| *b = BlockState::Free);
            prog.received = 0;
            prog.free = prog.blocks.len() as u32;
        }
    }

    /// Keys at or above this belong to web seeds, which hold whole runs of pieces for as
    /// long as a run takes; their requests never expire here.
    pub const WEB_SEED_KEYS: PeerKey = u64::MAX - (1 << 16);

    /// Frees blocks requested from peers longer than `limit` ago; returns them with the
    /// peers that were asked, so those peers can be sent a cancel.
    pub fn expire(&mut self, now: Instant, limit: Duration) -> Vec<(PeerKey, Block)> {
        let mut out = Vec::new();
        let ids: Vec<u32> = self.started.keys().copied().collect();
        for i in ids {
            let n = self.started[&i].blocks.len();
            for idx in 0..n {
                let block = self.block(i, idx);
                let Some(prog) = self.started.get_mut(&i) else {
                    continue;
                };
                if let BlockState::Requested { by, at } = &prog.blocks[idx] {
                    let web_seed = by.iter().any(|&k| k >= Self::WEB_SEED_KEYS);
                    if !web_seed && now.saturating_duration_since(*at) >= limit {
                        out.extend(by.iter().map(|&p| (p, block)));
                        prog.blocks[idx] = BlockState::Free;
                        prog.free += 1;
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picker(pieces: u32, piece_len: u64) -> Picker {
        let g = Geometry::new(u64::from(pieces) * piece_len - 1000, piece_len).unwrap();
        Picker::new(g, Bitfield::new(pieces), vec![true; pieces as usize], false)
    }

    #[test]
    fn rarest_first_and_started_first() {
        let mut p = picker(4, 32 * 1024);
        let t = Instant::now();
        let all = Bitfield::full(4);
        let mut only2 = Bitfield::new(4);
        only2.set(2);
        p.peer_bitfield(&all);
        p.peer_bitfield(&all);
        p.peer_bitfield(&only2);
        // Piece 2 has availability 3; the others 2: a new pick avoids 2.
        let b = p.pick(1, &all, 1, t);
        assert_ne!(b[0].piece, 2);
        // The started piece is finished before another starts.
        let next = p.pick(1, &all, 1, t);
        assert_eq!(next[0].piece, b[0].piece);
        assert_eq!(next[0].begin, BLOCK_SIZE);
    }

    #[test]
    fn blocks_arrive_complete_and_verify() {
        let mut p = picker(2, 32 * 1024);
        let t = Instant::now();
        let all = Bitfield::full(2);
        p.peer_bitfield(&all);
        let blocks = p.pick(7, &all, 10, t);
        assert_eq!(blocks.len(), 4);
        let last = blocks
            .iter()
            .find(|b| b.piece == 1 && b.begin == BLOCK_SIZE)
            .unwrap();
        assert_eq!(
            last.len,
            BLOCK_SIZE - 1000,
            "last block of the odd last piece"
        );
        assert_eq!(
            p.received(8, blocks[0]),
            Arrival::Unwanted,
            "not asked of peer 8"
        );
        let first_piece: Vec<_> = blocks
            .iter()
            .filter(|b| b.piece == blocks[0].piece)
            .collect();
        assert_eq!(
            p.received(7, *first_piece[0]),
            Arrival::Accepted {
                complete: false,
                cancel: vec![]
            }
        );
        assert_eq!(
            p.received(7, *first_piece[0]),
            Arrival::Unwanted,
            "duplicate"
        );
        assert_eq!(
            p.received(7, *first_piece[1]),
            Arrival::Accepted {
                complete: true,
                cancel: vec![]
            }
        );
        p.verified(first_piece[0].piece);
        assert_eq!(p.missing(), 1);
        // Bad sizes or offsets are unwanted.
        let mut wrong = blocks[3];
        wrong.len += 1;
        assert_eq!(p.received(7, wrong), Arrival::Unwanted);
    }

    #[test]
    fn failure_and_expiry_free_blocks() {
        let mut p = picker(1, 32 * 1024);
        let t = Instant::now();
        let all = Bitfield::full(1);
        let b = p.pick(1, &all, 10, t);
        assert_eq!(b.len(), 2);
        assert!(p.pick(2, &all, 10, t).len() == 2, "endgame doubles up");
        assert!(
            p.pick(3, &all, 10, t).is_empty(),
            "at most two requesters per block"
        );
        let expired = p.expire(t + Duration::from_secs(61), Duration::from_secs(60));
        assert_eq!(expired.len(), 4);
        assert_eq!(p.pick(3, &all, 10, t).len(), 2);
        for blk in &b {
            assert!(matches!(p.received(3, *blk), Arrival::Accepted { .. }));
        }
        p.failed(0);
        assert_eq!(
            p.pick(1, &all, 10, t).len(),
            2,
            "a failed piece is fetched again"
        );
    }

    #[test]
    fn endgame_cancels_the_other_copy() {
        let mut p = picker(1, 16 * 1024);
        let t = Instant::now();
        let all = Bitfield::full(1);
        let b = p.pick(1, &all, 10, t)[0];
        assert_eq!(p.pick(2, &all, 10, t), vec![b]);
        assert_eq!(
            p.received(2, b),
            Arrival::Accepted {
                complete: true,
                cancel: vec![1]
            }
        );
    }

    #[test]
    fn web_seed_runs_are_consecutive_and_left_to_it() {
        let g = Geometry::new(8 * 16384, 16384).unwrap();
        let mut p = Picker::new(g, Bitfield::new(8), vec![true; 8], false);
        let t = Instant::now();
        let all = Bitfield::full(8);
        p.peer_bitfield(&all);
        assert_eq!(p.pick_run(99, 3, 0, |i| i != 6, t), vec![0, 1, 2]);
        // The next run starts after a piece a peer has started and skips unusable ones.
        let peer_piece = p.pick(1, &all, 1, t)[0].piece;
        let run2 = p.pick_run(98, 8, 3, |i| i != 6, t);
        assert!(
            !run2.is_empty() && !run2.contains(&peer_piece) && !run2.contains(&6),
            "{run2:?} {peer_piece}"
        );
        assert!(run2.windows(2).all(|w| w[1] == w[0] + 1));
        let run = vec![0, 1, 2];
        // Peers do not get the web seed's blocks before endgame.
        let got: Vec<u32> = p.pick(1, &all, 100, t).iter().map(|b| b.piece).collect();
        assert!(run.iter().all(|r| !got.contains(r)), "{got:?} {run:?}");
        assert!(p.take_whole(99, run[0]));
        assert!(!p.take_whole(98, run[1]), "not asked of 98");
    }

    #[test]
    fn web_seed_runs_do_not_expire_and_failed_pieces_come_back() {
        let g = Geometry::new(2 * 16384, 16384).unwrap();
        let mut p = Picker::new(g, Bitfield::new(2), vec![true; 2], false);
        let t = Instant::now();
        let ws = Picker::WEB_SEED_KEYS;
        assert_eq!(p.pick_run(ws, 2, 0, |_| true, t), vec![0, 1]);
        assert!(p
            .expire(t + Duration::from_secs(600), Duration::from_secs(30))
            .is_empty());
        // The run failed: its blocks are released, and the pieces can be taken again.
        p.release_all(ws);
        assert_eq!(p.pick_run(ws, 2, 0, |_| true, t), vec![0, 1]);
        assert!(p.take_whole(ws, 0));
        p.failed(0);
        p.release_all(ws);
        assert_eq!(p.pick_run(ws, 2, 0, |_| true, t), vec![0, 1]);
    }

    #[test]
    fn pieces_in_progress_are_capped() {
        let g = Geometry::new(10 * 32768, 32768).unwrap();
        let mut p = Picker::new(g, Bitfield::new(10), vec![true; 10], false);
        p.set_max_started(3);
        let t = Instant::now();
        let all = Bitfield::full(10);
        let pieces: std::collections::BTreeSet<u32> =
            p.pick(1, &all, 100, t).iter().map(|b| b.piece).collect();
        assert_eq!(pieces.len(), 3);
        assert!(
            p.pick(2, &all, 100, t).is_empty(),
            "no fourth piece while three are open"
        );
    }

    /// `free` must always equal the number of blocks in the Free state.
    fn assert_free_counts(p: &Picker) {
        for (i, prog) in &p.started {
            let actual = prog
                .blocks
                .iter()
                .filter(|b| **b == BlockState::Free)
                .count();
            assert_eq!(prog.free as usize, actual, "piece {i}");
        }
    }

    #[test]
    fn free_block_counts_stay_exact() {
        let g = Geometry::new(6 * 32768 - 100, 32768).unwrap();
        let mut p = Picker::new(g, Bitfield::new(6), vec![true; 6], false);
        let t = Instant::now();
        let all = Bitfield::full(6);
        p.peer_bitfield(&all);
        let a = p.pick(1, &all, 3, t);
        assert_free_counts(&p);
        p.pick(2, &all, 2, t);
        assert_free_counts(&p);
        p.release(1, a[0]);
        assert_free_counts(&p);
        p.pick_run(Picker::WEB_SEED_KEYS, 2, 0, |_| true, t);
        assert_free_counts(&p);
        p.expire(t + Duration::from_secs(60), Duration::from_secs(30));
        assert_free_counts(&p);
        let b = p.pick(3, &all, 20, t);
        assert_free_counts(&p);
        p.received(3, b[0]);
        p.failed(b[0].piece);
        assert_free_counts(&p);
        p.release_all(3);
        p.release_all(Picker::WEB_SEED_KEYS);
        assert_free_counts(&p);
    }

    #[test]
    fn unwanted_pieces_and_sequential_order() {
        let g = Geometry::new(4 * 16384, 16384).unwrap();
        let mut p = Picker::new(g, Bitfield::new(4), vec![false, true, false, true], true);
        let all = Bitfield::full(4);
        let t = Instant::now();
        let got: Vec<u32> = p.pick(1, &all, 10, t).iter().map(|b| b.piece).collect();
        assert_eq!(got, vec![1, 3]);
        assert_eq!(p.missing(), 2);
        p.release_all(1);
        assert!(p.interesting(&all));
        let mut none = Bitfield::new(4);
        none.set(0);
        assert!(!p.interesting(&none));
    }
}
