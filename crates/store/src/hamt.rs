//! HAMT-sharded UnixFS directories, as kubo (boxo) builds them for large folders:
//! fanout 256, names hashed with murmur3-x64-64 (the first half of murmur3 x64 128,
//! seed 0, big-endian), one byte of the hash per level. A slot holds either one entry
//! (link name = two hex digits of the slot + the entry name) or a sub-shard (link name =
//! the two hex digits). The shard's UnixFS data carries the occupied slots as a bitfield
//! (bit i at byte len-1-i/8, leading zero bytes dropped), hash type 0x22 and fanout 256.

use crate::cid::{put_varint, Cid};
use crate::dagpb::{Link, PbNode};
use crate::importer::{BlockSink, ImportOptions, Node};
use std::collections::BTreeMap;
use std::io;

/// kubo shards a folder once the sum of its link name and CID lengths exceeds this.
pub const SHARDING_THRESHOLD: usize = 256 * 1024;
const FANOUT: usize = 256;
const MURMUR3_X64_64: u64 = 0x22;

/// Whether kubo would make `entries` a HAMT-sharded directory.
pub fn needs_sharding(entries: &[(String, Node)]) -> bool {
    let estimate: usize = entries
        .iter()
        .map(|(name, n)| name.len() + n.cid.to_bytes().len())
        .sum();
    estimate > SHARDING_THRESHOLD
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The first 64 bits of murmur3 x64 128 with seed 0.
pub fn murmur3_x64_64(data: &[u8]) -> u64 {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    let (mut h1, mut h2) = (0u64, 0u64);
    let blocks = data.chunks_exact(16);
    let tail = blocks.remainder();
    for b in blocks {
        let mut k1 = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        let mut k2 = u64::from_le_bytes(b[8..].try_into().expect("8 bytes"));
        k1 = k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
        h1 ^= k1;
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        k2 = k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
        h2 ^= k2;
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }
    let (mut k1, mut k2) = (0u64, 0u64);
    for (i, &b) in tail.iter().enumerate().skip(8) {
        k2 ^= u64::from(b) << ((i - 8) * 8);
    }
    if tail.len() > 8 {
        h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    }
    for (i, &b) in tail.iter().enumerate().take(8) {
        k1 ^= u64::from(b) << (i * 8);
    }
    if !tail.is_empty() {
        h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    }
    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1.wrapping_add(h2)
}

enum Slot {
    Entry(String, Node),
    Shard(Shard),
}

#[derive(Default)]
struct Shard {
    slots: BTreeMap<u8, Slot>,
}

impl Shard {
    fn insert(&mut self, depth: usize, name: String, node: Node) -> io::Result<()> {
        let hash = murmur3_x64_64(name.as_bytes()).to_be_bytes();
        let Some(&idx) = hash.get(depth) else {
            return Err(io::Error::other(format!(
                "two names hash alike to the last bit: {name:?}"
            )));
        };
        match self.slots.remove(&idx) {
            None => {
                self.slots.insert(idx, Slot::Entry(name, node));
            }
            Some(Slot::Entry(other, other_node)) if other == name => {
                let _ = other_node;
                self.slots.insert(idx, Slot::Entry(name, node));
            }
            Some(Slot::Entry(other, other_node)) => {
                let mut sub = Shard::default();
                sub.insert(depth + 1, other, other_node)?;
                sub.insert(depth + 1, name, node)?;
                self.slots.insert(idx, Slot::Shard(sub));
            }
            Some(Slot::Shard(mut sub)) => {
                sub.insert(depth + 1, name, node)?;
                self.slots.insert(idx, Slot::Shard(sub));
            }
        }
        Ok(())
    }

    fn store(self, opts: &ImportOptions, sink: &dyn BlockSink) -> io::Result<Node> {
        let mut bitfield = [0u8; FANOUT / 8];
        let mut links = Vec::with_capacity(self.slots.len());
        let mut size = 0;
        for (idx, slot) in self.slots {
            bitfield[FANOUT / 8 - 1 - usize::from(idx) / 8] |= 1 << (idx % 8);
            match slot {
                Slot::Entry(name, node) => {
                    size += node.size;
                    links.push(Link {
                        cid: node.cid,
                        name: format!("{idx:02X}{name}"),
                        tsize: node.tsize,
                    });
                }
                Slot::Shard(sub) => {
                    let node = sub.store(opts, sink)?;
                    size += node.size;
                    links.push(Link {
                        cid: node.cid,
                        name: format!("{idx:02X}"),
                        tsize: node.tsize,
                    });
                }
            }
        }
        let first = bitfield
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bitfield.len());
        let bits = &bitfield[first..];
        // UnixFS Data: Type=HAMTShard(5), Data=bitfield, hashType, fanout.
        let mut data = vec![0x08, 0x05, 0x12];
        put_varint(&mut data, bits.len() as u64);
        data.extend_from_slice(bits);
        data.push(0x28);
        put_varint(&mut data, MURMUR3_X64_64);
        data.push(0x30);
        put_varint(&mut data, FANOUT as u64);
        let tsize_links: u64 = links.iter().map(|l| l.tsize).sum();
        let block = PbNode {
            links,
            data: Some(data),
        }
        .encode();
        let cid = Cid::hash(opts.cid_version, crate::cid::DAG_PB, &block);
        sink.put(&cid, &block)?;
        Ok(Node {
            cid,
            size,
            tsize: block.len() as u64 + tsize_links,
        })
    }
}

/// A HAMT-sharded directory over `entries`.
pub fn sharded_directory(
    opts: &ImportOptions,
    entries: Vec<(String, Node)>,
    sink: &dyn BlockSink,
) -> io::Result<Node> {
    let mut root = Shard::default();
    for (name, node) in entries {
        root.insert(0, name, node)?;
    }
    root.store(opts, sink)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_matches_reference_values() {
        // From the reference implementation (Python mmh3), first 64 bits.
        assert_eq!(murmur3_x64_64(b""), 0);
        assert_eq!(murmur3_x64_64(b"hello"), 0xcbd8_a7b3_41bd_9b02);
        assert_eq!(murmur3_x64_64(&[b'a'; 15]), 0x7d07_a8db_fd2e_7fbc);
        assert_eq!(murmur3_x64_64(&[b'b'; 16]), 0x6539_8ffd_c645_1404);
        assert_eq!(murmur3_x64_64(b"file-00001.txt"), 0xf713_ed95_4b32_0baa);
        let seq: Vec<u8> = (0..33).collect();
        assert_eq!(murmur3_x64_64(&seq), 0x7d41_281b_faba_4612);
    }
}
