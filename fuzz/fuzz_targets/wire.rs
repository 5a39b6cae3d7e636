//! Peer wire input as the engine reads it: a 68-byte handshake, then length-prefixed
//! messages (BEP 3, BEP 6, BEP 10) under the engine's length cap, with BEP 10 extended
//! handshakes, `ut_metadata` and `ut_pex` payloads and bitfields decoded as the engine
//! decodes them. Never panics; an accepted handshake and every decoded message re-encode
//! to exactly the bytes they were read from.
//!
//! Input: two bytes of piece count (which sets the cap, as for a real torrent), then
//! what a peer sends after the TCP connect.

#![no_main]

use bittorrent::bitfield::Bitfield;
use bittorrent::metadata::{self, MetadataMessage};
use bittorrent::pex::{self, PexMessage};
use bittorrent::wire::{self, Handshake, Message};
use libfuzzer_sys::fuzz_target;

fn check_payload(id: u8, payload: &[u8]) {
    match id {
        0 => {
            if let Some(ext) = wire::parse_extended_handshake(payload) {
                assert_ne!(ext.ut_metadata, Some(0));
                assert_ne!(ext.ut_pex, Some(0));
                assert_ne!(ext.reqq, Some(0));
                assert_ne!(ext.port, Some(0));
                // At most 64 bytes of the client name, each replaced by at most 3.
                assert!(ext.client.as_ref().is_none_or(|c| c.len() <= 64 * 3));
            }
        }
        metadata::UT_METADATA => {
            if let Some(MetadataMessage::Data { data, .. }) = MetadataMessage::parse(payload) {
                assert!(data.len() <= payload.len());
            }
        }
        pex::UT_PEX => {
            if let Some(m) = PexMessage::parse(payload) {
                assert!(m.added.len() <= 2 * pex::MAX_PEERS);
                assert!(m.dropped.len() <= 2 * pex::MAX_PEERS);
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((count, stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let pieces = u32::from(u16::from_be_bytes(*count));
    let cap = wire::max_message_len(pieces);
    let Some((hs, mut rest)) = stream.split_first_chunk::<68>() else {
        return;
    };
    if let Ok(h) = Handshake::parse(hs) {
        assert_eq!(&h.to_bytes(), hs, "handshake re-encoding");
    }
    futures_lite::future::block_on(async {
        loop {
            let before = rest;
            let Ok(m) = Message::read(&mut rest, cap).await else {
                return;
            };
            let used = &before[..before.len() - rest.len()];
            assert!(used.len() <= cap as usize + 4, "read past the cap");
            if let Message::Unknown(_) = m {
                continue; // skipped, by design not re-encodable
            }
            let mut again = Vec::new();
            m.encode_into(&mut again);
            assert_eq!(again, used, "{m:?} re-encoding");
            match m {
                Message::Extended { id, payload } => check_payload(id, &payload),
                Message::Bitfield(b) => {
                    if let Some(bf) = Bitfield::from_bytes(&b, pieces) {
                        assert_eq!(bf.as_bytes(), &b[..]);
                        assert!(bf.count() <= pieces);
                    }
                }
                _ => {}
            }
        }
    });
});
