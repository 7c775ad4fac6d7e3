"""The real binaries under the Lambda Runtime API (cargo-lambda's emulator, no Docker): the
writer answers Function URL events and writes to LocalStack; the snapshot function runs a
pass on a scheduled event. The binaries are the ones `scripts/test.sh` builds
(`IKV_WRITER_BIN`, `IKV_SNAPSHOT_BIN`); the emulator is the pinned cargo-lambda in .venv."""

import hashlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Dict, Iterator, List

import pytest

from ikvpy import admin
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.factory import create_new_reader

ENDPOINT = os.environ.get("IKV_TEST_S3_ENDPOINT", "http://127.0.0.1:4566")
S3_OPTIONS = {
    "aws_endpoint": ENDPOINT,
    "aws_region": "us-east-1",
    "aws_access_key_id": "test",
    "aws_secret_access_key": "test",
}
PASSKEY = "lambda-tests-passkey-0123456789"

REPO = pathlib.Path(__file__).resolve().parents[2]
VENV_BIN = pathlib.Path(sys.executable).parent
SCHEDULED_EVENT = {
    "version": "0",
    "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": "2026-11-26T17:00:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:123456789012:rule/ikv-snapshot"],
    "detail": {},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hash(passkey: str) -> str:
    return "sha256:" + hashlib.sha256(passkey.encode()).hexdigest()


@pytest.fixture
def s3_url() -> str:
    try:
        urllib.request.urlopen(f"{ENDPOINT}/_localstack/health", timeout=2).read()
    except OSError as e:  # must not pass silently without the emulator
        pytest.fail(f"the S3 emulator is not reachable at {ENDPOINT} ({e}); run scripts/test.sh")
    return f"s3://ikv-test/lambda-{uuid.uuid4()}"


def _binary(variable: str) -> str:
    path = os.environ.get(variable)
    if not path or not pathlib.Path(path).exists():
        pytest.fail(f"{variable} must name the built binary (scripts/test.sh sets it)")
    return path


def _env(extra: Dict[str, str]) -> Dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        {
            "AWS_ENDPOINT_URL": ENDPOINT,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
        }
    )
    env.update(extra)
    return env


def _wait_for_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"the Runtime API emulator did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.1)


class Function:
    """A binary started against its own emulated Runtime API."""

    def __init__(self, binary: str, env: Dict[str, str]) -> None:
        self.port = _free_port()
        self.emulator = subprocess.Popen(
            [str(VENV_BIN / "cargo-lambda"), "lambda", "watch", "--only-lambda-apis", "-P", str(self.port)],
            cwd=REPO,
            env=_env({}),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _wait_for_port(self.port, self.emulator)
        runtime = {
            "AWS_LAMBDA_RUNTIME_API": f"http://127.0.0.1:{self.port}/.rt",
            "AWS_LAMBDA_FUNCTION_NAME": "_",
            "AWS_LAMBDA_FUNCTION_VERSION": "1",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "4096",
        }
        self.process = subprocess.Popen([binary], env=_env({**env, **runtime}), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def invoke(self, event: dict, tmp: pathlib.Path) -> dict:
        path = tmp / f"event-{uuid.uuid4().hex}.json"
        path.write_text(json.dumps(event))
        out = subprocess.run(
            [str(VENV_BIN / "cargo-lambda"), "lambda", "invoke", "-A", "127.0.0.1", "-P", str(self.port), "--data-file", str(path), "_"],
            cwd=REPO,
            env=_env({}),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return json.loads(out.stdout)

    def stop(self) -> None:
        for proc in (self.process, self.emulator):
            proc.kill()
            proc.wait()


@pytest.fixture
def functions() -> Iterator[List[Function]]:
    started: List[Function] = []
    yield started
    for f in started:
        f.stop()


def url_event(store: str, passkey: str, body: dict) -> dict:
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": f"/v1/stores/{store}/operations",
        "rawQueryString": "",
        "headers": {
            "content-type": "application/json",
            "host": "abc123.lambda-url.us-east-1.on.aws",
            "x-ikv-account-id": "py",
            "x-ikv-account-passkey": passkey,
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abc123",
            "http": {
                "method": "POST",
                "path": f"/v1/stores/{store}/operations",
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "ikv-test",
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": "26/Nov/2026:17:00:00 +0000",
            "timeEpoch": 1795712400000,
        },
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def test_the_real_binaries_under_the_lambda_runtime(s3_url: str, functions, tmp_path: pathlib.Path) -> None:
    store = f"lam-{uuid.uuid4().hex[:8]}"
    admin.create_store(store, "userid", num_partitions=2, storage_url=s3_url, storage_options=S3_OPTIONS)
    accounts = {"accounts": [{"account_id": "py", "passkey_hash": _hash(PASSKEY), "stores": ["*"]}]}
    writer = Function(_binary("IKV_WRITER_BIN"), {"IKV_ACCOUNTS": json.dumps(accounts), "IKV_STORAGE_URL": s3_url})
    functions.append(writer)
    body = {"operations": [{"op": "upsert_fields", "document": {"userid": {"string": "Alice"}, "city": {"string": "Paris"}}}]}
    reply = writer.invoke(url_event(store, PASSKEY, body), tmp_path)
    assert reply["statusCode"] == 200, reply
    assert json.loads(reply["body"])["operations"] == 1
    refused = writer.invoke(url_event(store, "wrong-passkey-0123456789abcdef", body), tmp_path)
    assert refused["statusCode"] == 401, refused

    snapshot = Function(_binary("IKV_SNAPSHOT_BIN"), {"IKV_STORAGE_URL": s3_url, "IKV_SNAPSHOT_FORCE": "true"})
    functions.append(snapshot)
    # A deployed pass: the plan (the budget as Step Functions substitutes it, a string), then
    # one invocation per task; then the plain scheduled event, as other schedules send it.
    planned = snapshot.invoke({"plan": {"task_seconds": "600"}}, tmp_path)
    work = [w for t in planned["tasks"] for w in t["work"]]
    assert sorted((w["store"], w["partition"]) for w in work) == [(store, 0), (store, 1)], planned
    for task in planned["tasks"]:
        done = snapshot.invoke({"work": task["work"]}, tmp_path)
        assert len(done["summary"]) == len(task["work"]), done
    snapshot.invoke(SCHEDULED_EVENT, tmp_path)

    builder = ClientOptionsBuilder().with_store_name(store).with_storage_url(s3_url)
    for key, value in S3_OPTIONS.items():
        builder = builder.with_storage_option(key, value)
    options = builder.with_mount_directory(str(tmp_path / "mount")).build()
    reader = create_new_reader(options)
    reader.startup()
    try:
        assert reader.get_string_value("Alice", "city") == "Paris"
        assert any(s["snapshot_sequence"] > 0 for s in reader.status()), reader.status()
    finally:
        reader.shutdown()
