"""Fixtures: storage roots (a local directory; a fresh prefix on the LocalStack S3 emulator)
and a running writer service (`ikv serve`) in front of LocalStack."""

import json
import os
import pathlib
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from typing import Dict, Iterator, NamedTuple

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
ENDPOINT = os.environ.get("IKV_TEST_S3_ENDPOINT", "http://127.0.0.1:4566")
BUCKET = "ikv-test"
PASSKEY = "python-tests-passkey-0123456789"
S3_OPTIONS: Dict[str, str] = {
    "aws_endpoint": ENDPOINT,
    "aws_region": "us-east-1",
    "aws_access_key_id": "test",
    "aws_secret_access_key": "test",
}


class Storage(NamedTuple):
    url: str
    options: Dict[str, str]


@pytest.fixture
def local_storage(tmp_path: pathlib.Path) -> Storage:
    return Storage(f"file://{tmp_path}/bucket", {})


@pytest.fixture
def s3_storage() -> Storage:
    try:
        urllib.request.urlopen(f"{ENDPOINT}/_localstack/health", timeout=2).read()
    except OSError as e:  # the S3 tests must not pass silently without the emulator
        pytest.fail(f"the S3 emulator is not reachable at {ENDPOINT} ({e}); run scripts/test.sh or localstack/localstack.sh start")
    return Storage(f"s3://{BUCKET}/py-{uuid.uuid4()}", dict(S3_OPTIONS))


AZURITE = os.environ.get("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:10000")


@pytest.fixture
def azurite_storage() -> Storage:
    """A fresh prefix in the test container on Azurite (emulators/azurite.sh; scripts/test.sh
    starts it)."""
    try:
        urllib.request.urlopen(AZURITE, timeout=2)
    except urllib.error.HTTPError:
        pass  # it answers (400 to a bare GET): running
    except OSError as e:
        pytest.fail(f"Azurite is not reachable at {AZURITE} ({e}); run scripts/test.sh or emulators/azurite.sh start")
    return Storage(f"az://{BUCKET}/py-{uuid.uuid4()}", {"azure_storage_use_emulator": "true"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ikv_binary() -> str:
    """The `ikv` command line, which serves the writer API locally (`ikv serve`)."""
    explicit = os.environ.get("IKV_BIN")
    if explicit:
        return explicit
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    for profile in ("debug", "release"):
        candidate = target / profile / "ikv"
        if candidate.exists():
            return str(candidate)
    pytest.fail("no ikv binary: build it with `cargo build -p ikv-cli --bin ikv` (scripts/test.sh does)")


def _hash(passkey: str) -> str:
    out = subprocess.run([_ikv_binary(), "hash-passkey"], input=passkey, capture_output=True, text=True, check=True)
    return out.stdout.strip()


class Service(NamedTuple):
    url: str
    storage: Storage
    account_id: str
    passkey: str


@pytest.fixture
def writer_service(s3_storage: Storage) -> Iterator[Service]:
    port = _free_port()
    accounts = {"accounts": [{"account_id": "py", "passkey_hash": _hash(PASSKEY), "stores": ["*"]}]}
    env = dict(os.environ)
    env.update(
        {
            "IKV_ACCOUNTS": json.dumps(accounts),
            "AWS_ENDPOINT_URL": ENDPOINT,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
        }
    )
    proc = subprocess.Popen(
        [_ikv_binary(), "--storage-url", s3_storage.url, "serve", "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                proc.kill()
                pytest.fail(f"the writer service did not start: {err}")
            time.sleep(0.05)
    try:
        yield Service(url, s3_storage, "py", PASSKEY)
    finally:
        proc.kill()
        proc.wait()
