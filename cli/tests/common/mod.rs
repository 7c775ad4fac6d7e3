//! Running the `ikv` binary in tests, and what its answers must look like.
#![allow(dead_code)] // each test file uses some of these

use std::process::{Command, Output};

pub fn ikv(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ikv"))
        .arg("--storage-url")
        .arg(url)
        .args(args)
        .env_remove("IKV_STORAGE_URL")
        .output()
        .unwrap()
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn fails(out: &Output, code: i32, words: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(stderr.contains(words), "wanted {words:?} in {stderr:?}");
}

pub fn parquet_file(path: &std::path::Path, columns: Vec<(&str, arrow_array::ArrayRef)>) {
    let batch = arrow_array::RecordBatch::try_from_iter(columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}
