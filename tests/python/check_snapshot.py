"""Reads an ikv snapshot as an ordinary table with pyarrow, pandas and DuckDB, and checks it
against the expected documents the Rust test wrote.

usage: check_snapshot.py SNAPSHOT_DIR EXPECTED_JSON
"""

import json
import math
import pathlib
import sys

import duckdb
import pandas as pd
import pyarrow.parquet as pq


def typed(field_type: str, value):
    if field_type == "bytes":
        return bytes(value).hex()
    if field_type == "float64":
        return float(value)
    return value


def assert_documents(got: dict, expected: dict) -> None:
    """Every expected document is in `got` with the same fields, types and values."""
    for key, doc in expected.items():
        assert key in got, f"missing document {key}"
        for field, (t, v) in doc.items():
            gt, gv = got[key][field]
            assert gt == t, (key, field, gt, t)
            if t == "float64":
                assert math.isclose(gv, v, rel_tol=0, abs_tol=0) or gv == v, (key, field, gv, v)
            else:
                assert gv == v, (key, field, gv, v)
        assert set(got[key]) == set(doc), (key, sorted(got[key]), sorted(doc))


def main() -> None:
    snapshot_dir = pathlib.Path(sys.argv[1])
    expected = json.loads(pathlib.Path(sys.argv[2]).read_text())
    manifest = json.loads((snapshot_dir / "manifest.json").read_text())
    files = [str(snapshot_dir / f["path"]) for f in manifest["files"]]
    columns = manifest["columns"]

    # pyarrow: every document, field and type.
    table = pq.ParquetDataset(files).read()
    assert table.num_rows == manifest["row_count"] == len(expected), (table.num_rows, len(expected))
    got = {}
    for row in table.to_pylist():
        key = row[manifest["key_column"]].decode()
        doc = {}
        for c in columns:
            v = row[c["name"]]
            if v is not None:
                assert c["field"] not in doc, f"{key}: field {c['field']} in two columns"
                doc[c["field"]] = [c["field_type"], typed(c["field_type"], v)]
        got[key] = doc
    assert_documents(got, expected)

    # pandas: the same rows, keys sorted.
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    assert len(frame) == len(expected)
    keys = [k.decode() for k in frame[manifest["key_column"]]]
    assert keys == sorted(expected), "pandas sees the rows in key order"

    # DuckDB: SQL over the files.
    con = duckdb.connect()
    count = con.execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchone()[0]
    assert count == len(expected), count
    id_column = next(c["name"] for c in columns if c["field"] == manifest["primary_key_field"])
    ids = [r[0] for r in con.execute(f'SELECT "{id_column}" FROM read_parquet(?) ORDER BY 1', [files]).fetchall()]
    assert ids == sorted(expected), "DuckDB reads the primary-key column"
    print(f"ok: {len(expected)} documents, {len(columns)} columns, {len(files)} files")


if __name__ == "__main__":
    main()
