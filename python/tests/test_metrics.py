"""reader.metrics() / writer.metrics() as plain dicts, and ikvpy.metrics's collector in
prometheus_client: the values follow what the clients did (commits acknowledged, reads
served, applied sequence), in prometheus_client's exposition format."""

import pathlib
import uuid

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import ikvpy.metrics
from ikvpy import admin
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.document import IKVDocumentBuilder
from ikvpy.errors import IKVTypeError
from ikvpy.factory import create_new_reader, create_new_writer


def _value(metrics, name, **labels):
    for sample in metrics[name]["samples"]:
        if all(sample["labels"].get(k) == v for k, v in labels.items()):
            return sample.get("value", sample.get("count"))
    raise AssertionError(f"no {name} sample with {labels}")


def test_clients_report_what_they_did_and_prometheus_client_exposes_it(local_storage, tmp_path: pathlib.Path):
    name = f"m-{uuid.uuid4().hex[:8]}"
    admin.create_store(name, "id", num_partitions=1, storage_url=local_storage.url)
    options = (
        ClientOptionsBuilder()
        .with_store_name(name)
        .with_storage_url(local_storage.url)
        .with_mount_directory(str(tmp_path / "mount"))
        .with_poll_interval(0.01)
        .build()
    )
    writer = create_new_writer(options)
    writer.startup()
    for i in range(5):
        writer.upsert_fields(IKVDocumentBuilder().put_string_field("id", f"k{i}").put_int64_field("v", i).build())
    w = writer.metrics()
    assert w["ikv_writer_commits_total"]["type"] == "counter"
    assert _value(w, "ikv_writer_commits_total", store=name) == 5
    assert _value(w, "ikv_writer_operations_total", store=name) == 5
    assert _value(w, "ikv_writer_commit_seconds", store=name) == 5
    assert _value(w, "ikv_storage_requests_total", component="writer", kind="put", outcome="ok") >= 5

    reader = create_new_reader(options)
    reader.startup()
    try:
        for i in range(3):
            assert reader.get_int64_value(f"k{i}", "v") == i
        list(reader.multiget_string_values(str_primary_keys=["k1", "k2"], field_names=["id"]))
        r = reader.metrics()
        assert _value(r, "ikv_reader_applied_sequence", store=name, partition="0") == 5
        assert _value(r, "ikv_reader_lag_deltas", partition="0") == 0
        assert _value(r, "ikv_reader_gets_total") == 3
        assert _value(r, "ikv_reader_multigets_total") == 1
        assert _value(r, "ikv_reader_owns_mount") == 1

        registry = CollectorRegistry()
        collector = ikvpy.metrics.register(reader, writer, registry=registry)
        text = generate_latest(registry).decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        commits = families["ikv_writer_commits"]
        assert commits.type == "counter"
        assert [s.value for s in commits.samples if s.name == "ikv_writer_commits_total"] == [5.0]
        applied = families["ikv_reader_applied_sequence"]
        assert [(s.labels, s.value) for s in applied.samples] == [({"partition": "0", "store": name}, 5.0)]
        latency = families["ikv_writer_commit_seconds"]
        assert latency.type == "histogram"
        count = [s.value for s in latency.samples if s.name == "ikv_writer_commit_seconds_count"]
        assert count == [5.0]
        # A counter of two clients of one store adds up rather than clashing.
        collector.add(writer)
        again = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
        assert [s.value for s in again["ikv_writer_commits"].samples if s.name == "ikv_writer_commits_total"] == [10.0]
        with pytest.raises(IKVTypeError, match="has no metrics"):
            collector.add(object())
    finally:
        reader.shutdown()
        writer.shutdown()
