//! DAG-PB blocks and the UnixFS `Data` message inside them, encoded byte for byte as
//! kubo encodes them: links (Hash, Name, Tsize) before Data, file links with an empty
//! Name, UnixFS fields in field order with `blocksizes` unpacked.

use crate::cid::{get_varint, put_varint, Cid};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub cid: Cid,
    pub name: String,
    /// Cumulative size: the child block plus everything below it.
    pub tsize: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PbNode {
    pub links: Vec<Link>,
    pub data: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed DAG-PB block: {0}")]
pub struct DecodeError(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Raw = 0,
    Directory = 1,
    File = 2,
    Metadata = 3,
    Symlink = 4,
    HamtShard = 5,
}

/// The UnixFS message carried in a DAG-PB node's Data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixFs {
    pub kind: DataType,
    pub data: Option<Vec<u8>>,
    pub filesize: Option<u64>,
    pub blocksizes: Vec<u64>,
}

fn put_bytes(out: &mut Vec<u8>, tag: u8, b: &[u8]) {
    out.push(tag);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_uint(out: &mut Vec<u8>, tag: u8, v: u64) {
    out.push(tag);
    put_varint(out, v);
}

/// One protobuf field: (field number, wire type, value or bytes).
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn fields(b: &[u8]) -> impl Iterator<Item = Result<(u64, Field<'_>), DecodeError>> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= b.len() {
            return None;
        }
        let r = (|| {
            let key = get_varint(b, &mut pos).ok_or(DecodeError("bad field key"))?;
            let (num, wire) = (key >> 3, key & 7);
            match wire {
                0 => {
                    let v = get_varint(b, &mut pos).ok_or(DecodeError("bad varint"))?;
                    Ok((num, Field::Varint(v)))
                }
                2 => {
                    let len = get_varint(b, &mut pos).ok_or(DecodeError("bad length"))?;
                    let end = usize::try_from(len)
                        .ok()
                        .and_then(|l| pos.checked_add(l))
                        .filter(|&e| e <= b.len())
                        .ok_or(DecodeError("length past the end"))?;
                    let v = &b[pos..end];
                    pos = end;
                    Ok((num, Field::Bytes(v)))
                }
                _ => Err(DecodeError("unexpected wire type")),
            }
        })();
        if r.is_err() {
            pos = b.len();
        }
        Some(r)
    })
}

impl PbNode {
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(self.data.as_ref().map_or(0, Vec::len) + self.links.len() * 48 + 8);
        let mut link = Vec::with_capacity(96);
        for l in &self.links {
            link.clear();
            put_bytes(&mut link, 0x0a, &l.cid.to_bytes());
            put_bytes(&mut link, 0x12, l.name.as_bytes());
            put_uint(&mut link, 0x18, l.tsize);
            put_bytes(&mut out, 0x12, &link);
        }
        if let Some(d) = &self.data {
            put_bytes(&mut out, 0x0a, d);
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<PbNode, DecodeError> {
        let mut node = PbNode::default();
        for f in fields(b) {
            match f? {
                (1, Field::Bytes(d)) => {
                    if node.data.is_some() {
                        return Err(DecodeError("Data twice"));
                    }
                    node.data = Some(d.to_vec());
                }
                (2, Field::Bytes(l)) => {
                    if node.data.is_some() {
                        return Err(DecodeError("Links after Data"));
                    }
                    node.links.push(decode_link(l)?);
                }
                _ => return Err(DecodeError("unknown field")),
            }
        }
        Ok(node)
    }

    /// The UnixFS message of this node.
    pub fn unixfs(&self) -> Result<UnixFs, DecodeError> {
        UnixFs::decode(self.data.as_deref().ok_or(DecodeError("no UnixFS data"))?)
    }
}

fn decode_link(b: &[u8]) -> Result<Link, DecodeError> {
    let (mut cid, mut name, mut tsize) = (None, String::new(), 0);
    for f in fields(b) {
        match f? {
            (1, Field::Bytes(h)) => {
                cid = Some(Cid::from_bytes(h).map_err(|_| DecodeError("link with a bad CID"))?)
            }
            (2, Field::Bytes(n)) => {
                name =
                    String::from_utf8(n.to_vec()).map_err(|_| DecodeError("link name not UTF-8"))?
            }
            (3, Field::Varint(t)) => tsize = t,
            _ => return Err(DecodeError("unknown link field")),
        }
    }
    Ok(Link {
        cid: cid.ok_or(DecodeError("link without a hash"))?,
        name,
        tsize,
    })
}

impl UnixFs {
    pub fn file(data: Option<&[u8]>, filesize: u64, blocksizes: Vec<u64>) -> UnixFs {
        UnixFs {
            kind: DataType::File,
            data: data.map(<[u8]>::to_vec),
            filesize: Some(filesize),
            blocksizes,
        }
    }

