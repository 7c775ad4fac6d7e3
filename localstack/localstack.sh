#!/usr/bin/env bash
# Installs and runs the LocalStack S3 emulator on this host, without Docker (with SQS and SNS,
# for the wake topic of `ikv prepare-bucket --notify`).
#
#   localstack/localstack.sh install   create the venv from requirements.lock (idempotent)
#   localstack/localstack.sh start     install if needed, start on 127.0.0.1:4566, wait until S3 runs
#   localstack/localstack.sh stop      stop it (SIGTERM, then SIGKILL after 10 s)
#   localstack/localstack.sh status    print running / stopped; exit 0 when running
#   localstack/localstack.sh bucket N  create bucket N (idempotent)
#
# State lives in $IKV_LOCALSTACK_HOME (default: <repo>/.localstack). LocalStack core needs
# Python 3.13: taken from $IKV_LOCALSTACK_PYTHON, else pyenv's 3.13, else python3.13 on PATH.
# A second instance (the deployment tests' Step Functions) sets IKV_LOCALSTACK_HOME,
# IKV_LOCALSTACK_PORT, IKV_LOCALSTACK_SERVICES (default s3,sqs,sns) and IKV_LOCALSTACK_EXTRAS (a
# further pinned requirements file): the emulator the storage tests use stays without them
# (Step Functions and its dependencies made its S3 half again slower).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
home=${IKV_LOCALSTACK_HOME:-$here/../.localstack}
mkdir -p "$home"
home=$(cd "$home" && pwd)
venv=$home/venv
pidfile=$home/localstack.pid
logfile=$home/localstack.log
port=${IKV_LOCALSTACK_PORT:-4566}
services=${IKV_LOCALSTACK_SERVICES:-s3,sqs,sns}
extras=${IKV_LOCALSTACK_EXTRAS:-}
health=http://127.0.0.1:$port/_localstack/health

find_python() {
  if [ -n "${IKV_LOCALSTACK_PYTHON:-}" ]; then echo "$IKV_LOCALSTACK_PYTHON"; return; fi
  if command -v pyenv >/dev/null 2>&1; then
    local p
    p="$(pyenv root)/versions/3.13.0/bin/python3"
    if [ -x "$p" ]; then echo "$p"; return; fi
  fi
  if command -v python3.13 >/dev/null 2>&1; then command -v python3.13; return; fi
  echo "localstack.sh: LocalStack core needs Python 3.13; set IKV_LOCALSTACK_PYTHON" >&2
  exit 2
}

install() {
  local stamp=$venv/.installed wanted
  wanted=$(cat "$here/requirements.lock" ${extras:+"$extras"})
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then return; fi
  rm -rf "$venv"
  "$(find_python)" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.lock" ${extras:+-r "$extras"}
  printf '%s' "$wanted" >"$stamp"
}

is_healthy() {
  curl -fsS --max-time 2 "$health" 2>/dev/null | grep -q '"s3": *"\(running\|available\)"'
}

running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

start() {
  if running_pid >/dev/null && is_healthy; then echo "localstack: already running on 127.0.0.1:$port"; return; fi
  install
  mkdir -p "$home/fs" "$home/cache"
  (
    cd "$home"
    OVERRIDE_IN_DOCKER=0 FILESYSTEM_ROOT="$home/fs" XDG_CACHE_HOME="$home/cache" \
    GATEWAY_LISTEN="127.0.0.1:$port" GATEWAY_SERVER=hypercorn SERVICES="$services" \
    EAGER_SERVICE_LOADING=1 DNS_ADDRESS=0 DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 \
      setsid "$venv/bin/python" -m localstack.runtime.main >"$logfile" 2>&1 &
    echo $! >"$pidfile"
  )
  for _ in $(seq 1 120); do
    if is_healthy; then echo "localstack: S3 running on 127.0.0.1:$port"; return; fi
    if ! running_pid >/dev/null; then
      echo "localstack: the process exited; last log lines:" >&2
      tail -n 30 "$logfile" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "localstack: S3 not ready after 60 s; see $logfile" >&2
  exit 1
}

stop() {
  local pid
  if pid=$(running_pid); then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  # LocalStack keeps object data here whatever FILESYSTEM_ROOT says (the default instance's:
  # a second one leaves it to the instance the storage tests use).
  if [ "$port" = 4566 ]; then rm -rf /tmp/localstack-s3-storage; fi
  echo "localstack: stopped"
}

bucket() {
  # Creates a bucket (idempotent): LocalStack accepts an unsigned CreateBucket.
  local name=${1:?usage: localstack.sh bucket NAME}
  curl -fsS -o /dev/null -X PUT "http://127.0.0.1:$port/$name"
}

status() {
  if running_pid >/dev/null && is_healthy; then echo "running"; else echo "stopped"; return 1; fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  bucket) bucket "${2:-}" ;;
  *) echo "usage: $0 install|start|stop|status|bucket NAME" >&2; exit 2 ;;
esac
