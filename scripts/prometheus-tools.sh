#!/usr/bin/env bash
# Installs (idempotently) Debian's Prometheus server and promtool, which the tests use to
# check the alert rules and to scrape ikv for real; prints the directory holding them.
set -euo pipefail
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q prometheus >&2 || {
    $sudo apt-get update -q >&2
    $sudo apt-get install -y -q prometheus >&2
  }
  # The package starts a server where an init system runs; the tests start their own.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    $sudo systemctl stop prometheus >&2 || true
  fi
fi
dirname "$(command -v prometheus)"
