#!/usr/bin/env bash
# Installs and runs Azurite (Azure Blob Storage's emulator, from npm; Node is on the machine),
# without Docker, for the az:// tests.
#
#   emulators/azurite.sh install      npm install of the pinned version (idempotent)
#   emulators/azurite.sh start        install if needed, start on 127.0.0.1:10000 (in memory)
#   emulators/azurite.sh stop         stop it
#   emulators/azurite.sh status       print running / stopped; exit 0 when running
#   emulators/azurite.sh container N  create container N (idempotent)
#
# State lives in $IKV_AZURITE_HOME (default: <repo>/.emulators); IKV_AZURITE_PORT moves it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
home=${IKV_AZURITE_HOME:-$here/../.emulators}
mkdir -p "$home"
home=$(cd "$home" && pwd)
version=3.37.0
port=${IKV_AZURITE_PORT:-10000}
pidfile=$home/azurite.pid
logfile=$home/azurite.log
bin=$home/node_modules/.bin/azurite-blob

# shellcheck source=service.sh
. "$here/service.sh"

install() {
  if [ -x "$bin" ] && grep -q "\"version\": \"$version\"" "$home/node_modules/azurite/package.json" 2>/dev/null; then
    return
  fi
  (cd "$home" && npm install --no-audit --no-fund --silent "azurite@$version" >/dev/null)
}

case "${1:-}" in
  install) install ;;
  start)
    install
    if running; then exit 0; fi
    "$bin" --blobHost 127.0.0.1 --blobPort "$port" --inMemoryPersistence --skipApiVersionCheck \
      --silent >"$logfile" 2>&1 &
    echo $! >"$pidfile"
    wait_for_http azurite "http://127.0.0.1:$port/"
    echo "azurite: blob service running on 127.0.0.1:$port"
    ;;
  stop) stop_service ;;
  status)
    if running; then echo running; else echo stopped; exit 1; fi
    ;;
  container)
    python3 "$here/azurite_container.py" "${2:?container name}" "http://127.0.0.1:$port" >/dev/null
    ;;
  *)
    echo "usage: $0 install|start|stop|status|container NAME" >&2
    exit 2
    ;;
esac
