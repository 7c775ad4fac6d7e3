"""The deployment template passes cfn-lint, and keeps the properties the design relies on."""

import pathlib
import subprocess
import sys

import pytest

TEMPLATE = pathlib.Path(__file__).resolve().parents[1] / "template.yaml"
CFN_LINT = str(pathlib.Path(sys.executable).with_name("cfn-lint"))


def test_cfn_lint_passes() -> None:
    out = subprocess.run([CFN_LINT, str(TEMPLATE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_cfn_lint_would_catch_a_broken_template(tmp_path: pathlib.Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(TEMPLATE.read_text().replace("      BucketEncryption:", "      NoSuchProperty: 1\n      BucketEncryption:", 1))
    out = subprocess.run([CFN_LINT, str(broken)], capture_output=True, text=True)
    assert out.returncode != 0
    assert "NoSuchProperty" in out.stdout, out.stdout + out.stderr


@pytest.fixture
def text() -> str:
    return TEMPLATE.read_text()


def test_lifecycle_never_expires_objects(text: str) -> None:
    assert "AbortIncompleteMultipartUpload" in text
    assert "ExpirationInDays" not in text and "Expiration:" not in text


def test_writer_cannot_delete(text: str) -> None:
    writer = text.split("WriterFunction:")[1].split("SnapshotFunction:")[0]
    assert "s3:DeleteObject" not in writer
    assert "s3:PutObject" in writer and "s3:GetObject" in writer


def test_each_function_writes_only_its_own_keys(text: str) -> None:
    writer = text.split("WriterFunction:")[1].split("SnapshotFunction:")[0]
    snapshot = text.split("SnapshotFunction:")[1].split("ReaderPolicy:")[0]
    # The writer puts deltas only: never a store's configuration or a snapshot.
    assert 'Action: s3:PutObject\n              Resource: !Sub "${StoreBucket.Arn}/ikv/*/deltas/*"' in writer
    assert "snapshots" not in writer
    # ... and the two keys it overwrites, the tip hint and the wake signal; no other PutObject.
    assert 'Sid: PublishTipHints\n              Effect: Allow\n              Action: s3:PutObject\n              Resource: !Sub "${StoreBucket.Arn}/ikv/*/tip.json"' in writer
    assert 'Sid: WakeIdleReaders\n              Effect: Allow\n              Action: s3:PutObject\n              Resource: !Sub "${StoreBucket.Arn}/ikv/*/wake.json"' in writer
    assert writer.count("s3:PutObject") == 3
    # The compactor puts snapshots and deletes covered deltas and old snapshots, nothing else.
    put = snapshot.split("Sid: WriteSnapshots")[1].split("Sid:")[0]
    assert "/ikv/*/snapshots/*" in put and "deltas" not in put
    delete = snapshot.split("Sid: RetainDeltasAndSnapshots")[1]
    assert "s3:DeleteObject" in delete and "store.json" not in delete


def test_the_bucket_refuses_unconditional_writes_of_write_once_keys(text: str) -> None:
    policy = text.split("StoreBucketPolicy:")[1].split("WriterFunction:")[0]
    assert "Effect: Deny" in policy and "Action: s3:PutObject" in policy
    for key in ("/ikv/*/deltas/*", "/ikv/*/manifest.json", "/ikv/*/store.json"):
        assert key in policy
    assert "s3:if-none-match" in policy and '"Null"' in policy



def test_wake_signals_reach_a_topic_readers_may_subscribe_to(text: str) -> None:
    bucket = text.split("StoreBucket:")[1].split("StoreBucketPolicy:")[0]
    notify = bucket.split("NotificationConfiguration:")[1]
    assert 'Event: "s3:ObjectCreated:*"' in notify and "Topic: !Ref WakeTopic" in notify
    assert "Value: ikv/" in notify and "Value: wake.json" in notify
    assert "DependsOn: WakeTopicPolicy" in bucket
    policy = text.split("WakeTopicPolicy:\n")[1].split("\n\n")[0]
    assert "Service: s3.amazonaws.com" in policy and "Action: sns:Publish" in policy
    reader = text.split("ReaderPolicy:")[1].split("# Alarms")[0]
    assert "sqs:ReceiveMessage" in reader and ':ikv-wake-*"' in reader
    assert "sns:Subscribe" in reader and "Resource: !Ref WakeTopic" in reader
    assert "WakeTopicArn:" in text.split("Outputs:")[1]


def test_one_schedule_plans_a_pass_and_fans_it_out(text: str) -> None:
    snapshot = text.split("SnapshotFunction:")[1].split("SnapshotFanOut:")[0]
    assert "Events:" not in snapshot, "the function runs when the fan-out invokes it"
    fan_out = text.split("SnapshotFanOut:")[1].split("ReaderPolicy:")[0]
    assert "Schedule: !Ref SnapshotSchedule" in fan_out
    # It may invoke the snapshot function and nothing else.
    assert "LambdaInvokePolicy:\n            FunctionName: !Ref SnapshotFunction" in fan_out
    assert "TaskSeconds: !Ref SnapshotTaskSeconds" in fan_out and "Concurrency: !Ref SnapshotConcurrency" in fan_out
