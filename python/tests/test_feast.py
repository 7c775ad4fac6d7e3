"""A real Feast repository whose online store is ikv: `feast apply` from the command line,
then materialize from a local Parquet offline store, get_online_features (sync and async),
a second materialization that changes values, a backfill of an older window that does not
(event-time order), a view whose ttl has passed serving nothing, and a feature view deleted
by apply."""

import asyncio
import os
import pathlib
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

pytest.importorskip("feast")  # installed by scripts/python-env.sh

from feast import FeatureStore  # noqa: E402

FEATURES = '''
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float32, Int64, String, Array

driver = Entity(name="driver", join_keys=["driver_id"])
stats = FileSource(path="{data}", timestamp_field="event_timestamp")
driver_stats = FeatureView(
    name="driver_stats",
    entities=[driver],
    ttl=timedelta(days=30),
    schema=[
        Field(name="conv_rate", dtype=Float32),
        Field(name="trips", dtype=Int64),
        Field(name="city", dtype=String),
        Field(name="scores", dtype=Array(Int64)),
    ],
    source=stats,
)
driver_recent = FeatureView(
    name="driver_recent",
    entities=[driver],
    ttl=timedelta(hours=1),
    schema=[Field(name="trips", dtype=Int64)],
    source=stats,
)
'''


def write_data(path: pathlib.Path, when: datetime, bump: int) -> None:
    ids = list(range(1000, 1010))
    frame = pd.DataFrame(
        {
            "driver_id": ids,
            "conv_rate": [0.5 + i / 100 + bump for i in range(10)],
            "trips": [i * 10 + bump for i in range(10)],
            "city": [f"city-{i}-{bump}" for i in range(10)],
            "scores": [[i, bump] for i in range(10)],
            "event_timestamp": [when] * 10,
        }
    )
    frame.to_parquet(path)


def test_a_feast_repository_materializes_into_ikv_and_serves_online(local_storage, tmp_path: pathlib.Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    data = tmp_path / "driver_stats.parquet"
    # Event times a few days back: inside driver_stats' 30-day ttl, past driver_recent's hour.
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(days=3)
    write_data(data, start + timedelta(hours=1), 0)
    (repo / "features.py").write_text(FEATURES.format(data=data))
    (repo / "feature_store.yaml").write_text(
        textwrap.dedent(
            f"""\
            project: rides
            registry: {tmp_path / 'registry.db'}
            provider: local
            entity_key_serialization_version: 3
            offline_store:
              type: file
            online_store:
              type: ikvpy.feast.IKVOnlineStore
              storage_url: {local_storage.url}
              mount_directory: {tmp_path / 'mount'}
              num_partitions: 2
              poll_interval_seconds: 0.02
            """
        )
    )
    feast_cli = pathlib.Path(sys.executable).parent / "feast"
    env = dict(os.environ, FEAST_USAGE="False")
    applied = subprocess.run([str(feast_cli), "apply"], cwd=repo, env=env, capture_output=True, text=True)
    assert applied.returncode == 0, applied.stdout + applied.stderr

    store = FeatureStore(repo_path=str(repo))
    store.materialize(start, start + timedelta(days=1))
    refs = ["driver_stats:conv_rate", "driver_stats:trips", "driver_stats:city", "driver_stats:scores"]
    got = store.get_online_features(features=refs, entity_rows=[{"driver_id": 1003}, {"driver_id": 1009}, {"driver_id": 42}]).to_dict()
    assert got["driver_id"] == [1003, 1009, 42]
    assert got["trips"] == [30, 90, None]
    assert got["city"] == ["city-3-0", "city-9-0", None]
    assert got["scores"] == [[3, 0], [9, 0], None]
    assert got["conv_rate"][0] == pytest.approx(0.53)

    # A second materialization with newer rows changes what is served.
    write_data(data, start + timedelta(days=1, hours=1), 5)
    store = FeatureStore(repo_path=str(repo))
    store.materialize(start + timedelta(days=1), start + timedelta(days=2))
    got = store.get_online_features(features=refs, entity_rows=[{"driver_id": 1003}]).to_dict()
    assert got["trips"] == [35] and got["city"] == ["city-3-5"] and got["scores"] == [[3, 5]]

    # A backfill of the older window, materialized after the newer one, changes nothing: rows
    # older than the stored ones are skipped.
    write_data(data, start + timedelta(hours=2), 9)
    store = FeatureStore(repo_path=str(repo))
    store.materialize(start, start + timedelta(days=1))
    got = store.get_online_features(features=refs, entity_rows=[{"driver_id": 1003}]).to_dict()
    assert got["trips"] == [35] and got["city"] == ["city-3-5"] and got["scores"] == [[3, 5]]

    # driver_recent has a one-hour ttl: a row written now is served; a row two hours old
    # (newer than what the materialization stored for its driver, so it is written) is not.
    now = datetime.now(timezone.utc)
    fresh = pd.DataFrame({"driver_id": [1001, 1002], "trips": [7, 8], "event_timestamp": [now, now - timedelta(hours=2)]})
    store.write_to_online_store("driver_recent", fresh)
    got = store.get_online_features(
        features=["driver_recent:trips", "driver_stats:trips"],
        entity_rows=[{"driver_id": 1001}, {"driver_id": 1002}],
        full_feature_names=True,
    ).to_dict()
    assert got["driver_recent__trips"] == [7, None]
    assert got["driver_stats__trips"] == [15, 25]

    # The async read path.
    got = asyncio.run(store.get_online_features_async(features=refs[:2], entity_rows=[{"driver_id": 1001}])).to_dict()
    assert got["trips"] == [15]

    # Removing the view from the repository drops its fields from the store.
    (repo / "features.py").write_text("from feast import Entity\ndriver = Entity(name='driver', join_keys=['driver_id'])\n")
    applied = subprocess.run([str(feast_cli), "apply"], cwd=repo, env=env, capture_output=True, text=True)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    import ikvpy.client as ikv_client
    from ikvpy.clientoptions import ClientOptionsBuilder

    options = (
        ClientOptionsBuilder()
        .with_account_id("t")
        .with_account_passkey("t")
        .with_store_name("feast-rides")
        .with_storage_url(local_storage.url)
        .with_mount_directory(str(tmp_path / "mount-check"))
        .build()
    )
    with ikv_client.IKVReader(options) as reader:
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        key = serialize_entity_key(EntityKey(join_keys=["driver_id"], entity_values=[Value(int64_val=1003)]), 3)
        assert reader.get_bytes_value(key, "feast_entity_key") == key
        assert reader.get_bytes_value(key, "driver_stats:trips") is None
