#!/usr/bin/env bash
# Python read benchmark: installs its peers (py-lmdb, redis-py into .venv; redis-server from
# Debian), starts redis-server on 127.0.0.1, runs python/benchmarks/bench_reads.py.
# Needs ikvpy installed in .venv (scripts/test.sh does it; or pip install ./python).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=$(scripts/python-env.sh)
"$(dirname "$python")/pip" install --quiet -r python/requirements-bench.txt
if ! command -v redis-server >/dev/null; then
  apt-get install -y -qq redis-server >/dev/null
fi
port=${IKV_BENCH_REDIS_PORT:-6390}
redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize yes --pidfile /tmp/ikv-bench-redis.pid
trap 'kill "$(cat /tmp/ikv-bench-redis.pid)" 2>/dev/null || true' EXIT
IKV_BENCH_REDIS_PORT=$port "$python" python/benchmarks/bench_reads.py "$@"
