#![allow(clippy::disallowed_methods)] // real processes, real time
//! `ikv status --watch`: frames redrawn until Ctrl-C, the write rate from the tips, and each
//! scraped endpoint's state (an `ikv serve` with no writer for the store yet, one that is not
//! there).

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ikv, ok};

#[test]
fn watch_redraws_with_rates_and_scraped_endpoints_until_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/bucket", dir.path().display());
    ok(&ikv(
        &url,
        &["create-store", "--store", "users", "--primary-key", "id"],
    ));
    let hash = ok(&ikv(&url, &["hash-passkey", "--generate"]));
    let hash = hash
        .lines()
        .find_map(|l| l.strip_prefix("passkey_hash:"))
        .unwrap()
        .trim()
        .to_owned();
    let accounts = dir.path().join("accounts.json");
    std::fs::write(
        &accounts,
        format!(r#"{{"accounts":[{{"account_id":"a","passkey_hash":"{hash}","stores":["*"]}}]}}"#),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_ikv"))
        .args([
            "--storage-url",
            &url,
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--accounts-file")
        .arg(&accounts)
        .env_remove("IKV_STORAGE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Listening once it accepts a connection.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = server.try_wait().unwrap() {
            let mut err = String::new();
            server
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("ikv serve exited ({status}): {err}");
        }
        assert!(Instant::now() < deadline, "ikv serve never listened");
        std::thread::sleep(Duration::from_millis(20));
    }

    let out_path = dir.path().join("watch.out");
    let mut watching = Command::new(env!("CARGO_BIN_EXE_ikv"))
        .args([
            "--storage-url",
            &url,
            "status",
            "--store",
            "users",
            "--watch",
            "50ms",
        ])
        .args(["--scrape", &format!("http://127.0.0.1:{port}/metrics")])
        .args(["--scrape", "http://127.0.0.1:1/metrics"])
        .env_remove("IKV_STORAGE_URL")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let frames = || {
        std::fs::read_to_string(&out_path)
            .unwrap_or_default()
            .matches("\x1b[2J")
            .count()
    };
    let wait_frames = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while frames() < n {
            assert!(Instant::now() < deadline, "no frame {n}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_frames(2);
    let output = || std::fs::read_to_string(&out_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !output().contains("no ikv metrics for this store here yet") {
        assert!(
            Instant::now() < deadline,
            "the service was never scraped: {}",
            output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for key in ["a", "b", "c"] {
        ok(&ikv(
            &url,
            &["put", "--store", "users", "--key", key, "--field", "v=1"],
        ));
    }
    let seen = frames();
    wait_frames(seen + 2);
    let kill = Command::new("kill")
        .args(["-INT", &watching.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(
        watching.wait().unwrap().code(),
        Some(0),
        "Ctrl-C ends it cleanly"
    );
    server.kill().unwrap();
    server.wait().unwrap();

    let out = std::fs::read_to_string(&out_path).unwrap();
    let last = out.rsplit("\x1b[2J").next().unwrap();
    assert!(last.contains("ikv store \"users\""), "{last}");
    assert!(
        last.contains("partition") && last.contains("dense"),
        "{last}"
    );
    assert!(
        last.contains("deltas committed/s (all partitions): "),
        "{last}"
    );
    assert!(last.contains("unreachable"), "{last}");
    // The tip moved from 0 to 3 while frames were drawn: some frame saw a rate above 0.
    assert!(
        out.split("\x1b[2J")
            .any(|f| f.lines().any(|l| l.starts_with("deltas committed/s")
                && !l.ends_with(": 0.0")
                && !l.ends_with(": -"))),
        "{out}"
    );
}
