"""A real Prometheus server (Debian's package, on 127.0.0.1) scrapes `ikv serve` and a Python
process exposing ikvpy's collector while writes go through the writer service and a reader
follows them: what Prometheus stored must equal what happened (commits acknowledged, deltas in
the bucket as the S3 emulator lists them, the reader back to lag 0)."""

import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from typing import Callable, Dict, List, Optional

import pytest

from ikvpy import admin
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.document import IKVDocumentBuilder
from ikvpy.factory import create_new_writer

from conftest import BUCKET, ENDPOINT, S3_OPTIONS

HERE = pathlib.Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prometheus_binary() -> str:
    found = os.environ.get("IKV_PROMETHEUS_BIN") or shutil.which("prometheus")
    if not found:
        pytest.fail("no prometheus binary: run scripts/prometheus-tools.sh (scripts/test.sh does)")
    return found


class Prometheus:
    def __init__(self, tmp: pathlib.Path, targets: Dict[str, str]) -> None:
        self.port = _free_port()
        config = tmp / "prometheus.yml"
        jobs = "\n".join(
            f"  - job_name: {job}\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['{target}']"
            for job, target in targets.items()
        )
        config.write_text(f"global:\n  scrape_interval: 1s\nscrape_configs:\n{jobs}\n")
        self.process = subprocess.Popen(
            [
                _prometheus_binary(),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._wait(lambda: self._get("/-/ready") is not None, "Prometheus to be ready")

    def _get(self, path: str) -> Optional[bytes]:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5).read()
        except OSError:
            return None

    def query(self, expr: str) -> List[dict]:
        body = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        if body is None:
            return []
        return json.loads(body)["data"]["result"]

    def value(self, expr: str) -> Optional[float]:
        result = self.query(expr)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def _wait(self, done: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
        deadline = time.time() + timeout
        while not done():
            if self.process.poll() is not None:
                pytest.fail(f"prometheus exited: {self.process.stderr.read().decode() if self.process.stderr else ''}")
            assert time.time() < deadline, f"timed out waiting for {what}"
            time.sleep(0.25)

    def targets(self) -> str:
        body = self._get("/api/v1/targets")
        if body is None:
            return "(no answer)"
        active = json.loads(body)["data"]["activeTargets"]
        return "; ".join(f"{t['scrapeUrl']}: {t['health']} {t['lastError']}" for t in active)

    def wait_for(self, expr: str, expected: float, what: str) -> None:
        try:
            self._wait(lambda: self.value(expr) == expected, what)
        except AssertionError:
            raise AssertionError(f"{what}: {expr} is {self.value(expr)}, not {expected}; targets: {self.targets()}") from None

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _deltas_in_bucket(prefix: str) -> int:
    """Delta objects under `prefix`, as the S3 emulator lists them (not through ikv)."""
    count, token = 0, None
    while True:
        params = {"list-type": "2", "prefix": prefix}
        if token:
            params["continuation-token"] = token
        xml = urllib.request.urlopen(f"{ENDPOINT}/{BUCKET}?{urllib.parse.urlencode(params)}", timeout=10).read().decode()
        count += len(re.findall(r"<Key>[^<]*/deltas/[^<]*\.arrow</Key>", xml))
        token_match = re.search(r"<NextContinuationToken>([^<]+)</NextContinuationToken>", xml)
        if not token_match:
            return count
        token = token_match.group(1)


def test_prometheus_scrapes_the_writer_service_and_a_python_reader(writer_service, tmp_path: pathlib.Path):
    storage = writer_service.storage
    store = "scraped"
    admin.create_store(store, "id", num_partitions=2, storage_url=storage.url, storage_options=storage.options)
    exporter_port = _free_port()
    env = dict(os.environ)
    env.update(
        {
            "AWS_ENDPOINT_URL": ENDPOINT,
            "AWS_REGION": S3_OPTIONS["aws_region"],
            "AWS_ACCESS_KEY_ID": S3_OPTIONS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": S3_OPTIONS["aws_secret_access_key"],
            "AWS_ALLOW_HTTP": "true",
        }
    )
    exporter = subprocess.Popen(
        [sys.executable, str(HERE / "metrics_exporter.py"), store, storage.url, str(tmp_path / "mount"), str(exporter_port)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    prometheus = None
    try:
        assert exporter.stdout is not None and exporter.stdout.readline().strip() == b"ready", (
            exporter.stderr.read().decode() if exporter.stderr else ""
        )
        writer_target = writer_service.url.removeprefix("http://")
        prometheus = Prometheus(tmp_path, {"writer": writer_target, "reader": f"127.0.0.1:{exporter_port}"})
        prometheus.wait_for('count(up == 1)', 2.0, "both targets up")

        options = (
            ClientOptionsBuilder()
            .with_store_name(store)
            .with_writer_url(writer_service.url)
            .with_account_id(writer_service.account_id)
            .with_account_passkey(writer_service.passkey)
            .build()
        )
        writer = create_new_writer(options)
        writer.startup()
        commits = 0
        for i in range(40):
            docs = [IKVDocumentBuilder().put_string_field("id", f"k{i}-{j}").put_int64_field("v", j).build() for j in range(3)]
            commits += len(writer._write([("upsert_fields", d.as_fields()) for d in docs]))
        writer.shutdown()
        prefix = urllib.parse.urlparse(storage.url).path.lstrip("/")
        deltas = _deltas_in_bucket(prefix)
        assert deltas == commits, "every acknowledged commit is one delta in the bucket"

        prometheus.wait_for(f'sum(ikv_writer_commits_total{{store="{store}"}})', float(commits), "the commit counter")
        prometheus.wait_for(f'sum(ikv_writer_operations_total{{store="{store}"}})', 120.0, "operations")
        prometheus.wait_for(f'sum(ikv_reader_applied_sequence{{store="{store}"}})', float(deltas), "the reader applied every delta")
        prometheus.wait_for(f'max(ikv_reader_lag_deltas{{store="{store}"}})', 0.0, "the reader's lag back to 0")
        prometheus.wait_for(f'sum(ikv_reader_deltas_applied_total{{store="{store}"}})', float(deltas), "deltas applied")
        # The writer's PUTs, as its root counted them: its deltas, its tip hints and its wake
        # signals (a partition's first commit ends the longest quiet spell), nothing else.
        prometheus.wait_for(
            'sum(ikv_storage_requests_total{component="writer",kind="put"})'
            " - sum(ikv_writer_tip_hint_publishes_total) - sum(ikv_writer_wake_signals_total)",
            float(deltas),
            "writer PUTs = deltas in the bucket + tip hints + wake signals",
        )
        assert prometheus.value("sum(ikv_writer_wake_signals_total)") >= 1.0
        assert prometheus.value('sum(ikv_reader_owns_mount{job="reader"})') == 1.0
        # Every query of the Grafana dashboard is one this Prometheus parses and answers.
        dashboard = json.loads((HERE.parents[1] / "deploy" / "grafana" / "ikv-dashboard.json").read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$store", ".*")
                body = prometheus._get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
                assert body is not None and json.loads(body)["status"] == "success", f"{panel['title']}: {expr}"
        lagging = prometheus.query(f'max by (store) (ikv_reader_lag_deltas{{store="{store}"}})')
        assert [r["metric"]["store"] for r in lagging] == [store]
        assert prometheus.value('sum(ikv_storage_requests_total{component="reader",outcome="error"})') in (None, 0.0)
    finally:
        if prometheus is not None:
            prometheus.stop()
        if exporter.stdin:
            exporter.stdin.close()
        exporter.wait(timeout=60)
