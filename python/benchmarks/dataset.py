"""The data set the multi-process benchmarks share: N documents of a 10-byte key and three
50-byte fields, written through ikvpy's writer (direct mode) and snapshotted, and the same
field values in an LMDB file (one entry per field: key, NUL, field name)."""

import lmdb

from ikvpy import admin
from ikvpy.clientoptions import ClientOptions
from ikvpy.document import IKVDocumentBuilder
from ikvpy.factory import create_new_writer

FIELDS = ["f1", "f2", "f3"]


def key(i: int) -> str:
    return f"k{i:09d}"


def value(i: int, f: int) -> bytes:
    return f"{f}{i:049d}".encode()


def build(root: str, docs: int, options: ClientOptions) -> None:
    """Store "bench" under ``file://{root}/bucket`` (snapshotted) and ``{root}/lmdb``."""
    url = f"file://{root}/bucket"
    admin.create_store("bench", "id", storage_url=url)
    with create_new_writer(options) as writer:
        for start in range(0, docs, 20_000):
            batch = []
            for i in range(start, min(start + 20_000, docs)):
                b = IKVDocumentBuilder().put_string_field("id", key(i))
                for n, f in enumerate(FIELDS):
                    b.put_bytes_field(f, value(i, n))
                batch.append(b.build())
            writer.upsert_fields_batch(batch)
    admin.run_snapshot("bench", storage_url=url)
    env = lmdb.open(f"{root}/lmdb", map_size=16 << 30, writemap=True)
    with env.begin(write=True) as txn:
        for i in range(docs):
            for n, f in enumerate(FIELDS):
                txn.put(f"{key(i)}\0{f}".encode(), value(i, n))
    env.sync(True)
    env.close()
