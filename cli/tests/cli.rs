//! The `ikv` command line: each command's happy path and its error paths, with exit codes;
//! and the demo, on a local directory and on the S3 emulator. (Logs with holes and imports:
//! `cli_data.rs`.)

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{fails, ikv, ok};

#[test]
fn store_commands_happy_paths_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/bucket", dir.path().display());
    let mount = dir.path().join("mount");
    let mount = mount.to_str().unwrap();

    assert!(
        ok(&ikv(
            &url,
            &[
                "create-store",
                "--store",
                "users",
                "--primary-key",
                "id",
                "--partitions",
                "2"
            ]
        ))
        .contains("created store \"users\"")
    );
    fails(
        &ikv(
            &url,
            &["create-store", "--store", "users", "--primary-key", "x"],
        ),
        5,
        "already exists",
    );
    fails(
        &ikv(
            &url,
            &["create-store", "--store", "../up", "--primary-key", "x"],
        ),
        2,
        "invalid store name",
    );
    fails(
        &ikv(
            &url,
            &[
                "create-store",
                "--store",
                "z",
                "--primary-key",
                "x",
                "--partitions",
                "0",
            ],
        ),
        2,
        "num_partitions",
    );

    fails(
        &ikv(
            &url,
            &[
                "create-store",
                "--store",
                "t",
                "--primary-key",
                "x",
                "--ttl",
                "0",
            ],
        ),
        2,
        "ttl_seconds must be between 1 and 3153600000 seconds, got 0",
    );
    fails(
        &ikv(
            &url,
            &[
                "create-store",
                "--store",
                "t",
                "--primary-key",
                "x",
                "--ttl",
                "a week",
            ],
        ),
        2,
        "invalid value 'a week' for '--ttl <TTL>'",
    );
    assert!(
        ok(&ikv(
            &url,
            &[
                "create-store",
                "--store",
                "t",
                "--primary-key",
                "x",
                "--ttl",
                "90"
            ]
        ))
        .contains("values expire after 90 s")
    );
    let described = ok(&ikv(&url, &["describe", "--store", "t"]));
    let config: serde_json::Value = serde_json::from_str(&described).unwrap();
    assert_eq!(config["ttl_seconds"], 90);

    let described = ok(&ikv(&url, &["describe", "--store", "users"]));
    let config: serde_json::Value = serde_json::from_str(&described).unwrap();
    assert_eq!(config["primary_key_field"], "id");
    assert!(config.get("ttl_seconds").is_none(), "{described}");
    fails(
        &ikv(&url, &["describe", "--store", "nope"]),
        3,
        "does not exist",
    );

    assert!(
        ok(&ikv(
            &url,
            &[
                "put",
                "--store",
                "users",
                "--key",
                "Alice",
                "--field",
                "city=Paris",
                "--field",
                "age:int64=22",
                "--field",
                "vip:bool=true"
            ]
        ))
        .contains("committed")
    );
    fails(
        &ikv(
            &url,
            &[
                "put",
                "--store",
                "users",
                "--key",
                "Alice",
                "--field",
                "age:int64=old",
            ],
        ),
        2,
        "not a 64-bit integer",
    );
    fails(
        &ikv(
            &url,
            &[
                "put", "--store", "users", "--key", "Alice", "--field", "nofield",
            ],
        ),
        2,
        "expected name=value",
    );
    fails(
        &ikv(
            &url,
            &[
                "put",
                "--store",
                "users",
                "--key",
                "Alice",
                "--field",
                "x:decimal=1",
            ],
        ),
        2,
        "unknown type",
    );
    fails(
        &ikv(&url, &["put", "--store", "users", "--key", "Alice"]),
        2,
        "at least one --field",
    );
    fails(
        &ikv(
            &url,
            &["put", "--store", "nope", "--key", "Alice", "--field", "a=b"],
        ),
        3,
        "does not exist",
    );

    let status = ok(&ikv(&url, &["status", "--store", "users"]));
    // A header, a line per partition, then the wake signal the first commit wrote.
    assert!(
        status.lines().count() == 5 && status.contains("none"),
        "{status}"
    );
    assert!(
        status.contains("wake signal: partition 1 woke at delta 1, "),
        "{status}"
    );
    let got = ok(&ikv(
        &url,
        &[
            "get", "--store", "users", "--key", "Alice", "--mount", mount,
        ],
    ));
    let doc: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(
        doc,
        serde_json::json!({"id": "Alice", "city": "Paris", "age": 22, "vip": true})
    );
    let got = ok(&ikv(
        &url,
        &[
            "get", "--store", "users", "--key", "Alice", "--field", "age", "--mount", mount,
        ],
    ));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&got).unwrap(),
        serde_json::json!({"age": 22})
    );
    fails(
        &ikv(
            &url,
            &[
                "get", "--store", "users", "--key", "Nobody", "--mount", mount,
            ],
        ),
        3,
        "no document with key \"Nobody\"",
    );

    ok(&ikv(
        &url,
        &[
            "delete", "--store", "users", "--key", "Alice", "--field", "city",
        ],
    ));
    let got = ok(&ikv(
        &url,
        &[
            "get", "--store", "users", "--key", "Alice", "--mount", mount,
        ],
    ));
    assert!(!got.contains("Paris"));
    ok(&ikv(
        &url,
        &["delete", "--store", "users", "--key", "Alice"],
    ));
    fails(
        &ikv(
            &url,
            &[
                "get", "--store", "users", "--key", "Alice", "--mount", mount,
            ],
        ),
        3,
        "no document",
    );

    fails(
        &ikv(&url, &["snapshot-sql", "--store", "users"]),
        3,
        "has no snapshot yet",
    );
    // The deployed pass's plan: the store's two partitions, one task under the default budget,
    // one each under a budget below their estimates; a bad budget or store refused by name.
    let plan: serde_json::Value =
        serde_json::from_str(&ok(&ikv(&url, &["snapshot-plan", "--store", "users"]))).unwrap();
    assert_eq!(plan["tasks"].as_array().unwrap().len(), 1, "{plan}");
    assert_eq!(
        plan["tasks"][0]["work"].as_array().unwrap().len(),
        2,
        "{plan}"
    );
    let tight: serde_json::Value = serde_json::from_str(&ok(&ikv(
        &url,
        &[
            "snapshot-plan",
            "--store",
            "users",
            "--task-seconds",
            "1e-9",
        ],
    )))
    .unwrap();
    assert_eq!(tight["tasks"].as_array().unwrap().len(), 2, "{tight}");
    fails(
        &ikv(&url, &["snapshot-plan", "--task-seconds", "0"]),
        2,
        "--task-seconds must be a positive number",
    );
    fails(
        &ikv(&url, &["snapshot-plan", "--store", "nope"]),
        3,
        "does not exist",
    );
    let snap = ok(&ikv(&url, &["snapshot", "--store", "users", "--force"]));
    assert!(
        snap.contains("users p0") && snap.contains("users p1"),
        "{snap}"
    );
    // Checkpoints: made, listed (p<partition>=<sequence>@<snapshot>), refused twice or by a
    // bad name, deleted once.
    let made = ok(&ikv(
        &url,
        &["checkpoint", "create", "--store", "users", "--name", "c1"],
    ));
    assert!(
        made.starts_with("created checkpoint c1 ") && made.contains(" p1=3@3"),
        "{made}"
    );
    fails(
        &ikv(
            &url,
            &["checkpoint", "create", "--store", "users", "--name", "c1"],
        ),
        5,
        "already has a checkpoint \"c1\"",
    );
    fails(
        &ikv(
            &url,
            &["checkpoint", "create", "--store", "users", "--name", "a/b"],
        ),
        2,
        "checkpoint name",
    );
    let listed = ok(&ikv(&url, &["checkpoint", "list", "--store", "users"]));
    assert!(
        listed.starts_with("c1 ") && listed.lines().count() == 1,
        "{listed}"
    );
    ok(&ikv(
        &url,
        &["checkpoint", "delete", "--store", "users", "--name", "c1"],
    ));
    fails(
        &ikv(
            &url,
            &["checkpoint", "delete", "--store", "users", "--name", "c1"],
        ),
        3,
        "no checkpoint",
    );
    assert_eq!(
        ok(&ikv(&url, &["checkpoint", "list", "--store", "users"])).trim(),
        ""
    );
    // A query over the snapshot files where they are (DuckDB runs one over layers in the
    // snapshot tests); every document was deleted, so it selects nothing, typed.
    let sql = ok(&ikv(&url, &["snapshot-sql", "--store", "users"]));
    assert!(
        sql.starts_with("SELECT") && sql.contains("NULL::BLOB AS \"_ikv_key\" WHERE false"),
        "{sql}"
    );
    let status = ok(&ikv(&url, &["status", "--store", "users"]));
    assert!(snap.contains("snapshot at 3"), "{snap}");
    let p1 = status.lines().find(|l| l.starts_with('1')).unwrap();
    assert!(
        !p1.contains("none") && p1.trim_end().ends_with(" 0  dense"),
        "partition 1 has a snapshot and nothing since: {status}"
    );
    ok(&ikv(
        &url,
        &["checkpoint", "create", "--store", "users", "--name", "c2"],
    ));
    // Alice comes back after the checkpoint: the tip has her, a reader pinned to c2 (or to a
    // time before any write) does not; both pins at once, or a time that is not one, refused.
    ok(&ikv(
        &url,
        &[
            "put",
            "--store",
            "users",
            "--key",
            "Alice",
            "--field",
            "city=Rome",
        ],
    ));
    let get_alice = |pin: &[&str]| {
        let mut args = vec![
            "get", "--store", "users", "--key", "Alice", "--mount", mount,
        ];
        args.extend_from_slice(pin);
        ikv(&url, &args)
    };
    let got = ok(&get_alice(&[]));
    assert!(got.contains("Rome"), "{got}");
    fails(&get_alice(&["--checkpoint", "c2"]), 3, "no document");
    fails(
        &get_alice(&["--as-of", "2000-01-01T00:00:00Z"]),
        3,
        "no document",
    );
    fails(
        &get_alice(&["--checkpoint", "c2", "--as-of", "2000-01-01T00:00:00Z"]),
        2,
        "cannot be used with",
    );
    fails(
        &get_alice(&["--as-of", "yesterday"]),
        2,
        "not an RFC 3339 time",
    );
    ok(&ikv(
        &url,
        &["checkpoint", "delete", "--store", "users", "--name", "c2"],
    ));
    fails(
        &ikv(&url, &["snapshot", "--store", "nope"]),
        3,
        "does not exist",
    );
    // The pass's options are checked before the bucket is touched.
    fails(
        &ikv(&url, &["snapshot", "--retention", "5m"]),
        2,
        "--retention 5m is too short",
    );
    // --every repeats passes until interrupted; Ctrl-C ends it cleanly.
    let mut looping = Command::new(env!("CARGO_BIN_EXE_ikv"))
        .args([
            "--storage-url",
            &url,
            "snapshot",
            "--store",
            "users",
            "--every",
            "1h",
        ])
        .env_remove("IKV_STORAGE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kept open until the process ends: what it prints on the way out has somewhere to go.
    let mut output = std::io::BufReader::new(looping.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut output, &mut first).unwrap();
    assert!(first.contains("users"), "a pass was reported: {first:?}");
    let interrupted = Command::new("kill")
        .args(["-INT", &looping.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    assert_eq!(looping.wait().unwrap().code(), Some(0));
    drop(output);

    // No storage root at all.
    let out = Command::new(env!("CARGO_BIN_EXE_ikv"))
        .args(["describe", "--store", "users"])
        .env_remove("IKV_STORAGE_URL")
        .output()
        .unwrap();
    fails(&out, 2, "no storage root");
    fails(
        &ikv("ftp://nowhere/x", &["describe", "--store", "users"]),
        2,
        "unsupported scheme",
    );
}

#[test]
fn no_access_to_the_storage_is_exit_code_4() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let url = format!("file://{}/bucket", dir.path().display());
    ok(&ikv(
        &url,
        &["create-store", "--store", "users", "--primary-key", "id"],
    ));
    let store_dir = dir.path().join("bucket/users");
    std::fs::set_permissions(&store_dir, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root ignores permission bits: run the command as an unprivileged user then.
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_ikv"),
        ]);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_ikv"))
    };
    let out = cmd
        .args(["--storage-url", &url, "describe", "--store", "users"])
        .env_remove("IKV_STORAGE_URL")
        .output()
        .unwrap();
    std::fs::set_permissions(&store_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    fails(&out, 4, "Permission denied");
}

