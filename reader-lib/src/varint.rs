//! Unsigned LEB128 integers for the local formats (documents and image entries): seven bits a
//! byte, least significant first, the high bit set on every byte but the last. Most lengths
//! and epoch differences fit one byte, where a fixed-width field spent four or eight.
//!
//! Decoding never trusts its input: a value running past the slice or past ten bytes (more
//! than 64 bits) is `None`, never a panic or a wrapped value.

/// Appends `value`.
pub fn put(out: &mut Vec<u8>, value: u64) {
    let (bytes, n) = encode(value);
    out.extend_from_slice(&bytes[..n]);
}

/// `value`'s bytes (the first of the returned count), for writing it anywhere.
pub fn encode(mut value: u64) -> ([u8; 10], usize) {
    let mut out = [0u8; 10];
    let mut n = 0;
    while value >= 0x80 {
        out[n] = (value as u8) | 0x80;
        value >>= 7;
        n += 1;
    }
    out[n] = value as u8;
    (out, n + 1)
}

/// Bytes [`put`] writes for `value` (tests state sizes with it).
#[cfg(test)]
pub fn len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// The value at the start of `bytes` and how many bytes it took.
#[inline]
pub fn get(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let bits = u64::from(b & 0x7F);
        if i == 9 && b > 1 {
            return None; // a tenth byte holds one bit; more would overflow 64 bits
        }
        value |= bits << (7 * i);
        if b < 0x80 {
            return Some((value, i + 1));
        }
    }
    None
}

/// A signed difference as an unsigned one (0, -1, 1, -2, … → 0, 1, 2, 3, …).
pub fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

pub fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Values of every width (a random bit length, then random bits), seeded.
    #[test]
    fn values_and_differences_round_trip_at_their_stated_length() {
        let mut rng = StdRng::seed_from_u64(26);
        for _ in 0..100_000 {
            let bits = rng.random_range(0..=64u32);
            let value = if bits == 0 {
                0
            } else {
                rng.random::<u64>() >> (64 - bits)
            };
            let mut out = Vec::new();
            put(&mut out, value);
            assert_eq!(out.len(), len(value), "{value}");
            out.extend_from_slice(&[rng.random(), 0x80]);
            assert_eq!(get(&out), Some((value, len(value))), "{value}");
            let signed = value as i64;
            assert_eq!(unzigzag(zigzag(signed)), signed);
        }
    }

    /// Arbitrary bytes decode to a value no longer than they are, or are refused: no panic.
    #[test]
    fn arbitrary_bytes_decode_or_refuse_without_panicking() {
        let mut rng = StdRng::seed_from_u64(62);
        for _ in 0..100_000 {
            let n = rng.random_range(0..12);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            if let Some((value, used)) = get(&bytes) {
                assert!(used <= bytes.len());
                assert!(
                    len(value) <= used,
                    "redundant zero groups at most, never a new value"
                );
            }
        }
    }

    #[test]
    fn short_and_oversized_input_is_refused() {
        assert_eq!(get(&[]), None);
        assert_eq!(get(&[0x80]), None, "a continuation with nothing after it");
        assert_eq!(get(&[0xFF; 10]), None, "more than 64 bits");
        let mut max = Vec::new();
        put(&mut max, u64::MAX);
        assert_eq!(max.len(), 10);
        assert_eq!(get(&max), Some((u64::MAX, 10)));
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }
}
