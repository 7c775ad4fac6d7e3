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


def _apply(repo: pathlib.Path, project: str, tmp_path: pathlib.Path, storage_url: str):
    """Writes the repository's feature_store.yaml (ikv as the online store) and runs `feast
    apply` from the command line; returns the feast command and its environment."""
    (repo / "feature_store.yaml").write_text(
        textwrap.dedent(
            f"""\
            project: {project}
            registry: {tmp_path / 'registry.db'}
            provider: local
            entity_key_serialization_version: 3
            offline_store:
              type: file
            online_store:
              type: ikvpy.feast.IKVOnlineStore
              storage_url: {storage_url}
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
    return feast_cli, env


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
    feast_cli, env = _apply(repo, "rides", tmp_path, local_storage.url)

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

    # A backfill of the older window, materialized after the newer one, changes nothing: ikv
    # keeps each field's newest event time whatever the commit order.
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


TYPED_FEATURES = '''
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource
from feast.types import Array, Bool, Bytes, Float32, Float64, Int32, Int64, String, UnixTimestamp

driver = Entity(name="driver", join_keys=["driver_id"])
zone = Entity(name="zone", join_keys=["zone"])
typed_source = FileSource(path="{typed}", timestamp_field="event_timestamp")
pair_source = FileSource(path="{pairs}", timestamp_field="event_timestamp")
typed = FeatureView(
    name="typed",
    entities=[driver],
    ttl=timedelta(days=30),
    schema=[
        Field(name="i32", dtype=Int32),
        Field(name="i64", dtype=Int64),
        Field(name="f32", dtype=Float32),
        Field(name="f64", dtype=Float64),
        Field(name="s", dtype=String),
        Field(name="b", dtype=Bytes),
        Field(name="ok", dtype=Bool),
        Field(name="at", dtype=UnixTimestamp),
        Field(name="arr", dtype=Array(Int64)),
        Field(name="never", dtype=Int64),
    ],
    source=typed_source,
)
stale = FeatureView(
    name="stale",
    entities=[driver],
    ttl=timedelta(hours=1),
    schema=[Field(name="i64", dtype=Int64)],
    source=typed_source,
)
pairs = FeatureView(
    name="pairs",
    entities=[driver, zone],
    ttl=timedelta(days=30),
    schema=[Field(name="score", dtype=Float64), Field(name="label", dtype=String)],
    source=pair_source,
)
'''


def test_read_features_equals_get_online_features_value_for_value(local_storage, tmp_path: pathlib.Path) -> None:
    from ikvpy.errors import IKVTypeError, IKVValueError
    from ikvpy.feast import read_features

    repo = tmp_path / "repo"
    repo.mkdir()
    when = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=2)
    n = 40
    ids = list(range(2000, 2000 + n))
    typed = pd.DataFrame(
        {
            "driver_id": ids,
            "i32": [(-1) ** i * i * 1000 for i in range(n)],
            "i64": [(-1) ** i * i * 10**12 for i in range(n)],
            "f32": [i / 3 for i in range(n)],
            "f64": [-i / 7 for i in range(n)],
            "s": [f"é-{i}" if i % 5 else None for i in range(n)],
            "b": [bytes([i, 0, 255]) for i in range(n)],
            "ok": [i % 2 == 0 for i in range(n)],
            "at": [when - timedelta(minutes=i) for i in range(n)],
            "arr": [[i, -i] for i in range(n)],
            "never": [None] * n,
            "event_timestamp": [when] * n,
        }
    )
    typed["never"] = typed["never"].astype("Int64")
    typed.to_parquet(tmp_path / "typed.parquet")
    pairs = pd.DataFrame(
        {
            "driver_id": [2000, 2000, 2001],
            "zone": ["north", "south", "north"],
            "score": [0.25, 0.5, 0.75],
            "label": ["a", "b", "c"],
            "event_timestamp": [when] * 3,
        }
    )
    pairs.to_parquet(tmp_path / "pairs.parquet")
    (repo / "features.py").write_text(TYPED_FEATURES.format(typed=tmp_path / "typed.parquet", pairs=tmp_path / "pairs.parquet"))
    _apply(repo, "typed", tmp_path, local_storage.url)
    store = FeatureStore(repo_path=str(repo))
    store.materialize(when - timedelta(days=1), when + timedelta(hours=1))

    typed_refs = [f"typed:{f}" for f in ["i32", "i64", "f32", "f64", "s", "b", "ok", "at", "arr", "never"]]
    cases = [
        (typed_refs + ["stale:i64"], [{"driver_id": i} for i in [2003, 2000, 1, 2039, 2005]], True),
        (typed_refs, [{"driver_id": i} for i in [2003, 2000, 1, 2039, 2005]], False),
        (typed_refs[:3] + ["stale:i64"], [{"driver_id": i} for i in ids], True),
        (["pairs:score", "pairs:label", "typed:s"], [{"driver_id": d, "zone": z} for d, z in [(2000, "south"), (2001, "north"), (2001, "south"), (2000, "north")]], False),
        (["typed:i64"], [{"driver_id": 7}], False),
        # One view, one int64 join key, scalar features: the native path builds keys and column.
        (["typed:i64", "typed:s", "typed:at", "typed:never", "typed:ok"], [{"driver_id": i} for i in [2001, 5, 2002, 2010, 2001]], False),
        (["stale:i64"], [{"driver_id": i} for i in ids[:5]], True),
    ]
    for refs, rows, full in cases:
        want = store.get_online_features(features=refs, entity_rows=rows, full_feature_names=full).to_arrow()
        got = read_features(store, refs, rows, full_feature_names=full)
        # Feast orders a view's features by a set (its order changes between processes): the
        # same columns, here in the order asked for.
        assert got.column_names == list(rows[0]) + [r.split(":")[1] if not full else r.replace(":", "__") for r in refs]
        assert sorted(got.column_names) == sorted(want.column_names), (got.column_names, want.column_names)
        for name in want.column_names:
            assert got.column(name).type == want.column(name).type, (name, got.column(name).type, want.column(name).type)
            assert got.column(name).to_pylist() == want.column(name).to_pylist(), name
        assert got.select(want.column_names).equals(want)
        # The same rows as a dict of lists, and through the repository's configuration.
        columns = {k: [r[k] for r in rows] for k in rows[0]}
        assert read_features(store.config, refs, columns, full_feature_names=full).equals(got)
    # Something was served, and the one-hour view served nothing (its rows are two days old).
    got = read_features(store, ["typed:i64", "stale:i64"], [{"driver_id": 2003}], full_feature_names=True)
    assert got.column("typed__i64").to_pylist() == [-3 * 10**12]
    assert got.column("stale__i64").to_pylist() == [None]

    with pytest.raises(IKVValueError, match="full_feature_names"):
        read_features(store, ["typed:i64", "stale:i64"], [{"driver_id": 1}])

    with pytest.raises(IKVValueError, match="no feature 'nope'"):
        read_features(store, ["typed:nope"], [{"driver_id": 1}])
    with pytest.raises(IKVValueError, match="view:feature"):
        read_features(store, ["typed.i64"], [{"driver_id": 1}])
    with pytest.raises(IKVValueError, match="join key 'zone'"):
        read_features(store, ["pairs:score"], [{"driver_id": 1}])
    with pytest.raises(IKVValueError, match="string key"):
        read_features(store, ["pairs:score"], [{"driver_id": 1, "zone": 5}])
    for refs in (["typed:i64"], ["typed:arr"]):  # the native path and the general one
        with pytest.raises(IKVValueError, match="integers"):
            read_features(store, refs, [{"driver_id": "x"}])
        with pytest.raises(IKVValueError, match="integers"):
            read_features(store, refs, [{"driver_id": 2**70}])
    with pytest.raises(IKVValueError, match="other keys"):
        read_features(store, ["typed:i64"], [{"driver_id": 1}, {"zone": "x"}])
    with pytest.raises(IKVTypeError, match="one string"):
        read_features(store, "typed:i64", [{"driver_id": 1}])
    with pytest.raises(IKVTypeError, match="FeatureStore"):
        read_features(object(), ["typed:i64"], [{"driver_id": 1}])
