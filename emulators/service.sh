# Shared by emulators/*.sh (sourced): a background process's pid file, start-up wait and stop.
# The caller sets $pidfile and $logfile.

running() {
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# wait_for_http NAME URL: until URL answers (any HTTP status), at most 10 s.
wait_for_http() {
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null "$2"; then
      return 0
    fi
    sleep 0.1
  done
  echo "$1: did not start; see $logfile" >&2
  return 1
}

stop_service() {
  if running; then kill "$(cat "$pidfile")"; fi
  rm -f "$pidfile"
}
