//! Request counts for tests that assert bounded work (requests, not seconds): the counting
//! store every `Storage` already wraps its store in (`ikv_core::requests`), put in front of
//! an inner store a test shares between several roots, and its counts in the few kinds the
//! tests compare.

pub use ikv_core::bucket::requests::CountedStore as CountingStore;
use ikv_core::bucket::requests::RequestKind;

/// Requests seen so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub puts: u64,
    pub gets: u64,
    pub heads: u64,
    pub lists: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.puts + self.gets + self.heads + self.lists
    }

    /// What happened between `earlier` and this.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            puts: self.puts - earlier.puts,
            gets: self.gets - earlier.gets,
            heads: self.heads - earlier.heads,
            lists: self.lists - earlier.lists,
        }
    }
}

/// A counting store's requests as [`Counts`].
pub trait CountsOf {
    fn counts(&self) -> Counts;
}

impl CountsOf for CountingStore {
    fn counts(&self) -> Counts {
        let r = self.requests();
        Counts {
            puts: r.of_kind(RequestKind::Put),
            gets: r.of_kind(RequestKind::Get),
            heads: r.of_kind(RequestKind::Head),
            lists: r.of_kind(RequestKind::List),
        }
    }
}
