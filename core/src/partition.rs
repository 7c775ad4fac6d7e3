//! Which partition a document lives in.
//!
//! `partition = fnv1a_64(key bytes) mod N`, where the key is the partitioning-key value (or
//! the primary-key value when the store has none), taken as bytes (UTF-8 for strings). FNV-1a
//! is tiny, has no seed and is defined the same everywhere, so any language can compute it; the
//! test vectors below pin it.

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The partition (0-based) of a document whose partitioning key is `key`.
pub fn partition_of(key: &[u8], num_partitions: u32) -> u32 {
    debug_assert!(num_partitions > 0);
    (fnv1a_64(key) % u64::from(num_partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_published_vectors() {
        assert_eq!(fnv1a_64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn partition_vectors_are_pinned() {
        // Changing any of these moves documents between partitions: a format break.
        assert_eq!(partition_of(b"Alice", 1), 0);
        let pinned: Vec<u32> = ["Alice", "Bob", "Charlie", "user-0001", ""]
            .iter()
            .map(|k| partition_of(k.as_bytes(), 16))
            .collect();
        assert_eq!(pinned, PINNED_16);
    }

    const PINNED_16: [u32; 5] = [7, 4, 1, 10, 5];

    #[test]
    fn hash_vectors_of_example_keys() {
        assert_eq!(fnv1a_64(b"Alice"), 0x123909cb9f15d167);
        assert_eq!(partition_of(b"Alice", 4), 3);
        assert_eq!(partition_of(b"Bob", 4), 0);
    }
}
