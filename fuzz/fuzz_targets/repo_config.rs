//! JSON the repo reads from disk: the `config` file (listen addresses included) and the
//! torrent and served records kept in `datastore.redb`. Never panics, and what parses
//! serialises to JSON that parses to the same value.
//!
//! Input: one byte (0: config, 1: torrent record, 2: served record), then the JSON.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use store::repo::{parse_listen_addr, Config, ServedRecord, TorrentRecord};

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    text: &str,
) -> Option<T> {
    let v: T = serde_json::from_str(text).ok()?;
    let out = serde_json::to_string_pretty(&v).expect("serialises");
    assert_eq!(serde_json::from_str::<T>(&out).ok().as_ref(), Some(&v));
    Some(v)
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    // The repo reads its files as UTF-8 text first.
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match kind % 3 {
        0 => {
            if let Some(c) = round_trip::<Config>(text) {
                parse_listen_addr(&c.addresses.api);
                parse_listen_addr(&c.addresses.gateway);
            }
            parse_listen_addr(text);
        }
        1 => {
            round_trip::<TorrentRecord>(text);
        }
        _ => {
            round_trip::<ServedRecord>(text);
        }
    }
});
