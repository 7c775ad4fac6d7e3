"""The template's snapshot fan-out, executed: LocalStack's Step Functions runs the state
machine's definition as CloudFormation would substitute it, and every shard's task is
scheduled with the payload the snapshot function reads ({"shard": "K/N"}), K from 0 to N-1,
once each; a shard whose invocation fails ends alone and the pass still completes.

The snapshot function's handling of that payload runs for real in test_lambda_runtime.py."""

import json
import os
import pathlib
import subprocess
import time
import urllib.request
import uuid
from typing import Any, Dict, Iterator, List

import pytest
import yaml

from test_template import TEMPLATE

REPO = pathlib.Path(__file__).resolve().parents[2]
# A LocalStack of its own, with Step Functions: the storage tests' emulator stays without it.
PORT = int(os.environ.get("IKV_TEST_STEPFUNCTIONS_PORT", "4599"))
ENDPOINT = f"http://127.0.0.1:{PORT}"
# A function that does not exist: each task fails, and is caught per shard.
MISSING_FUNCTION = "arn:aws:lambda:us-east-1:000000000000:function:ikv-snapshot-missing"


class _CfnLoader(yaml.SafeLoader):
    """Reads a CloudFormation template's short-form tags as plain values."""


for _tag in ("!Ref", "!Sub", "!GetAtt", "!If", "!Equals", "!Not", "!Join", "!Select", "!Split"):
    _CfnLoader.add_constructor(_tag, lambda loader, node: loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else loader.construct_sequence(node))


def _definition(shards: int, concurrency: int) -> str:
    template = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)
    props = template["Resources"]["SnapshotFanOut"]["Properties"]
    text = json.dumps(props["Definition"])
    values = {"Shards": str(shards), "Concurrency": str(concurrency), "SnapshotFunctionArn": MISSING_FUNCTION}
    assert set(props["DefinitionSubstitutions"]) == set(values)
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    return text


def _sfn(action: str, body: Dict[str, Any]) -> Dict[str, Any]:
    request = urllib.request.Request(
        ENDPOINT + "/",
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": f"AWSStepFunctions.{action}",
            "Authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/states/aws4_request, SignedHeaders=host, Signature=0",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


@pytest.fixture(scope="module")
def stepfunctions() -> Iterator[None]:
    env = dict(
        os.environ,
        IKV_LOCALSTACK_HOME=str(REPO / ".localstack-stepfunctions"),
        IKV_LOCALSTACK_PORT=str(PORT),
        IKV_LOCALSTACK_SERVICES="s3,stepfunctions",
        IKV_LOCALSTACK_EXTRAS=str(REPO / "localstack" / "requirements-stepfunctions.lock"),
    )
    script = str(REPO / "localstack" / "localstack.sh")
    subprocess.run([script, "start"], env=env, check=True, timeout=900)
    try:
        with urllib.request.urlopen(ENDPOINT + "/_localstack/health", timeout=5) as r:
            state = json.loads(r.read())["services"].get("stepfunctions")
        assert state in ("running", "available"), f"LocalStack's Step Functions is {state}"
        yield
    finally:
        subprocess.run([script, "stop"], env=env, timeout=120)


def _run(shards: int, concurrency: int) -> List[Dict[str, Any]]:
    machine = _sfn(
        "CreateStateMachine",
        {
            "name": f"ikv-fan-out-{uuid.uuid4().hex[:8]}",
            "definition": _definition(shards, concurrency),
            "roleArn": "arn:aws:iam::000000000000:role/ikv-fan-out",
        },
    )["stateMachineArn"]
    execution = _sfn("StartExecution", {"stateMachineArn": machine, "input": "{}"})["executionArn"]
    for _ in range(600):
        status = _sfn("DescribeExecution", {"executionArn": execution})["status"]
        if status != "RUNNING":
            break
        time.sleep(0.1)
    assert status == "SUCCEEDED", status
    events = _sfn("GetExecutionHistory", {"executionArn": execution, "maxResults": 1000})["events"]
    _sfn("DeleteStateMachine", {"stateMachineArn": machine})
    return events


def test_one_pass_schedules_every_shard_once(stepfunctions: None) -> None:
    events = _run(5, 2)
    payloads = []
    for e in events:
        if e["type"] == "TaskScheduled":
            parameters = json.loads(e["taskScheduledEventDetails"]["parameters"])
            assert parameters["FunctionName"] == MISSING_FUNCTION
            payloads.append(parameters["Payload"])
    assert sorted(p["shard"] for p in payloads) == [f"{k}/5" for k in range(5)], payloads
    assert all(set(p) == {"shard"} for p in payloads), payloads
    # Each failing invocation was caught for its shard alone.
    caught = [e for e in events if e["type"] == "PassStateEntered" and e["stateEnteredEventDetails"]["name"] == "ShardFailed"]
    assert len(caught) == 5


def test_one_shard_is_the_whole_store(stepfunctions: None) -> None:
    events = _run(1, 16)
    payloads = [
        json.loads(e["taskScheduledEventDetails"]["parameters"])["Payload"]
        for e in events
        if e["type"] == "TaskScheduled"
    ]
    assert payloads == [{"shard": "0/1"}]
