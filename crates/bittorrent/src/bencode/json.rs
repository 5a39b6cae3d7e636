//! A lossless JSON form of bencode, readable where the data is text.
//!
//! | bencode | JSON |
//! | --- | --- |
//! | integer that fits in i64 | JSON number |
//! | any other integer | `{"/int": "<decimal digits>"}` |
//! | string that is UTF-8 text (no control characters but tab, CR, LF) | JSON string |
//! | any other string (hashes, `pieces`, compact peers) | `{"/bytes": "<lowercase hex>"}` |
//! | list | array |
//! | dictionary | object, keys in the order of the input |
//!
//! Dictionary keys follow the same split: a text key is written as is, except that a
//! text key starting with `/` gets one more `/` in front (`"/x"` becomes `"//x"`); a
//! binary key is written `"/bytes:<hex>"`. So an object with the single key `"/int"` or
//! `"/bytes"` can never be a dictionary, and [`from_json`] turns every output of
//! [`to_json`] back into the identical bencode bytes.
//!
//! The JSON parser refuses nesting deeper than 128 levels; bencode decoded with
//! [`super::Limits::METAINFO`] (100 levels) always fits.

use super::{is_canonical_int, Kind, OwnedValue, Value, MAX_VALUES};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use std::cell::Cell;
use std::fmt;

/// Is this string shown as JSON text rather than hex?
fn is_text(b: &[u8]) -> bool {
    match std::str::from_utf8(b) {
        Ok(s) => !s
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')),
        Err(_) => false,
    }
}

fn json_key(k: &[u8]) -> String {
    if is_text(k) {
        // is_text guarantees UTF-8.
        let s = String::from_utf8_lossy(k);
        if s.starts_with('/') {
            format!("/{s}")
        } else {
            s.into_owned()
        }
    } else {
        format!("/bytes:{}", hex::encode(k))
    }
}

/// Serialises a decoded value in the lossless JSON form.
pub struct Json<'v, 'a>(pub &'v Value<'a>);

impl Serialize for Json<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0.kind {
            Kind::Int(text) => match text.parse::<i64>() {
                Ok(n) => s.serialize_i64(n),
                Err(_) => {
                    let mut m = s.serialize_map(Some(1))?;
                    m.serialize_entry("/int", text)?;
                    m.end()
                }
            },
            Kind::Bytes(b) => {
                if is_text(b) {
                    s.serialize_str(&String::from_utf8_lossy(b))
                } else {
                    let mut m = s.serialize_map(Some(1))?;
                    m.serialize_entry("/bytes", &hex::encode(b))?;
                    m.end()
                }
            }
            Kind::List(l) => {
                let mut seq = s.serialize_seq(Some(l.len()))?;
                for v in l {
                    seq.serialize_element(&Json(v))?;
                }
                seq.end()
            }
            Kind::Dict(d) => {
                let mut m = s.serialize_map(Some(d.len()))?;
                for (k, v) in d {
                    m.serialize_entry(&json_key(k), &Json(v))?;
                }
                m.end()
            }
        }
    }
}

/// Writes `value` as pretty-printed lossless JSON.
pub fn to_json(value: &Value<'_>) -> String {
    // Serialising into a String cannot fail: keys are strings and there are no floats.
    serde_json::to_string_pretty(&Json(value)).unwrap_or_default()
}

/// Why a JSON text is not a bencode value in the form [`to_json`] writes.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FromJsonError(String);

/// Parses the lossless JSON form back into a bencode value.
/// At most [`MAX_VALUES`] values (keys included), as for decoding.
pub fn from_json(text: &str) -> Result<OwnedValue, FromJsonError> {
    from_json_max_values(text, MAX_VALUES)
}

/// [`from_json`] with at most `max_values` values ([`MAX_VALUES`], fewer in tests).
fn from_json_max_values(text: &str, max_values: usize) -> Result<OwnedValue, FromJsonError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let count = Cell::new(0);
    let v = Seed(&count, max_values)
        .deserialize(&mut de)
        .map_err(|e| FromJsonError(e.to_string()))?;
    de.end().map_err(|e| FromJsonError(e.to_string()))?;
    Ok(v.0)
}

struct FromJson(OwnedValue);

/// Reads one value, counting it against the limit (the second field) before building
/// it.
#[derive(Clone, Copy)]
struct Seed<'c>(&'c Cell<usize>, usize);

impl Seed<'_> {
    fn count<E: de::Error>(self) -> Result<(), E> {
        let n = self.0.get() + 1;
        if n > self.1 {
            return Err(E::custom(format!(
                "more than {} values (integers, strings, lists, dictionaries and keys)",
                self.1
            )));
        }
        self.0.set(n);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = FromJson;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<FromJson, D::Error> {
        self.count()?;
        d.deserialize_any(ValueVisitor(self))
    }
}

struct ValueVisitor<'c>(Seed<'c>);

