//! BEP 20 peer ids: Azureus style, `-FS` + four version characters + `-`, then 12
//! random bytes. "FS" (btFS) is the client code of btfs (not in the BEP 20 list; "BT" is mainline's); the version characters come from
//! this crate's version (major, minor, patch, and `0`), each as one base-36 digit.

/// The 8-byte prefix for this build, e.g. `-FS0100-` for version 0.1.0.
pub fn prefix() -> [u8; 8] {
    let digit = |s: &str| -> u8 {
        let n: u32 = s.parse().unwrap_or(0);
        char::from_digit(n.min(35), 36).map_or(b'0', |c| c.to_ascii_uppercase() as u8)
    };
    let mut parts = env!("CARGO_PKG_VERSION").split(['.', '-']);
    let (a, b, c) = (
        digit(parts.next().unwrap_or("0")),
        digit(parts.next().unwrap_or("0")),
        digit(parts.next().unwrap_or("0")),
    );
    [b'-', b'F', b'S', a, b, c, b'0', b'-']
}

/// A fresh peer id: the prefix and 12 random printable bytes.
pub fn generate() -> [u8; 20] {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut id = [0u8; 20];
    id[..8].copy_from_slice(&prefix());
    let mut seed = [0u8; 12];
    if getrandom(&mut seed).is_err() {
        // Fall back to time and address entropy; uniqueness, not secrecy, is needed.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mixed = t ^ (&id as *const _ as u128);
        seed.copy_from_slice(&mixed.to_le_bytes()[..12]);
    }
    for (dst, r) in id[8..].iter_mut().zip(seed) {
        *dst = ALPHABET[r as usize % ALPHABET.len()];
    }
    id
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

#[cfg(test)]
mod tests {
    #[test]
    fn shape() {
        let id = super::generate();
        assert_eq!(&id[..3], b"-FS");
        assert_eq!(id[7], b'-');
        assert!(id.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-'));
        assert_ne!(super::generate(), id);
    }
}