    pub fn directory() -> UnixFs {
        UnixFs {
            kind: DataType::Directory,
            data: None,
            filesize: None,
            blocksizes: Vec::new(),
        }
    }

    pub fn symlink(target: &[u8]) -> UnixFs {
        UnixFs {
            kind: DataType::Symlink,
            data: Some(target.to_vec()),
            filesize: None,
            blocksizes: Vec::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.data.as_ref().map_or(0, Vec::len) + 16 + 4 * self.blocksizes.len(),
        );
        put_uint(&mut out, 0x08, self.kind as u64);
        if let Some(d) = &self.data {
            put_bytes(&mut out, 0x12, d);
        }
        if let Some(s) = self.filesize {
            put_uint(&mut out, 0x18, s);
        }
        for &b in &self.blocksizes {
            put_uint(&mut out, 0x20, b);
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<UnixFs, DecodeError> {
        let mut u = UnixFs {
            kind: DataType::Raw,
            data: None,
            filesize: None,
            blocksizes: Vec::new(),
        };
        let mut kind = None;
        for f in fields(b) {
            match f? {
                (1, Field::Varint(t)) => {
                    kind = Some(match t {
                        0 => DataType::Raw,
                        1 => DataType::Directory,
                        2 => DataType::File,
                        3 => DataType::Metadata,
                        4 => DataType::Symlink,
                        5 => DataType::HamtShard,
                        _ => return Err(DecodeError("unknown UnixFS type")),
                    })
                }
                (2, Field::Bytes(d)) => u.data = Some(d.to_vec()),
                (3, Field::Varint(s)) => u.filesize = Some(s),
                (4, Field::Varint(s)) => u.blocksizes.push(s),
                (4, Field::Bytes(packed)) => {
                    let mut p = 0;
                    while p < packed.len() {
                        u.blocksizes
                            .push(get_varint(packed, &mut p).ok_or(DecodeError("bad blocksizes"))?);
                    }
                }
                // hashType, fanout, mode, mtime: accepted, not used here.
                (5..=8, _) => {}
                _ => return Err(DecodeError("unknown UnixFS field")),
            }
        }
        u.kind = kind.ok_or(DecodeError("UnixFS without a type"))?;
        Ok(u)
    }
}

/// Where a leaf node's file content sits inside its block: the byte range of the UnixFS
/// `Data` field, found without copying. `None` for nodes with links or no content.
pub fn leaf_content_range(block: &[u8]) -> Option<std::ops::Range<usize>> {
    let mut pos = 0;
    let mut data = None;
    for f in fields(block) {
        match f.ok()? {
            (1, Field::Bytes(d)) => data = Some(d),
            _ => return None,
        }
    }
    let d = data?;
    let base = d.as_ptr() as usize - block.as_ptr() as usize;
    let mut content = None;
    while pos < d.len() {
        let key = get_varint(d, &mut pos)?;
        match key & 7 {
            0 => {
                get_varint(d, &mut pos)?;
            }
            2 => {
                let len = usize::try_from(get_varint(d, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|&e| e <= d.len())?;
                if key >> 3 == 2 {
                    content = Some(base + pos..base + end);
                }
                pos = end;
            }
            _ => return None,
        }
    }
    Some(content.unwrap_or(base..base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_file_anchor() {
        let node = PbNode {
            links: vec![],
            data: Some(UnixFs::file(Some(b"hello\n"), 6, vec![]).encode()),
        };
        let cid = Cid::hash(0, crate::cid::DAG_PB, &node.encode());
        assert_eq!(
            cid.to_string(),
            "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"
        );
        assert_eq!(PbNode::decode(&node.encode()).unwrap(), node);
        let block = node.encode();
        assert_eq!(&block[leaf_content_range(&block).unwrap()], b"hello\n");
        let empty = PbNode {
            links: vec![],
            data: Some(UnixFs::file(None, 0, vec![]).encode()),
        }
        .encode();
        assert_eq!(leaf_content_range(&empty).unwrap().len(), 0);
    }

    #[test]
    fn hostile_blocks_are_errors() {
        for b in [
            &[0x0a, 0xff][..],
            &[0x12, 0x05, 0x0a],
            &[0x0b],
            &[0x0a, 0x00, 0x12, 0x00],
            &[0x12, 0x02, 0x0a, 0x00],
            &[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
        ] {
            assert!(PbNode::decode(b).is_err(), "{b:?}");
        }
        assert!(UnixFs::decode(&[0x08, 0x09]).is_err());
        assert!(UnixFs::decode(&[0x18, 0x01]).is_err());
    }
}
