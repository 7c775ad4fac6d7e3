"""The template's snapshot fan-out, executed: LocalStack's Step Functions runs the state
machine's definition as CloudFormation would substitute it. The plan step asks the snapshot
function for {"plan": {"task_seconds": ...}}; every task of the plan it returns is invoked
once with the payload the function reads ({"work": [...]}); a task whose invocation fails
ends alone and the pass still completes; a plan that fails fails the pass.

LocalStack runs no Lambda here (no container engine), so the tests that need a plan put the
plan the function returned in place of its invocation (a Pass state with that result); the
function's own planning and its handling of both payloads run for real in
test_lambda_runtime.py and snapshot/src/plan.rs."""

import json
import os
import pathlib
import subprocess
import time
import urllib.request
import uuid
from typing import Any, Dict, Iterator, List, Optional

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


def _definition(task_seconds: int, concurrency: int, planned: Optional[List[Dict[str, Any]]] = None) -> str:
    template = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)
    props = template["Resources"]["SnapshotFanOut"]["Properties"]
    text = json.dumps(props["Definition"])
    values = {"TaskSeconds": str(task_seconds), "Concurrency": str(concurrency), "SnapshotFunctionArn": MISSING_FUNCTION}
    assert set(props["DefinitionSubstitutions"]) == set(values)
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    if planned is None:
        return text
    definition = json.loads(text)
    plan = definition["States"]["Plan"]
    # The plan step's output as the ResultSelector shapes the function's answer.
    definition["States"]["Plan"] = {"Type": "Pass", "Result": {"tasks": planned}, "Next": plan["Next"]}
    return json.dumps(definition)


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


def _run(definition: str, expect: str = "SUCCEEDED") -> List[Dict[str, Any]]:
    machine = _sfn(
        "CreateStateMachine",
        {
            "name": f"ikv-fan-out-{uuid.uuid4().hex[:8]}",
            "definition": definition,
            "roleArn": "arn:aws:iam::000000000000:role/ikv-fan-out",
        },
    )["stateMachineArn"]
    execution = _sfn("StartExecution", {"stateMachineArn": machine, "input": "{}"})["executionArn"]
    for _ in range(600):
        status = _sfn("DescribeExecution", {"executionArn": execution})["status"]
        if status != "RUNNING":
            break
        time.sleep(0.1)
    assert status == expect, status
    events = _sfn("GetExecutionHistory", {"executionArn": execution, "maxResults": 1000})["events"]
    _sfn("DeleteStateMachine", {"stateMachineArn": machine})
    return events


def _scheduled(events: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    payloads = []
    for e in events:
        if e["type"] == "TaskScheduled":
            parameters = json.loads(e["taskScheduledEventDetails"]["parameters"])
            assert parameters["FunctionName"] == MISSING_FUNCTION
            payloads.append(parameters["Payload"])
    return payloads


def test_one_pass_invokes_every_planned_task_once(stepfunctions: None) -> None:
    planned = [
        {"work": [{"store": "big", "partition": p}], "estimated_seconds": 580.0} for p in range(3)
    ] + [
        {"work": [{"store": "small", "partition": 0}, {"store": "small", "partition": 1}], "estimated_seconds": 2.0},
        {"work": [{"store": "big", "partition": 3}, {"store": "small", "partition": 2}], "estimated_seconds": 300.0},
    ]
    events = _run(_definition(600, 2, planned))
    payloads = _scheduled(events)
    key = lambda p: json.dumps(p, sort_keys=True)  # noqa: E731
    assert sorted(payloads, key=key) == sorted(({"work": t["work"]} for t in planned), key=key), payloads
    # Each failing invocation was caught for its task alone.
    caught = [e for e in events if e["type"] == "PassStateEntered" and e["stateEnteredEventDetails"]["name"] == "TaskFailed"]
    assert len(caught) == len(planned)


def test_an_empty_plan_invokes_nothing(stepfunctions: None) -> None:
    assert _scheduled(_run(_definition(600, 16, []))) == []


def test_a_failed_plan_fails_the_pass_and_compacts_nothing(stepfunctions: None) -> None:
    events = _run(_definition(450, 16), expect="FAILED")
    # The plan's invocation is all that was scheduled (retries follow only throttling and
    # service errors), with the budget as the function reads it.
    payloads = _scheduled(events)
    assert payloads and all(p == {"plan": {"task_seconds": "450"}} for p in payloads), payloads
