//! A fixed-length bitfield in the BEP 3 wire layout (piece 0 is the high bit of byte 0).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: u32,
    ones: u32,
}

impl Bitfield {
    pub fn new(len: u32) -> Self {
        Bitfield {
            bytes: vec![0; len.div_ceil(8) as usize],
            len,
            ones: 0,
        }
    }

    pub fn full(len: u32) -> Self {
        let mut b = Bitfield::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// From wire bytes; `None` if the length is wrong or spare bits are set.
    pub fn from_bytes(bytes: &[u8], len: u32) -> Option<Self> {
        if bytes.len() != len.div_ceil(8) as usize {
            return None;
        }
        let spare = (bytes.len() as u32 * 8 - len) as u8;
        if spare > 0 && bytes[bytes.len() - 1] & ((1u8 << spare) - 1) != 0 {
            return None;
        }
        let ones = bytes.iter().map(|b| b.count_ones()).sum();
        Some(Bitfield {
            bytes: bytes.to_vec(),
            len,
            ones,
        })
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bytes[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Sets bit `i`; returns whether it was newly set.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bytes[(i / 8) as usize] |= 0x80 >> (i % 8);
        self.ones += 1;
        true
    }

    pub fn clear(&mut self, i: u32) {
        if self.get(i) {
            self.bytes[(i / 8) as usize] &= !(0x80 >> (i % 8));
            self.ones -= 1;
        }
    }

    pub fn count(&self) -> u32 {
        self.ones
    }

    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_layout_and_counts() {
        let mut b = Bitfield::new(10);
        assert!(b.set(0) && b.set(9) && !b.set(9) && !b.set(10));
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert_eq!(b.count(), 2);
        b.clear(0);
        assert_eq!(b.count(), 1);
        assert_eq!(Bitfield::from_bytes(&[0x80, 0x40], 10).unwrap().count(), 2);
        assert!(
            Bitfield::from_bytes(&[0x80, 0x41], 10).is_none(),
            "spare bit set"
        );
        assert!(Bitfield::from_bytes(&[0x80], 10).is_none());
        assert!(Bitfield::full(10).is_full());
        assert_eq!(Bitfield::full(10).ones().count(), 10);
    }
}
