//! Piece geometry: how a torrent's byte stream is cut into pieces, and how pieces map
//! onto files.
//!
//! A [`Geometry`] is only built from checked numbers (positive piece length no larger
//! than [`MAX_PIECE_LENGTH`], non-empty content, a piece count that fits in `u32`), and a
//! [`PieceIndex`] is only handed out by [`Geometry::piece`], so code holding one never
//! needs to check bounds again.

use std::ops::Range;

/// The largest piece length accepted from a torrent (512 MiB): a piece is held in memory
/// while it is verified, so this bounds memory per piece in flight.
pub const MAX_PIECE_LENGTH: u64 = 512 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    #[error("piece length must be positive")]
    ZeroPieceLength,
    #[error("piece length {0} is larger than the limit of {MAX_PIECE_LENGTH} bytes")]
    PieceLengthTooLarge(u64),
    #[error("the torrent holds no data (total length 0)")]
    Empty,
    #[error("{0} pieces is more than this client handles (at most 2^32-1)")]
    TooManyPieces(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    total_length: u64,
    piece_length: u32,
    piece_count: u32,
}

/// A piece index known to be valid for the [`Geometry`] that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PieceIndex(u32);

impl PieceIndex {
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Geometry {
    pub fn new(total_length: u64, piece_length: u64) -> Result<Self, GeometryError> {
        if piece_length == 0 {
            return Err(GeometryError::ZeroPieceLength);
        }
        if piece_length > MAX_PIECE_LENGTH {
            return Err(GeometryError::PieceLengthTooLarge(piece_length));
        }
        if total_length == 0 {
            return Err(GeometryError::Empty);
        }
        let count = total_length.div_ceil(piece_length);
        let piece_count = u32::try_from(count).map_err(|_| GeometryError::TooManyPieces(count))?;
        Ok(Geometry {
            total_length,
            piece_length: piece_length as u32,
            piece_count,
        })
    }

    pub fn total_length(&self) -> u64 {
        self.total_length
    }

    pub fn piece_length(&self) -> u32 {
        self.piece_length
    }

    pub fn piece_count(&self) -> u32 {
        self.piece_count
    }

    /// The index `i`, if the torrent has such a piece.
    pub fn piece(&self, i: u32) -> Option<PieceIndex> {
        (i < self.piece_count).then_some(PieceIndex(i))
    }

    pub fn pieces(&self) -> impl Iterator<Item = PieceIndex> {
        (0..self.piece_count).map(PieceIndex)
    }

    pub fn last_piece_length(&self) -> u32 {
        let rem = self.total_length % u64::from(self.piece_length);
        if rem == 0 {
            self.piece_length
        } else {
            rem as u32
        }
    }

    /// Byte length of piece `p` (all full except possibly the last).
    pub fn piece_size(&self, p: PieceIndex) -> u32 {
        if p.0 + 1 == self.piece_count {
            self.last_piece_length()
        } else {
            self.piece_length
        }
    }

    /// Offset of piece `p` in the torrent's byte stream.
    pub fn piece_offset(&self, p: PieceIndex) -> u64 {
        u64::from(p.0) * u64::from(self.piece_length)
    }

    /// The pieces that hold any byte of `offset..offset+len` (empty for `len == 0`).
    pub fn pieces_for_range(&self, offset: u64, len: u64) -> Range<u32> {
        if len == 0 || offset >= self.total_length {
            return 0..0;
        }
        let end = (offset + len).min(self.total_length);
        let pl = u64::from(self.piece_length);
        (offset / pl) as u32..end.div_ceil(pl) as u32
    }
}

/// Part of a piece that lies in one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSlice {
    pub file_index: usize,
    /// Offset within the file.
    pub file_offset: u64,
    /// Offset within the piece.
    pub piece_offset: u32,
    pub len: u32,
}

/// Maps pieces to file slices for files laid end to end (v1 layout, pad files included).
///
/// `file_lengths` are in torrent order; their sum must equal the geometry's total length.
#[derive(Debug, Clone)]
pub struct FileMap {
    geometry: Geometry,
    /// Start offset of each file in the byte stream.
    starts: Vec<u64>,
    lengths: Vec<u64>,
}

