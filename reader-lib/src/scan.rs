//! Scans: every live document of one consistent view, with the values of the fields asked
//! for (issue 27: exports, training sets, backfill checks that do not know every key).
//!
//! A scan holds the view it started from: writes applied after it are not seen, and the
//! files it reads stay mapped while it runs even when a fold replaces them (an unlinked file
//! lives while it is mapped). It walks the read image in file order (sequential reads, each
//! entry checked against its CRC), leaving out the keys the overlay changed since the image,
//! then the overlay's documents. Each document once; order unspecified.
//!
//! Price: no storage request; per document, the bytes of its entry read once and its
//! requested fields decoded. Memory: the overlay's live keys listed at the start (bounded by
//! the overlay, a quarter of the image at most).

use std::sync::Arc;

use ikv_core::{FieldValue, Result, ValueRef};

use crate::doc::select;
use crate::read_time::{ReadTime, TimeSource};
use crate::view::{OverlayDoc, ReadView};

/// A scan in progress; see the module's documentation.
pub struct Scan {
    view: Arc<ReadView>,
    fields: Vec<String>,
    primary_key: String,
    /// Where the walk of the image stands (`None` once it is done).
    image_at: Option<usize>,
    overlay: Vec<OverlayDoc>,
    overlay_at: usize,
    /// The time expiries are judged at, the same for the whole scan.
    time: TimeSource,
}

impl Scan {
    /// A scan of `view` judging expiries at `at_ms` (ms since the Unix epoch).
    pub(crate) fn new(
        view: Arc<ReadView>,
        fields: Vec<String>,
        primary_key: String,
        at_ms: i64,
    ) -> Scan {
        let overlay = view.overlay_docs();
        let image_at = Some(view.image.first_entry());
        Scan {
            view,
            fields,
            primary_key,
            image_at,
            overlay,
            overlay_at: 0,
            time: TimeSource::Fixed(at_ms),
        }
    }

    /// The fields each visit gives values of, in order.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// Visits up to `max` live documents: `visit(primary key, values)`, one value per field
    /// (`None` where the document has no live value), borrowed from the mapped copy. Returns
    /// how many were visited; 0 once the scan is over.
    pub fn next_batch(
        &mut self,
        max: usize,
        mut visit: impl FnMut(&[u8], &[Option<ValueRef<'_>>]) -> Result<()>,
    ) -> Result<usize> {
        let view = self.view.clone();
        let (fields, pk) = (&self.fields, &self.primary_key);
        let time = ReadTime::new(&self.time);
        let mut values: Vec<Option<ValueRef<'_>>> = Vec::with_capacity(fields.len());
        let mut visited = 0;
        while visited < max {
            let Some(at) = self.image_at else {
                break;
            };
            let Some((key, doc, next)) = view.image.next_entry(at)? else {
                self.image_at = None;
                break;
            };
            self.image_at = Some(next);
            if !view.changed(key) && live_values(fields, pk, &view, &time, key, doc, &mut values)? {
                visit(key, &values)?;
                visited += 1;
            }
        }
        while visited < max && self.overlay_at < self.overlay.len() {
            let (key, at) = &self.overlay[self.overlay_at];
            self.overlay_at += 1;
            if live_values(
                fields,
                pk,
                &view,
                &time,
                key,
                view.overlay.doc_at(*at),
                &mut values,
            )? {
                visit(key, &values)?;
                visited += 1;
            }
        }
        Ok(visited)
    }
}

/// Fills `values` with the live values of `fields` of the stored document `bytes`; false
/// when the document itself is not live (its primary key dropped or expired).
fn live_values<'d>(
    fields: &[String],
    primary_key: &str,
    view: &ReadView,
    time: &ReadTime<'_>,
    key: &'d [u8],
    bytes: &'d [u8],
    values: &mut Vec<Option<ValueRef<'d>>>,
) -> Result<bool> {
    values.clear();
    values.resize(fields.len(), None);
    let Some(doc) = select(bytes, key, &view.drops, primary_key, time)? else {
        return Ok(false);
    };
    let drops = view.drops.get(doc.partition as usize);
    let mut exists = false;
    for stored in doc.fields() {
        let stored = stored?;
        let is_pk = stored.name == primary_key;
        if !drops.is_none_or(|d| d.is_live(stored.name, is_pk, stored.epoch))
            || !time.serves(&stored)
        {
            continue;
        }
        exists |= is_pk;
        for (j, f) in fields.iter().enumerate() {
            if f == stored.name {
                values[j] = Some(ValueRef::decode(stored.field_type, stored.payload)?);
            }
        }
    }
    Ok(exists)
}

impl Iterator for Scan {
    /// A live document: its primary key and one value per field, owned.
    type Item = Result<(Vec<u8>, Vec<Option<FieldValue>>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut out = None;
        let visited = self.next_batch(1, |key, values| {
            out = Some((
                key.to_vec(),
                values
                    .iter()
                    .map(|v| v.map(ValueRef::to_owned_value))
                    .collect(),
            ));
            Ok(())
        });
        match visited {
            Ok(_) => out.map(Ok),
            Err(e) => {
                // A damaged entry ends the scan: the same entry would fail again.
                self.image_at = None;
                self.overlay_at = self.overlay.len();
                Some(Err(e))
            }
        }
    }
}
