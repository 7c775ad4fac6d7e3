"""Ray Data on a local cluster: a Dataset written through IKVDatasink (tasks write runs, the
driver commits once per partition) and features read inside map_batches, one reader per
actor, exactly as ikvpy/ray.py's docstring shows."""

import pathlib
from typing import Iterator

import pyarrow as pa
import pytest

ray = pytest.importorskip("ray")  # installed by scripts/python-env.sh; skipped only by hand

from ikvpy import admin  # noqa: E402
from ikvpy.ray import IKVDatasink, IKVFeatureLookup  # noqa: E402


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_a_dataset_imports_through_the_datasink_and_is_read_in_map_batches(cluster, local_storage, tmp_path: pathlib.Path) -> None:
    admin.create_store("users", "userid", num_partitions=4, storage_url=local_storage.url)
    rows = 4000
    ids = [f"u{i:05}" for i in range(rows)]
    ages = [i % 90 for i in range(rows)]
    cities = [["Oslo", "Lima"][i % 2] for i in range(rows)]
    # Two keys written twice in one block: the later row wins, column by column.
    ids[10:10] = ["u00001", "u00002"]
    ages[10:10] = [101, 102]
    cities[10:10] = [None, None]
    ds = ray.data.from_arrow(pa.table({"userid": ids, "age": ages, "city": cities})).repartition(4)
    sink = IKVDatasink("users", storage_url=local_storage.url)
    ds.write_datasink(sink)
    assert sink.receipt is not None and sink.receipt.rows == rows + 2
    assert sink.receipt.documents >= rows
    assert sorted(c.partition for c in sink.receipt.commits) == [0, 1, 2, 3]

    queries = ray.data.from_arrow(pa.table({"userid": ["u00001", "u00002", "u00003", "nobody"]}))
    enriched = queries.map_batches(
        IKVFeatureLookup,
        fn_constructor_kwargs={
            "store_name": "users",
            "fields": ["age", "city"],
            "mount_directory": str(tmp_path / "mount"),
            "key_column": "userid",
            "storage_url": local_storage.url,
        },
        batch_format="pyarrow",
        concurrency=2,
    )
    got = {r["userid"]: (r["age"], r["city"]) for r in enriched.take_all()}
    assert got == {
        "u00001": (101, "Lima"),
        "u00002": (102, "Oslo"),
        "u00003": (3, "Lima"),
        "nobody": (None, None),
    }
