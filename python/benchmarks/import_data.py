"""The import benchmarks' data: one Parquet file of N documents (a 10-byte key and three
50-byte string fields), generated once under $IKV_BENCH_DIR (default /tmp/ikv-bench-import).
Needs pyarrow only."""

import os
import pathlib

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PARTITIONS = 4


def parquet_file(docs: int) -> pathlib.Path:
    root = pathlib.Path(os.environ.get("IKV_BENCH_DIR", "/tmp/ikv-bench-import"))
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"docs-{docs}.parquet"
    if path.exists():
        return path
    writer = None
    step = 1_000_000
    for start in range(0, docs, step):
        n = min(step, docs - start)
        ids = pc.cast(pa.array(range(start, start + n)), pa.string())
        pad = pc.utf8_lpad(ids, 9, "0")
        table = pa.table(
            {
                "id": pc.binary_join_element_wise("k", pad, ""),
                "f1": pc.binary_join_element_wise("1", pc.utf8_lpad(ids, 49, "0"), ""),
                "f2": pc.binary_join_element_wise("2", pc.utf8_lpad(ids, 49, "0"), ""),
                "f3": pc.binary_join_element_wise("3", pc.utf8_lpad(ids, 49, "0"), ""),
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(path.with_suffix(".tmp"), table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()
    path.with_suffix(".tmp").rename(path)
    return path
