//! The `ikv` command line on the data itself: a log with a hole (status and get say so), and
//! bulk imports from Parquet with their error paths and retries.

mod common;

use common::{fails, ikv, ok, parquet_file};

#[test]
fn status_names_a_hole_in_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/bucket", dir.path().display());
    ok(&ikv(
        &url,
        &["create-store", "--store", "users", "--primary-key", "id"],
    ));
    for v in 0..3 {
        ok(&ikv(
            &url,
            &[
                "put",
                "--store",
                "users",
                "--key",
                "a",
                "--field",
                &format!("x={v}"),
            ],
        ));
    }
    let status = ok(&ikv(&url, &["status", "--store", "users"]));
    assert!(status.contains("dense"), "{status}");
    std::fs::remove_file(
        dir.path()
            .join("bucket/users/p0000/deltas/00000000000000000002.arrow"),
    )
    .unwrap();
    let out = ikv(&url, &["status", "--store", "users"]);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains("HOLE: delta 2 is missing while delta 3 exists"),
        "{status}"
    );
    fails(&out, 1, "has a hole");
    // A get of a key past the hole says why it cannot answer, not "no document".
    let mount = dir.path().join("mount");
    let out = ikv(
        &url,
        &[
            "get",
            "--store",
            "users",
            "--key",
            "a",
            "--mount",
            mount.to_str().unwrap(),
        ],
    );
    fails(&out, 1, "delta 2 is missing while delta 3 exists");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("caught up"),
        "{out:?}"
    );
}

/// Writes a Parquet file of `columns` (name, array) at `path`.

