//! The public reader: open (blocks until caught up), typed reads, status, shutdown.
//!
//! Every process opening a mount directory plays one of two roles (`docs/READER.md`, "One
//! local copy per host"): the owner (the first to take the mount's lock) polls the bucket and
//! writes the shared read image and overlay; the others attach to them and only follow the
//! overlay. An attached process takes the lock over when the owner goes away.
//!
//! This file is the read API; options, start-up and roles, and polling are their own modules
//! (`options.rs`, `roles.rs`, `poller.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use ikv_core::partition::partition_of;
use ikv_core::{Error, FieldType, FieldValue, Result, StoreConfig};
use tokio::sync::watch;

use crate::doc::{FieldRef, OwnedDoc, select};
use crate::image::PREFETCH_MAX;
use crate::options::ReaderOptions;
use crate::poller::run;
use crate::read_time::ReadTime;
use crate::roles::*;
use crate::scan::Scan;
use crate::status::PartitionStatus;
use crate::view::ReadView;

/// An embedded reader of one store. `Send + Sync`: share it between threads; reads never wait
/// for the network or for another process.
pub struct Reader {
    pub(crate) shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    /// Taken by the first stop; a stop never runs while reads go on, it only ends polling.
    background: Mutex<Option<Background>>,
}

struct Background {
    poller: tokio::task::JoinHandle<()>,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("store", &self.shared.config.store_name)
            .field("partitions", &self.shared.partitions)
            .field("owner", &self.shared.owns.load(Ordering::Relaxed))
            .finish()
    }
}