impl FileMap {
    /// `None` if the lengths do not add up to the geometry's total length.
    pub fn new(geometry: Geometry, file_lengths: &[u64]) -> Option<Self> {
        let mut starts = Vec::with_capacity(file_lengths.len());
        let mut at = 0u64;
        for &len in file_lengths {
            starts.push(at);
            at = at.checked_add(len)?;
        }
        (at == geometry.total_length).then(|| FileMap {
            geometry,
            starts,
            lengths: file_lengths.to_vec(),
        })
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Offset of file `i` in the torrent's byte stream.
    pub fn file_start(&self, i: usize) -> u64 {
        self.starts[i]
    }

    /// The file slices that make up piece `p`, in order; zero-length files are skipped.
    pub fn slices(&self, p: PieceIndex) -> impl Iterator<Item = FileSlice> + '_ {
        let start = self.geometry.piece_offset(p);
        let end = start + u64::from(self.geometry.piece_size(p));
        // The last file starting at or before `start` holds it (zero-length files at
        // the same offset are skipped by the filter below).
        let first = self
            .starts
            .partition_point(|&s| s <= start)
            .saturating_sub(1);
        (first..self.starts.len())
            .take_while(move |&i| self.starts[i] < end)
            .filter_map(move |i| {
                let f_start = self.starts[i];
                let f_end = f_start + self.lengths[i];
                let lo = f_start.max(start);
                let hi = f_end.min(end);
                (hi > lo).then(|| FileSlice {
                    file_index: i,
                    file_offset: lo - f_start,
                    piece_offset: (lo - start) as u32,
                    len: (hi - lo) as u32,
                })
            })
    }

    /// The pieces that hold any byte of file `i`.
    pub fn pieces_of_file(&self, i: usize) -> Range<u32> {
        self.geometry
            .pieces_for_range(self.starts[i], self.lengths[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_inputs() {
        assert_eq!(Geometry::new(10, 0), Err(GeometryError::ZeroPieceLength));
        assert_eq!(Geometry::new(0, 16), Err(GeometryError::Empty));
        assert!(matches!(
            Geometry::new(10, MAX_PIECE_LENGTH + 1),
            Err(GeometryError::PieceLengthTooLarge(_))
        ));
        assert!(matches!(
            Geometry::new(u64::MAX, 1),
            Err(GeometryError::TooManyPieces(_))
        ));
    }

    #[test]
    fn last_piece() {
        let g = Geometry::new(100, 32).unwrap();
        assert_eq!(g.piece_count(), 4);
        assert_eq!(g.last_piece_length(), 4);
        assert_eq!(g.piece_size(g.piece(3).unwrap()), 4);
        assert_eq!(g.piece_size(g.piece(2).unwrap()), 32);
        assert!(g.piece(4).is_none());
        let exact = Geometry::new(96, 32).unwrap();
        assert_eq!(exact.piece_count(), 3);
        assert_eq!(exact.last_piece_length(), 32);
        assert_eq!(g.pieces_for_range(31, 2), 0..2);
        assert_eq!(g.pieces_for_range(96, 100), 3..4);
        assert_eq!(g.pieces_for_range(5, 0), 0..0);
    }

    #[test]
    fn maps_pieces_to_files() {
        // Files: 10, 0, 30, 4 bytes; pieces of 16.
        let g = Geometry::new(44, 16).unwrap();
        let m = FileMap::new(g, &[10, 0, 30, 4]).unwrap();
        let p0: Vec<_> = m.slices(g.piece(0).unwrap()).collect();
        assert_eq!(
            p0,
            vec![
                FileSlice {
                    file_index: 0,
                    file_offset: 0,
                    piece_offset: 0,
                    len: 10
                },
                FileSlice {
                    file_index: 2,
                    file_offset: 0,
                    piece_offset: 10,
                    len: 6
                }
            ]
        );
        let p2: Vec<_> = m.slices(g.piece(2).unwrap()).collect();
        assert_eq!(
            p2,
            vec![
                FileSlice {
                    file_index: 2,
                    file_offset: 22,
                    piece_offset: 0,
                    len: 8
                },
                FileSlice {
                    file_index: 3,
                    file_offset: 0,
                    piece_offset: 8,
                    len: 4
                }
            ]
        );
        assert_eq!(m.pieces_of_file(2), 0..3);
        assert_eq!(m.pieces_of_file(1), 0..0);
        assert_eq!(m.pieces_of_file(3), 2..3);
        assert!(FileMap::new(g, &[1, 2]).is_none());
        // Every byte is covered exactly once.
        let total: u32 = g.pieces().flat_map(|p| m.slices(p)).map(|s| s.len).sum();
        assert_eq!(u64::from(total), g.total_length());
    }
}
