//! The `snapshot` Lambda entry point refuses a retention window shorter than writers trust a
//! learned tip, and refuses to run outside the Lambda runtime, before it touches the bucket.

use std::process::Command;

#[test]
fn a_retention_window_under_ten_minutes_is_refused_before_anything_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bucket");
    let out = Command::new(env!("CARGO_BIN_EXE_snapshot"))
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .arg("--storage-url")
        .arg(format!("file://{}", root.display()))
        .args(["--retention", "5m"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--retention 5m is too short: the minimum is 10m"),
        "{stderr}"
    );
    assert!(!root.exists(), "nothing created");
}

#[test]
fn outside_the_lambda_runtime_it_points_at_ikv_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bucket");
    let out = Command::new(env!("CARGO_BIN_EXE_snapshot"))
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .arg("--storage-url")
        .arg(format!("file://{}", root.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ikv snapshot"), "{stderr}");
    assert!(!root.exists(), "nothing created");
}