#[test]
fn hash_passkey_generates_and_hashes() {
    let out = ok(&ikv("memory://", &["hash-passkey", "--generate"]));
    assert!(
        out.contains("passkey:") && out.contains("passkey_hash: sha256:"),
        "{out}"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_ikv"))
        .args(["hash-passkey"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"short\n").unwrap();
    fails(
        &child.wait_with_output().unwrap(),
        2,
        "at least 16 characters",
    );
}

#[test]
fn the_demo_runs_on_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/bucket", dir.path().display());
    let mount = dir.path().join("mount");
    let out = ok(&ikv(
        &url,
        &[
            "demo",
            "--documents",
            "3000",
            "--mount",
            mount.to_str().unwrap(),
        ],
    ));
    assert!(
        out.contains("get(\"Alice\", \"age\") = Some(\"22\")"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("demo OK"), "{out}");
}

/// The demo removes only what it made: a `--mount` holding the user's files is refused before
/// anything is written, and an empty one is left as it was found (empty, not deleted).
#[test]
fn the_demo_never_deletes_a_directory_it_did_not_make() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/bucket", dir.path().display());
    let mount = dir.path().join("mine");
    std::fs::create_dir(&mount).unwrap();
    std::fs::write(mount.join("thesis.txt"), b"years of work").unwrap();
    let out = ikv(
        &url,
        &[
            "demo",
            "--documents",
            "100",
            "--mount",
            mount.to_str().unwrap(),
        ],
    );
    fails(&out, 2, "is not empty");
    assert_eq!(
        std::fs::read(mount.join("thesis.txt")).unwrap(),
        b"years of work"
    );
    assert!(
        !dir.path().join("bucket").exists(),
        "nothing was written to the bucket"
    );

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = ok(&ikv(
        &url,
        &[
            "demo",
            "--documents",
            "100",
            "--mount",
            empty.to_str().unwrap(),
        ],
    ));
    assert!(out.trim_end().ends_with("demo OK"), "{out}");
    assert!(empty.is_dir(), "the user's directory is still there");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "and empty");
}

