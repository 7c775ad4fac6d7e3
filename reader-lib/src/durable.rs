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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::drops::DropState;
    use crate::image::ImageWriter;
    use crate::local::LocalStore;
    use crate::local::tests::identity;
    use crate::view::ImagePartition;

    fn image_of(path: &std::path::Path, docs: &BTreeMap<Vec<u8>, Vec<u8>>) -> Arc<Image> {
        let mut writer = ImageWriter::create(path).unwrap();
        for (k, v) in docs {
            writer.add(k, v).unwrap();
        }
        writer.finish(b"{}").unwrap();
        Arc::new(Image::open(path).unwrap())
    }

    /// Random images and tails (changes, deletions of present and absent keys, keys below,
    /// between and above the image's, keys with zero bytes) merge to exactly the image's
    /// documents with the tail applied, in ascending key order.
    #[test]
    fn base_and_tail_merge_like_the_image_with_the_changes_applied() {
        let mut rng = StdRng::seed_from_u64(26);
        for round in 0..60 {
            let dir = tempfile::tempdir().unwrap();
            let key = |rng: &mut StdRng| -> Vec<u8> {
                let len = rng.random_range(0..4);
                (0..len).map(|_| rng.random_range(0..4u8)).collect()
            };
            let mut image_docs = BTreeMap::new();
            for _ in 0..rng.random_range(0..40) {
                let k = key(&mut rng);
                image_docs.insert(k, vec![1, rng.random()]);
            }
            let image = image_of(&dir.path().join("image-1"), &image_docs);
            let (mut local, _) =
                LocalStore::open(&dir.path().join("db"), &identity(), 1 << 20).unwrap();
            let states = BTreeMap::from([(
                0,
                ImagePartition {
                    applied: 0,
                    snapshot: 0,
                    drops: DropState::default(),
                },
            )]);
            local.activate(1, &states).unwrap();
            let mut want = image_docs.clone();
            for seq in 1..rng.random_range(1..6u64) {
                let entries: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..rng.random_range(0..12))
                    .map(|_| {
                        let k = key(&mut rng);
                        let v = rng.random_bool(0.7).then(|| vec![2, rng.random()]);
                        (k, v)
                    })
                    .collect();
                for (k, v) in &entries {
                    match v {
                        Some(v) => want.insert(k.clone(), v.clone()),
                        None => want.remove(k),
                    };
                }
                // One delta's entries name a key once (the owner stages a document once).
                let mut once = BTreeMap::new();
                for (k, v) in entries {
                    once.insert(k, v);
                }
                let entries: Vec<_> = once.into_iter().collect();
                local.commit(0, seq, &entries, None).unwrap();
            }
            let durable = Durable {
                image,
                tail: local.tail_snapshot(),
            };
            let mut got = Vec::new();
            durable
                .for_each_doc(|k, v| {
                    got.push((k.to_vec(), v.to_vec()));
                    Ok(())
                })
                .unwrap();
            let want: Vec<_> = want.into_iter().collect();
            assert_eq!(got, want, "round {round}");
        }
    }

    /// An image whose entries are not in ascending key order is refused by name, never
    /// merged (a tail key would otherwise be emitted twice or out of place).
    #[test]
    fn an_image_out_of_key_order_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image-1");
        let mut writer = ImageWriter::create(&path).unwrap();
        writer.add(b"b", b"1").unwrap();
        writer.add(b"a", b"2").unwrap();
        writer.finish(b"{}").unwrap();
        let (mut local, _) =
            LocalStore::open(&dir.path().join("db"), &identity(), 1 << 20).unwrap();
        local.activate(1, &BTreeMap::new()).unwrap();
        let durable = Durable {
            image: Arc::new(Image::open(&path).unwrap()),
            tail: local.tail_snapshot(),
        };
        let err = durable.for_each_doc(|_, _| Ok(())).unwrap_err();
        assert!(
            err.to_string().contains("not in ascending key order"),
            "{err}"
        );
    }
}
