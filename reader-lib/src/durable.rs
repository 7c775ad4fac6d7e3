//! The durable state read as documents: the base image walked in file order (which is key
//! order: every image is written from a sorted stream) merged with the tail's changes.
//! What folds and imports read; nothing else holds every document (rfcs/0010).

use std::iter::Peekable;
use std::sync::Arc;

use ikv_core::{Error, Result};

use crate::image::Image;
use crate::local::TailSnapshot;

/// A base image and the tail of changes since it, at one point.
pub struct Durable {
    pub image: Arc<Image>,
    pub tail: TailSnapshot,
}

impl Durable {
    /// Every document in ascending key order, as (primary key, entry). An image whose keys
    /// are not strictly ascending is damage (its entries are checked one by one, the order
    /// across them here), never merged wrongly.
    pub fn for_each_doc(&self, mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        let mut tail = self.tail.iter().peekable();
        let mut at = self.image.first_entry();
        let mut last: Option<&[u8]> = None;
        while let Some((key, doc, next)) = self.image.next_entry(at)? {
            if last.is_some_and(|l| l >= key) {
                return Err(Error::Corrupt {
                    what: format!("read image {}", self.image.path().display()),
                    reason: "entries are not in ascending key order".into(),
                });
            }
            last = Some(key);
            at = next;
            emit_tail_below(&mut tail, Some(key), &mut f)?;
            match tail.next_if(|t| t.as_ref().is_ok_and(|(k, _)| k.as_slice() == key)) {
                Some(changed) => {
                    if let (_, Some(doc)) = changed? {
                        f(key, &doc)?;
                    }
                }
                None => f(key, doc)?,
            }
        }
        emit_tail_below(&mut tail, None, &mut f)
    }
}

/// Emits the tail's documents below `bound` (all of them without one); deletions emit nothing.
fn emit_tail_below<I>(
    tail: &mut Peekable<I>,
    bound: Option<&[u8]>,
    f: &mut impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<()>
where
    I: Iterator<Item = Result<(Vec<u8>, Option<Vec<u8>>)>>,
{
    while let Some(next) = tail.next_if(|t| match t {
        Ok((k, _)) => bound.is_none_or(|b| k.as_slice() < b),
        Err(_) => true,
    }) {
        if let (key, Some(doc)) = next? {
            f(&key, &doc)?;
        }
    }
    Ok(())
}
