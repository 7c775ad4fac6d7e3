"""Lambda cold start of the writer: the release `ikv-writer` binary under cargo-lambda's Runtime
API emulator (no Docker), writing to LocalStack. Measures, per round, the time from starting
the process to the answer of its first invocation (a one-document write: init, the store's
configuration read and the first commit), then warm invocations of the same write; prints the
binary's size. Medians of ROUNDS rounds with the range.

Usage (LocalStack running, bucket ikv-test; from the repository root):
    cargo build --release -p ikv-writer --bin ikv-writer
    .venv/bin/python deploy/bench_cold_start.py target/release/ikv-writer [ROUNDS]
"""

import hashlib
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid

from ikvpy import admin

REPO = pathlib.Path(__file__).resolve().parents[1]
VENV_BIN = pathlib.Path(sys.executable).parent
ENDPOINT = "http://127.0.0.1:4566"
S3 = {"aws_endpoint": ENDPOINT, "aws_region": "us-east-1", "aws_access_key_id": "test", "aws_secret_access_key": "test"}
PASSKEY = "cold-start-passkey-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(extra):
    e = dict(os.environ)
    e.update({"AWS_ENDPOINT_URL": ENDPOINT, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"})
    e.update(extra)
    return e


def event(store: str, key: str) -> bytes:
    body = {"operations": [{"op": "upsert_fields", "document": {"id": {"string": key}, "f": {"string": "v" * 50}}}]}
    return json.dumps({
        "version": "2.0", "routeKey": "$default", "rawPath": f"/v1/stores/{store}/operations", "rawQueryString": "",
        "headers": {"content-type": "application/json", "x-ikv-account-id": "bench", "x-ikv-account-passkey": PASSKEY},
        "requestContext": {"accountId": "1", "apiId": "a", "domainName": "a.lambda-url.us-east-1.on.aws", "domainPrefix": "a",
                           "http": {"method": "POST", "path": f"/v1/stores/{store}/operations", "protocol": "HTTP/1.1",
                                    "sourceIp": "203.0.113.7", "userAgent": "bench"},
                           "requestId": str(uuid.uuid4()), "routeKey": "$default", "stage": "$default",
                           "time": "27/Nov/2026:00:00:00 +0000", "timeEpoch": 1795737600000},
        "body": json.dumps(body), "isBase64Encoded": False,
    }).encode()


def invoke(port: int, payload: bytes) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/2015-03-31/functions/_/invocations", data=payload, method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def main() -> None:
    binary = pathlib.Path(sys.argv[1]).resolve()
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    url = f"s3://ikv-test/cold-{uuid.uuid4()}"
    store = "cold"
    admin.create_store(store, "id", num_partitions=4, storage_url=url, storage_options=S3)
    accounts = {"accounts": [{"account_id": "bench", "passkey_hash": "sha256:" + hashlib.sha256(PASSKEY.encode()).hexdigest(), "stores": ["*"]}]}
    cold, warm = [], []
    for r in range(rounds):
        port = free_port()
        emulator = subprocess.Popen([str(VENV_BIN / "cargo-lambda"), "lambda", "watch", "--only-lambda-apis", "-P", str(port)],
                                    cwd=REPO, env=env({}), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline, "the emulator did not start"
                time.sleep(0.05)
        runtime = {"AWS_LAMBDA_RUNTIME_API": f"http://127.0.0.1:{port}/.rt", "AWS_LAMBDA_FUNCTION_NAME": "_",
                   "AWS_LAMBDA_FUNCTION_VERSION": "1", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
                   "IKV_ACCOUNTS": json.dumps(accounts), "IKV_STORAGE_URL": url}
        started = time.perf_counter()
        function = subprocess.Popen([str(binary)], env=env(runtime), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        reply = invoke(port, event(store, f"cold-{r}"))
        cold.append(time.perf_counter() - started)
        assert reply["statusCode"] == 200, reply
        for i in range(20):
            t = time.perf_counter()
            reply = invoke(port, event(store, f"warm-{r}-{i}"))
            warm.append(time.perf_counter() - t)
            assert reply["statusCode"] == 200, reply
        for p in (function, emulator):
            p.kill()
            p.wait()
    ms = lambda xs: f"{statistics.median(xs) * 1000:.1f} ms ({min(xs) * 1000:.1f}–{max(xs) * 1000:.1f})"
    size = binary.stat().st_size
    print(f"| binary | {binary.name}, {size / 1e6:.1f} MB ({size} bytes) |")
    print(f"| cold: process start → first write answered, median of {rounds} | {ms(cold)} |")
    print(f"| warm: one write answered, median of {len(warm)} | {ms(warm)} |")


if __name__ == "__main__":
    main()
