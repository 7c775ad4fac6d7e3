//! Parquet's async reader over the bucket (`ikv_core::bucket`): ranged GETs, footer read with
//! one prefetching fetch.
//! With block checksums from the manifest, every fetch is widened to whole blocks and
//! verified before parquet sees a byte (`ikv_core::checksum`).

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use ikv_core::Storage;
use ikv_core::bucket::{self, Path};
use ikv_core::checksum::BlockChecksums;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

/// Reads one Parquet object of known size.
pub struct ObjectReader {
    storage: Storage,
    path: Path,
    size: u64,
    checksums: Option<BlockChecksums>,
    /// The last verified block-aligned span fetched (offset, bytes): parquet's next request
    /// often falls inside it (neighbouring column chunks, the footer after its length).
    cached: Option<(u64, Bytes)>,
}

impl ObjectReader {
    pub fn new(
        storage: Storage,
        path: Path,
        size: u64,
        checksums: Option<BlockChecksums>,
    ) -> ikv_core::Result<Self> {
        if let Some(sums) = &checksums {
            sums.validate(path.as_ref())?;
            if sums.size != size {
                return Err(ikv_core::Error::Corrupt {
                    what: path.to_string(),
                    reason: format!(
                        "the manifest gives {size} bytes but checksums for {}",
                        sums.size
                    ),
                });
            }
        }
        Ok(ObjectReader {
            storage,
            path,
            size,
            checksums,
            cached: None,
        })
    }

    /// The requested ranges, read through whole verified blocks.
    async fn verified(&mut self, ranges: &[Range<u64>]) -> parquet::errors::Result<Vec<Bytes>> {
        let Some(sums) = &self.checksums else {
            return Ok(Vec::new());
        };
        let mut spans: Vec<Range<u64>> = Vec::new();
        for r in ranges {
            if r.end > self.size || r.start > r.end {
                return Err(ParquetError::External(Box::new(ikv_core::Error::Corrupt {
                    what: self.path.to_string(),
                    reason: format!("a read of bytes {r:?} past the file's {} bytes", self.size),
                })));
            }
            if self
                .cached
                .as_ref()
                .is_some_and(|(at, b)| *at <= r.start && r.end <= *at + b.len() as u64)
            {
                continue;
            }
            let span = sums.aligned(r.clone());
            match spans.last_mut() {
                Some(last) if span.start <= last.end => last.end = last.end.max(span.end),
                _ => spans.push(span),
            }
        }
        let fetched = if spans.is_empty() {
            Vec::new()
        } else {
            bucket::read_ranges(&self.storage, &self.path, &spans)
                .await
                .map_err(external)?
        };
        let mut verified = Vec::with_capacity(spans.len());
        for (span, bytes) in spans.iter().zip(fetched) {
            sums.verify(span.start, &bytes, self.path.as_ref())
                .map_err(|e| ParquetError::External(Box::new(e)))?;
            verified.push((span.start, bytes));
        }
        let mut out = Vec::with_capacity(ranges.len());
        for r in ranges {
            let source = verified
                .iter()
                .chain(self.cached.iter())
                .find(|(at, b)| *at <= r.start && r.end <= *at + b.len() as u64);
            let Some((at, bytes)) = source else {
                return Err(ParquetError::General(format!(
                    "{}: bytes {r:?} were not fetched",
                    self.path
                )));
            };
            out.push(bytes.slice((r.start - at) as usize..(r.end - at) as usize));
        }
        if let Some(last) = verified.pop() {
            self.cached = Some(last);
        }
        Ok(out)
    }
}

fn external(e: ikv_core::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            if self.checksums.is_some() {
                let mut got = self.verified(std::slice::from_ref(&range)).await?;
                return got
                    .pop()
                    .ok_or_else(|| ParquetError::General("empty read".into()));
            }
            bucket::read_range(&self.storage, &self.path, range)
                .await
                .map_err(external)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            if self.checksums.is_some() {
                return self.verified(&ranges).await;
            }
            bucket::read_ranges(&self.storage, &self.path, &ranges)
                .await
                .map_err(external)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(64 * 1024))
                .load_and_finish(&mut *self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}