#[test]
fn import_loads_parquet_and_refuses_bad_input_writing_nothing() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/bucket", dir.path().display());
    let mount = dir.path().join("mount");
    ok(&ikv(
        &url,
        &[
            "create-store",
            "--store",
            "users",
            "--primary-key",
            "id",
            "--partitions",
            "3",
        ],
    ));
    let good = dir.path().join("good.parquet");
    parquet_file(
        &good,
        vec![
            (
                "id",
                Arc::new(arrow_array::StringArray::from(vec![
                    "alice", "bob", "alice",
                ])) as _,
            ),
            (
                "age",
                Arc::new(arrow_array::Int32Array::from(vec![
                    Some(30),
                    Some(41),
                    None,
                ])) as _,
            ),
            (
                "city",
                Arc::new(arrow_array::StringArray::from(vec![
                    Some("Oslo"),
                    None,
                    Some("Lima"),
                ])) as _,
            ),
        ],
    );
    let bad = dir.path().join("bad.parquet");
    parquet_file(
        &bad,
        vec![(
            "user",
            Arc::new(arrow_array::StringArray::from(vec!["x"])) as _,
        )],
    );
    let good_path = good.to_str().unwrap();
    // Bad input first: nothing may be written.
    fails(
        &ikv(
            &url,
            &[
                "import",
                "--store",
                "users",
                "--parquet",
                bad.to_str().unwrap(),
            ],
        ),
        2,
        "the data has no column \"id\"",
    );
    fails(
        &ikv(
            &url,
            &[
                "import",
                "--store",
                "users",
                "--parquet",
                good_path,
                "--mode",
                "merge",
            ],
        ),
        2,
        "mode \"merge\" is not",
    );
    fails(
        &ikv(
            &url,
            &[
                "import",
                "--store",
                "users",
                "--parquet",
                "/nonexistent/x.parquet",
            ],
        ),
        2,
        "cannot read /nonexistent/x.parquet",
    );
    fails(
        &ikv(
            &url,
            &[
                "import",
                "--store",
                "users",
                "--parquet",
                good_path,
                "--import-id",
                "../up",
            ],
        ),
        2,
        "import id",
    );
    fails(
        &ikv(
            &url,
            &[
                "import",
                "--store",
                "users",
                "--parquet",
                good_path,
                "--memory-budget",
                "2 gallons",
            ],
        ),
        2,
        "memory budget \"2 gallons\": unit",
    );
    fails(
        &ikv(
            &url,
            &["import", "--store", "nobody", "--parquet", good_path],
        ),
        3,
        "does not exist",
    );
    // A URL naming an object that is not there.
    let missing = format!("file://{}/no-such.parquet", dir.path().display());
    fails(
        &ikv(&url, &["import", "--store", "users", "--parquet", &missing]),
        2,
        "no-such.parquet: No such file",
    );
    let store_dir = dir.path().join("bucket/users");
    let metrics_file = dir.path().join("import.prom");
    let entries: Vec<_> = std::fs::read_dir(&store_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    assert_eq!(entries, ["store.json"], "nothing written but the store");

    let out = ok(&ikv(
        &url,
        &[
            "import",
            "--store",
            "users",
            "--parquet",
            // The source as a file:// URL (the retry below names the same file by its path
            // and must bring the same rows).
            &format!("file://{good_path}"),
            "--import-id",
            "day-1",
            "--memory-budget",
            "64MiB",
            "--metrics-file",
            metrics_file.to_str().unwrap(),
        ],
    ));
    let receipt: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(receipt["rows"], 3);
    // The batch job's metrics, for node_exporter's textfile collector.
    let metrics = std::fs::read_to_string(&metrics_file).unwrap();
    assert!(
        metrics.contains("ikv_importer_rows_total{store=\"users\"} 3\n"),
        "{metrics}"
    );
    let runs = receipt["runs"].as_u64().unwrap();
    assert!(runs >= 1);
    assert!(
        metrics.contains(&format!(
            "ikv_importer_runs_total{{store=\"users\"}} {runs}\n"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("ikv_importer_import_seconds_count{store=\"users\"} 1\n"),
        "{metrics}"
    );
    assert!(receipt["bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        receipt["documents"], 2,
        "two rows of alice are one document"
    );
    // A retry of the same import commits nothing again, and uploads nothing.
    let files = || {
        let mut out = Vec::new();
        let mut stack = vec![store_dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out.sort();
        out
    };
    let before = files();
    let again = ok(&ikv(
        &url,
        &[
            "import",
            "--store",
            "users",
            "--parquet",
            good_path,
            "--import-id",
            "day-1",
        ],
    ));
    let again: serde_json::Value = serde_json::from_str(again.trim()).unwrap();
    assert_eq!(again["runs"], 0, "a retry uploads no run");
    assert!(
        again["commits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["earlier"] == true)
    );
    assert_eq!(again["documents"], 2, "{again}");
    let after = files();
    assert_eq!(
        after
            .iter()
            .filter(|f| f.to_string_lossy().contains("tip.json"))
            .count(),
        after.len() - before.len()
            + before
                .iter()
                .filter(|f| f.to_string_lossy().contains("tip.json"))
                .count(),
        "nothing uploaded but tip hints: {:?}",
        after
            .iter()
            .filter(|f| !before.contains(f))
            .collect::<Vec<_>>()
    );
    // The same id with another mode, or other data, is another import: refused.
    fails(
        &ikv(
            &url,
            &[
                "import",
                "--store",
                "users",
                "--parquet",
                good_path,
                "--import-id",
                "day-1",
                "--mode",
                "replace",
            ],
        ),
        2,
        "in upsert mode",
    );
    let other = dir.path().join("other.parquet");
    parquet_file(
        &other,
        vec![(
            "id",
            Arc::new(arrow_array::StringArray::from(vec![
                "alice", "carol", "dan", "eve",
            ])) as _,
        )],
    );
    fails(
        &ikv(
            &url,
            &[
                "import",
                "--store",
                "users",
                "--parquet",
                other.to_str().unwrap(),
                "--import-id",
                "day-1",
            ],
        ),
        2,
        "use a new id",
    );
    assert_eq!(files().len(), after.len(), "refused retries wrote nothing");
    let got = ok(&ikv(
        &url,
        &[
            "get",
            "--store",
            "users",
            "--key",
            "alice",
            "--mount",
            mount.to_str().unwrap(),
        ],
    ));
    let doc: serde_json::Value = serde_json::from_str(got.trim()).unwrap();
    // The later row's city wins; its null age leaves the earlier age.
    assert_eq!(doc["age"], 30, "{doc}");
    assert_eq!(doc["city"], "Lima", "{doc}");
    assert_eq!(doc["id"], "alice", "{doc}");
}
