#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, the Rust tests (unit, in-memory, local
# directory, and against the LocalStack S3 emulator and Azurite, which this script installs
# and starts),
# the Python SDK's tests (the native module built with maturin into .venv), and the
# deployment template's cfn-lint check.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}

started_localstack=0
if ! localstack/localstack.sh status >/dev/null 2>&1; then
  localstack/localstack.sh start
  started_localstack=1
fi
started_azurite=0
if ! emulators/azurite.sh status >/dev/null 2>&1; then
  emulators/azurite.sh start
  started_azurite=1
fi
cleanup() {
  if [ "$started_localstack" = 1 ]; then localstack/localstack.sh stop >/dev/null; fi
  if [ "$started_azurite" = 1 ]; then emulators/azurite.sh stop >/dev/null; fi
}
trap cleanup EXIT
localstack/localstack.sh bucket ikv-test
emulators/azurite.sh container ikv-test

echo "== python venv"
IKV_TEST_PYTHON=$(scripts/python-env.sh)
export IKV_TEST_PYTHON
venv_bin=$(dirname "$IKV_TEST_PYTHON")

echo "== prometheus: alert rules checked and unit-tested"
prometheus_bin=$(scripts/prometheus-tools.sh)
export IKV_PROMETHEUS_BIN="$prometheus_bin/prometheus"
"$prometheus_bin/promtool" check rules deploy/prometheus/ikv-alerts.yml
(cd deploy/prometheus && "$prometheus_bin/promtool" test rules ikv-alerts.test.yml)

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

echo "== python SDK: build the native module, run pytest"
# A separate target dir: the cdylib's feature set differs from the workspace build's.
rm -rf "$target/wheels"
"$venv_bin/maturin" build --locked -m python/Cargo.toml --target-dir "$target/maturin" -o "$target/wheels"
"$venv_bin/pip" install --quiet --force-reinstall --no-deps "$target"/wheels/ikvpy-*.whl
cargo build --locked -p ikv-writer --bin ikv-writer -p ikv-snapshot --bin snapshot -p ikv-cli --bin ikv
IKV_BIN="$target/debug/ikv" IKV_WRITER_BIN="$target/debug/ikv-writer" IKV_SNAPSHOT_BIN="$target/debug/snapshot" \
  "$IKV_TEST_PYTHON" -m pytest -q python/tests deploy/tests
echo "== all tests passed"
