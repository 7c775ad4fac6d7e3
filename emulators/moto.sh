#!/usr/bin/env bash
# Installs and runs moto's server (a second S3 implementation beside LocalStack), without
# Docker, from the pinned emulators/moto-requirements.lock, for the S3 suites run against it.
#
#   emulators/moto.sh install    create the venv (idempotent)
#   emulators/moto.sh start      install if needed, start on 127.0.0.1:5001
#   emulators/moto.sh stop       stop it
#   emulators/moto.sh status     print running / stopped; exit 0 when running
#   emulators/moto.sh bucket N   create bucket N (idempotent)
#
# State lives in $IKV_MOTO_HOME (default: <repo>/.emulators); IKV_MOTO_PORT moves it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
home=${IKV_MOTO_HOME:-$here/../.emulators}
mkdir -p "$home"
home=$(cd "$home" && pwd)
venv=$home/moto-venv
port=${IKV_MOTO_PORT:-5001}
pidfile=$home/moto.pid
logfile=$home/moto.log
lock=$here/moto-requirements.lock

# shellcheck source=service.sh
. "$here/service.sh"

install() {
  if [ -x "$venv/bin/moto_server" ] && cmp -s "$lock" "$venv/installed.lock"; then
    return
  fi
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$lock"
  cp "$lock" "$venv/installed.lock"
}

case "${1:-}" in
  install) install ;;
  start)
    install
    if running; then exit 0; fi
    "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$logfile" 2>&1 &
    echo $! >"$pidfile"
    wait_for_http moto "http://127.0.0.1:$port/"
    echo "moto: S3 running on 127.0.0.1:$port"
    ;;
  stop) stop_service ;;
  status)
    if running; then echo running; else echo stopped; exit 1; fi
    ;;
  bucket)
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "http://127.0.0.1:$port/${2:?bucket name}")
    case "$code" in 200|409) ;; *) echo "moto: creating bucket $2 answered $code" >&2; exit 1 ;; esac
    ;;
  *)
    echo "usage: $0 install|start|stop|status|bucket NAME" >&2
    exit 2
    ;;
esac