impl Reader {
    /// Opens the reader: builds or resumes the local copy and applies every delta up to the
    /// tip seen now, then returns; a background task keeps polling. Blocking: call it from a
    /// plain thread (or `spawn_blocking`), not from inside an async task.
    pub fn open(options: ReaderOptions) -> Result<Reader> {
        let lower = options.background_nice;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ikv-reader")
            .on_thread_start(move || crate::priority::lower_this_thread(lower))
            .enable_all()
            .build()
            .map_err(|e| Error::Local {
                path: options.mount_directory.display().to_string(),
                message: format!("cannot start the reader runtime: {e}"),
            })?;
        let (shared, role) = runtime.block_on(start(&options))?;
        let shared = Arc::new(shared);
        let (stop, stopped) = watch::channel(false);
        let poller = runtime.spawn(run(shared.clone(), role, stopped));
        Ok(Reader {
            shared,
            stop,
            background: Mutex::new(Some(Background { poller, runtime })),
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// Whether this process owns the mount (polls the bucket for every process of the host)
    /// rather than following its owner.
    pub fn owns_mount(&self) -> bool {
        self.shared.owns.load(Ordering::SeqCst)
    }

    /// Mounted partitions.
    pub fn partitions(&self) -> &[u32] {
        &self.shared.partitions
    }

    /// Freshness of every mounted partition.
    pub fn status(&self) -> Vec<PartitionStatus> {
        self.shared.status.snapshot()
    }

    fn check_mounted(&self, key: &[u8]) -> Result<()> {
        // Only without a partitioning key does the primary key alone name the partition.
        if self.shared.config.partitioning_key_field.is_none() {
            let p = partition_of(key, self.shared.config.num_partitions);
            if !self.shared.mounted[p as usize] {
                return Err(Error::NotMounted {
                    partition: p,
                    mounted: self.shared.partitions.clone(),
                });
            }
        }
        Ok(())
    }

    /// The live stored field `field` of document `key`, decoded by `f`.
    fn with_field<T>(
        &self,
        view: &ReadView,
        key: &[u8],
        field: &str,
        f: impl FnOnce(FieldRef<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        let Some(bytes) = view.doc(key)? else {
            return Ok(None);
        };
        let time = ReadTime::new(&self.shared.time);
        let pk_name = &self.shared.config.primary_key_field;
        let Some(doc) = select(bytes, key, &view.drops, pk_name, &time)? else {
            return Ok(None);
        };
        let Some(stored) = doc.find(field)? else {
            return Ok(None);
        };
        let pk = field == pk_name;
        let live = view
            .drops
            .get(doc.partition as usize)
            .is_none_or(|d| d.is_live(field, pk, stored.epoch))
            && time.serves(&stored);
        if !live {
            return Ok(None);
        }
        f(stored).map(Some)
    }

    fn get_in(&self, view: &ReadView, key: &[u8], field: &str) -> Result<Option<FieldValue>> {
        self.with_field(view, key, field, |f| f.value())
    }

    /// The typed value of `field` of the document `key`, or `None`.
    pub fn get(&self, key: &[u8], field: &str) -> Result<Option<FieldValue>> {
        self.shared.status.counters.gets.add(1);
        self.check_mounted(key)?;
        let view = self.shared.view.load();
        self.get_in(&view, key, field)
    }

    /// Every live field of the document `key` (one lookup), or `None`.
    pub fn get_document(&self, key: &[u8]) -> Result<Option<BTreeMap<String, FieldValue>>> {
        self.shared.status.counters.gets.add(1);
        self.check_mounted(key)?;
        let view = self.shared.view.load();
        let Some(bytes) = view.doc(key)? else {
            return Ok(None);
        };
        let pk = &self.shared.config.primary_key_field;
        let time = ReadTime::new(&self.shared.time);
        let Some(doc) = select(bytes, key, &view.drops, pk, &time)? else {
            return Ok(None);
        };
        let live = OwnedDoc::live_of(&doc, &view.drops, pk)?;
        let doc: BTreeMap<String, FieldValue> = live
            .fields
            .into_iter()
            .filter(|(_, f)| time.serves_expiry(f.expires_ms))
            .map(|(name, f)| FieldValue::decode(f.field_type, &f.payload).map(|v| (name, v)))
            .collect::<Result<_>>()?;
        Ok((!doc.is_empty()).then_some(doc))
    }

    /// A string or bytes field as bytes (a string gives its UTF-8 bytes).
    pub fn get_bytes(&self, key: &[u8], field: &str) -> Result<Option<Vec<u8>>> {
        self.shared.status.counters.gets.add(1);
        self.check_mounted(key)?;
        let view = self.shared.view.load();
        self.with_field(&view, key, field, |f| match f.field_type {
            FieldType::String | FieldType::Bytes => Ok(f.payload.to_vec()),
            other => Err(Error::TypeMismatch {
                field: field.to_owned(),
                stored: other,
                requested: "bytes",
            }),
        })
    }

    /// A string field, or a bytes field holding UTF-8.
    pub fn get_string(&self, key: &[u8], field: &str) -> Result<Option<String>> {
        match self.get_bytes(key, field)? {
            None => Ok(None),
            Some(b) => String::from_utf8(b).map(Some).map_err(|_| Error::NotUtf8 {
                field: field.to_owned(),
            }),
        }
    }

    pub fn get_int64(&self, key: &[u8], field: &str) -> Result<Option<i64>> {
        match self.get(key, field)? {
            None => Ok(None),
            Some(FieldValue::Int64(v)) => Ok(Some(v)),
            Some(other) => Err(Error::TypeMismatch {
                field: field.to_owned(),
                stored: other.field_type(),
                requested: "int64",
            }),
        }
    }

    pub fn get_float64(&self, key: &[u8], field: &str) -> Result<Option<f64>> {
        match self.get(key, field)? {
            None => Ok(None),
            Some(FieldValue::Float64(v)) => Ok(Some(v)),
            Some(other) => Err(Error::TypeMismatch {
                field: field.to_owned(),
                stored: other.field_type(),
                requested: "float64",
            }),
        }
    }

    pub fn get_bool(&self, key: &[u8], field: &str) -> Result<Option<bool>> {
        match self.get(key, field)? {
            None => Ok(None),
            Some(FieldValue::Bool(v)) => Ok(Some(v)),
            Some(other) => Err(Error::TypeMismatch {
                field: field.to_owned(),
                stored: other.field_type(),
                requested: "bool",
            }),
        }
    }

    /// Every live document with the values of `fields` (a [`Scan`], an iterator and a
    /// batch visitor): one consistent view, the one current now; no storage request.
    pub fn scan<F: AsRef<str>>(&self, fields: &[F]) -> Scan {
        let fields = fields.iter().map(|f| f.as_ref().to_owned()).collect();
        // A clone, not the published view itself: the owner waits for the view it replaces to
        // be released before freeing it (up to 200 ms), and a scan may hold its view far
        // longer than a lookup; the files stay mapped through the clone's own references.
        let view = ReadView::clone(&self.shared.view.load());
        // The scan's one time, read now: every document is judged by it.
        let at_ms = ReadTime::new(&self.shared.time).ms();
        Scan::new(
            Arc::new(view),
            fields,
            self.shared.config.primary_key_field.clone(),
            at_ms,
        )
    }

    /// Values of `fields` for each of `keys`, key-major (`keys[0]`'s fields first), `None`
    /// where missing. One consistent view for the whole batch; one document lookup per key.
    pub fn multiget<K: AsRef<[u8]>, F: AsRef<str>>(
        &self,
        keys: &[K],
        fields: &[F],
    ) -> Result<Vec<Option<FieldValue>>> {
        let nf = fields.len();
        let mut out: Vec<Option<FieldValue>> = vec![None; keys.len() * nf];
        self.multiget_visit(keys, fields, |i, j, stored| {
            out[i * nf + j] = Some(stored.value()?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `visit(i, j, field)` for every live stored field `fields[j]` of document
    /// `keys[i]`, all from one consistent view, with the field's bytes borrowed from the
    /// shared copy: a caller can convert them without an intermediate copy (the Python
    /// binding builds its objects straight from them). One document lookup per key.
    pub fn multiget_visit<K: AsRef<[u8]>, F: AsRef<str>>(
        &self,
        keys: &[K],
        fields: &[F],
        mut visit: impl FnMut(usize, usize, FieldRef<'_>) -> Result<()>,
    ) -> Result<()> {
        self.shared.status.counters.multigets.add(1);
        if fields.is_empty() {
            return Ok(());
        }
        for k in keys {
            self.check_mounted(k.as_ref())?;
        }
        let view = self.shared.view.load();
        let pk = &self.shared.config.primary_key_field;
        let wanted = Wanted::new(fields);
        let time = ReadTime::new(&self.shared.time);
        for (i, key) in keys.iter().enumerate() {
            // The lookups of a batch wait on memory together, not one after another.
            if i % PREFETCH_MAX == 0 && keys.len() - i > 1 {
                view.image.prefetch(&keys[i..]);
            }
            let Some(bytes) = view.doc(key.as_ref())? else {
                continue;
            };
            let Some(doc) = select(bytes, key.as_ref(), &view.drops, pk, &time)? else {
                continue;
            };
            let drops = view.drops.get(doc.partition as usize);
            for stored in doc.fields() {
                let stored = stored?;
                let Some(j) = wanted.first(stored.name) else {
                    continue;
                };
                let is_pk = stored.name == pk.as_str();
                if drops.is_none_or(|d| d.is_live(stored.name, is_pk, stored.epoch))
                    && time.serves(&stored)
                {
                    visit(i, j, stored)?;
                    for again in wanted.repeats(j) {
                        visit(i, again, stored)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Stops polling, flushes the local copy to disk and hands the mount to another process.
    /// Also done on drop.
    pub fn shutdown(self) -> Result<()> {
        self.stop()
    }

    /// Stops polling (waiting for the delta being applied, if any); an owner flushes its
    /// durable copy to disk and gives the mount up to another process. Reads keep answering
    /// from the shared copy as it stands; later stops do nothing. Blocking: not from inside
    /// an async task.
    pub fn stop(&self) -> Result<()> {
        self.stop_poller();
        Ok(())
    }

    fn stop_poller(&self) {
        let _ = self.stop.send(true);
        let background = self
            .background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(Background { poller, runtime }) = background {
            // Outside an async context: wait for the poller to finish its current delta.
            if tokio::runtime::Handle::try_current().is_err() {
                let _ = runtime.block_on(poller);
            }
            runtime.shutdown_background();
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop_poller();
    }
}

/// The fields a multiget asks for, matched against each stored field of each document: by
/// comparison when they are few, by a hash map when they are many (a document of 12 fields
/// matched against 11 names took about 130 comparisons a key). A name asked for twice is
/// visited at each of its places.
struct Wanted<'f> {
    names: Vec<&'f str>,
    index: Option<rustc_hash::FxHashMap<&'f str, usize>>,
    /// (first place, later place) of names asked for more than once.
    repeats: Vec<(usize, usize)>,
}

impl<'f> Wanted<'f> {
    /// Past this many names, a hash map beats comparing each.
    const LINEAR_MAX: usize = 4;

    fn new<F: AsRef<str>>(fields: &'f [F]) -> Wanted<'f> {
        let names: Vec<&str> = fields.iter().map(|f| f.as_ref()).collect();
        let mut repeats = Vec::new();
        for (j, name) in names.iter().enumerate() {
            if let Some(first) = names[..j].iter().position(|n| n == name) {
                repeats.push((first, j));
            }
        }
        let index = (names.len() > Self::LINEAR_MAX).then(|| {
            let mut index = rustc_hash::FxHashMap::default();
            for (j, name) in names.iter().enumerate().rev() {
                index.insert(*name, j);
            }
            index
        });
        Wanted {
            names,
            index,
            repeats,
        }
    }

    /// The first place `name` is asked for at.
    fn first(&self, name: &str) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(name).copied(),
            None => self.names.iter().position(|n| *n == name),
        }
    }

    /// The later places of the name first asked for at `first`.
    fn repeats(&self, first: usize) -> impl Iterator<Item = usize> + '_ {
        self.repeats
            .iter()
            .filter(move |(f, _)| *f == first)
            .map(|(_, j)| *j)
    }
}

#[cfg(test)]
mod tests {
    use super::Wanted;

    #[test]
    fn wanted_names_are_found_at_every_place_by_either_path() {
        for names in [
            vec!["a", "b", "a"],
            vec!["f0", "f1", "f2", "f3", "f4", "f1", "f5", "f1"],
        ] {
            let wanted = Wanted::new(&names);
            assert_eq!(wanted.index.is_some(), names.len() > Wanted::LINEAR_MAX);
            for (j, name) in names.iter().enumerate() {
                let first = wanted.first(name).unwrap();
                let mut places: Vec<usize> = std::iter::once(first)
                    .chain(wanted.repeats(first))
                    .collect();
                places.sort_unstable();
                let expected: Vec<usize> =
                    (0..names.len()).filter(|k| names[*k] == *name).collect();
                assert_eq!(places, expected, "{name} at {j}");
            }
            assert_eq!(wanted.first("missing"), None);
        }
    }
}