#[test]
fn the_demo_runs_on_localstack() {
    let endpoint =
        std::env::var("IKV_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4566".into());
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ikv"))
        .args([
            "--storage-url",
            &format!("s3://ikv-test/demo-{}", std::process::id()),
            "demo",
            "--documents",
            "3000",
        ])
        .arg("--mount")
        .arg(dir.path())
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    let text = ok(&out);
    assert!(text.trim_end().ends_with("demo OK"), "{text}");
}

#[test]
fn an_unreadable_store_configuration_is_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/bucket", dir.path().display());
    ok(&ikv(
        &url,
        &["create-store", "--store", "users", "--primary-key", "id"],
    ));
    // Bytes in the bucket that no ikv wrote: not bad arguments, not missing, not denied.
    std::fs::write(dir.path().join("bucket/users/store.json"), b"{not json").unwrap();
    for args in [
        &["describe", "--store", "users"][..],
        &["put", "--store", "users", "--key", "a", "--field", "x=1"][..],
    ] {
        fails(&ikv(&url, args), 1, "store.json");
    }
}

#[test]
fn put_refuses_reserved_names_and_a_second_primary_key_writing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/bucket", dir.path().display());
    ok(&ikv(
        &url,
        &["create-store", "--store", "users", "--primary-key", "id"],
    ));
    let deltas = dir.path().join("bucket/users/p0000/deltas");
    let count = || std::fs::read_dir(&deltas).map(|d| d.count()).unwrap_or(0);
    fails(
        &ikv(
            &url,
            &[
                "put", "--store", "users", "--key", "k", "--field", "id=other",
            ],
        ),
        2,
        "sets the primary key",
    );
    fails(
        &ikv(
            &url,
            &[
                "put",
                "--store",
                "users",
                "--key",
                "k",
                "--field",
                "_ikv_key=x",
            ],
        ),
        2,
        "reserved",
    );
    assert_eq!(count(), 0, "nothing was written");
    // The same value as --key is harmless.
    ok(&ikv(
        &url,
        &[
            "put", "--store", "users", "--key", "k", "--field", "id=k", "--field", "a=1",
        ],
    ));
    assert_eq!(count(), 1);
}

#[test]
fn a_get_shuts_down_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/bucket", dir.path().display());
    ok(&ikv(
        &url,
        &["create-store", "--store", "users", "--primary-key", "id"],
    ));
    ok(&ikv(
        &url,
        &["put", "--store", "users", "--key", "a", "--field", "x=1"],
    ));
    for i in 0..3 {
        let mount = dir.path().join(format!("m{i}"));
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
        assert!(ok(&out).contains("\"x\""));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("WARN"),
            "shutdown is not a failure: {stderr}"
        );
    }
}
