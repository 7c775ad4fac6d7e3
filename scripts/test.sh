#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, the Rust tests (unit, in-memory, local
# directory and against the LocalStack S3 emulator, which this script installs and starts),
# with a Python venv (.venv) for the tests that read snapshots from pyarrow, pandas and DuckDB.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started_localstack=0
if ! localstack/localstack.sh status >/dev/null 2>&1; then
  localstack/localstack.sh start
  started_localstack=1
fi
cleanup() { if [ "$started_localstack" = 1 ]; then localstack/localstack.sh stop >/dev/null; fi; }
trap cleanup EXIT
localstack/localstack.sh bucket ikv-test

echo "== python venv"
IKV_TEST_PYTHON=$(scripts/python-env.sh)
export IKV_TEST_PYTHON

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
echo "== all tests passed"