impl<'de> Visitor<'de> for ValueVisitor<'_> {
    type Value = FromJson;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer, a string, an array, an object, {\"/int\": …} or {\"/bytes\": …}")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<FromJson, E> {
        Ok(FromJson(OwnedValue::int(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<FromJson, E> {
        Ok(FromJson(OwnedValue::Int(v.to_string())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<FromJson, E> {
        Err(E::custom(format!(
            "{v} is not an integer; bencode has only integers (write large ones as {{\"/int\": \"digits\"}})"
        )))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<FromJson, E> {
        Ok(FromJson(OwnedValue::Bytes(v.as_bytes().to_vec())))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<FromJson, E> {
        Err(E::custom(format!("bencode has no booleans (found {v})")))
    }

    fn visit_unit<E: de::Error>(self) -> Result<FromJson, E> {
        Err(E::custom("bencode has no null"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FromJson, A::Error> {
        let mut items = Vec::new();
        while let Some(FromJson(v)) = seq.next_element_seed(self.0)? {
            items.push(v);
        }
        Ok(FromJson(OwnedValue::List(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FromJson, A::Error> {
        let mut entries: Vec<(String, OwnedValue)> = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            self.0.count()?;
            let FromJson(v) = map.next_value_seed(self.0)?;
            entries.push((k, v));
        }
        if let [(tag, v)] = &entries[..] {
            if tag == "/int" || tag == "/bytes" {
                return tagged(tag, v);
            }
        }
        let mut out: Vec<(Vec<u8>, OwnedValue)> = Vec::with_capacity(entries.len());
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        for (k, v) in entries {
            let key = if let Some(rest) = k.strip_prefix("//") {
                format!("/{rest}").into_bytes()
            } else if let Some(h) = k.strip_prefix("/bytes:") {
                hex::decode(h)
                    .map_err(|e| de::Error::custom(format!("key {k:?} is not hex: {e}")))?
            } else if k.starts_with('/') {
                return Err(de::Error::custom(format!(
                    "key {k:?}: a key starting with '/' is written \"//…\", a binary key \"/bytes:<hex>\""
                )));
            } else {
                k.into_bytes()
            };
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!(
                    "duplicate key {:?}",
                    String::from_utf8_lossy(&key)
                )));
            }
            out.push((key, v));
        }
        Ok(FromJson(OwnedValue::Dict(out)))
    }
}

fn tagged<E: de::Error>(tag: &str, v: &OwnedValue) -> Result<FromJson, E> {
    let OwnedValue::Bytes(text) = v else {
        return Err(E::custom(format!("{tag:?} must hold a string")));
    };
    let text = String::from_utf8_lossy(text);
    if tag == "/int" {
        if is_canonical_int(&text) {
            Ok(FromJson(OwnedValue::Int(text.into_owned())))
        } else {
            Err(E::custom(format!(
                "{text:?} is not a canonical integer (digits, optional '-', no leading zero, no -0)"
            )))
        }
    } else {
        hex::decode(&*text)
            .map(|b| FromJson(OwnedValue::Bytes(b)))
            .map_err(|e| E::custom(format!("\"/bytes\" is not hex: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode::decode;

    fn round_trip(input: &[u8]) -> String {
        let v = decode(input).unwrap();
        let json = to_json(&v);
        let back = from_json(&json).unwrap().encode();
        assert_eq!(back, input, "json was {json}");
        json
    }

    #[test]
    fn too_many_values_are_refused() {
        // A lower limit than MAX_VALUES, so the test builds thousands of values, not
        // millions (the limit is the same code whatever its value).
        const MAX: usize = 4000;
        let mut text = "[".to_string() + &"[],".repeat(MAX - 2);
        text.push_str("[]]");
        assert_eq!(
            from_json_max_values(&text, MAX).unwrap().encode().len(),
            2 * MAX
        );
        let text = "[".to_string() + &"[],".repeat(MAX) + "[]]";
        let e = from_json_max_values(&text, MAX).unwrap_err().to_string();
        assert!(e.contains("more than 4000 values"), "{e}");
        let e = from_json(r#"{"a": 1, "b": [1, 2]}"#)
            .map(|v| v.encode())
            .unwrap();
        assert_eq!(e, b"d1:ai1e1:bli1ei2eee");
    }

    #[test]
    fn readable_and_lossless() {
        let json = round_trip(b"d4:name5:hello6:pieces3:\x00\x01\xff1:zi-5ee");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["name"], "hello");
        assert_eq!(v["pieces"]["/bytes"], "0001ff");
        assert_eq!(v["z"], -5);
    }

    #[test]
    fn ambiguous_shapes_survive() {
        // A dictionary that looks like the tagged forms, keys starting with '/',
        // binary keys, unsorted keys, huge integers.
        round_trip(b"d6:/bytes4:abcde");
        round_trip(b"d4:/int1:1e");
        round_trip(b"d2://0:1:/le7:/bytes:0:e");
        round_trip(b"d2:\xff\x00i1e1:ai2ee");
        round_trip(b"d1:zi1e1:ai2ee");
        round_trip(b"li99999999999999999999999ei-9223372036854775808ee");
        round_trip(b"l5:a\x01b\tcle0:dee");
    }

    #[test]
    fn rejects_what_bencode_cannot_hold() {
        for bad in [
            "1.5",
            "true",
            "null",
            "{\"/int\": \"01\"}",
            "{\"/int\": 5}",
            "{\"/bytes\": \"zz\"}",
            "{\"/x\": 1}",
            "{\"a\": 1, \"a\": 2}",
            "[1] 2",
        ] {
            assert!(from_json(bad).is_err(), "{bad}");
        }
    }
}
