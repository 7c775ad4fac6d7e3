"""Runs the DuckDB query `ikv snapshot-sql` prints (layers resolved in SQL) and checks its rows
against the expected documents the Rust test wrote.

usage: check_sql.py QUERY_FILE COLUMNS_JSON EXPECTED_JSON
"""

import json
import pathlib
import sys

import duckdb

from check_snapshot import assert_documents, typed


def main() -> None:
    query = pathlib.Path(sys.argv[1]).read_text()
    columns = json.loads(pathlib.Path(sys.argv[2]).read_text())
    expected = json.loads(pathlib.Path(sys.argv[3]).read_text())
    con = duckdb.connect()
    result = con.execute(query)
    names = [d[0] for d in result.description]
    assert names[0] == "_ikv_key", names
    assert names[1:] == [c["name"] for c in columns], (names, columns)
    got = {}
    for row in result.fetchall():
        key = bytes(row[0]).decode()
        assert key not in got, f"{key} twice"
        doc = {}
        for c, v in zip(columns, row[1:]):
            if v is not None:
                assert c["field"] not in doc, f"{key}: field {c['field']} in two columns"
                doc[c["field"]] = [c["field_type"], typed(c["field_type"], v)]
        got[key] = doc
    assert list(got) == sorted(got), "rows in key order"
    assert set(got) == set(expected), (sorted(set(got) ^ set(expected))[:5], len(got), len(expected))
    assert_documents(got, expected)
    print(f"ok: {len(expected)} documents, {len(columns)} columns")


if __name__ == "__main__":
    main()
