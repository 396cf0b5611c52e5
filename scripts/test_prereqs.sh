#!/usr/bin/env bash
# What `make test` needs beyond the virtual environment, installed or started when this machine
# allows it (root with apt), else a stop at once with the one command a person has to run.
#   - Debian's Chromium at /usr/bin/chromium: the console's browser tests (Playwright drives it).
#   - PostgreSQL on 127.0.0.1:5432 (database `test`) and Redis on 127.0.0.1:6379: the cluster
#     tests. Started here when installed but down. Without CI=true a missing service only makes
#     its tests skip (said below); under CI=true it is a failure, so we stop before the suite.
set -euo pipefail

say() { printf 'make test: %s\n' "$*" >&2; }
is_root() { [ "$(id -u)" = 0 ]; }
have() { command -v "$1" >/dev/null 2>&1; }

CHROMIUM="${TIDINGS_CHROMIUM:-/usr/bin/chromium}"  # overridable for the script's own test
if [ ! -x "$CHROMIUM" ]; then
  if is_root && have apt-get; then
    say "installing Debian's chromium for the browser tests (apt-get) ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    say "the browser tests need Debian's Chromium at /usr/bin/chromium; run:"
    say "    sudo apt-get install -y chromium"
    exit 1
  fi
fi

missing=()
if ! (have pg_isready && pg_isready -h 127.0.0.1 -p 5432 -q); then
  if is_root && have pg_ctlcluster && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    sleep 1
  fi
  (have pg_isready && pg_isready -h 127.0.0.1 -p 5432 -q) || missing+=("PostgreSQL on 127.0.0.1:5432")
fi
if ! (have redis-cli && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1); then
  if have redis-server; then
    mkdir -p /tmp/tidings-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /tmp/tidings-redis --logfile /tmp/tidings-redis/redis.log || true
    sleep 1
  fi
  (have redis-cli && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1) || missing+=("Redis on 127.0.0.1:6379")
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "${CI:-}" = true ]; then
    say "CI=true needs every service variant, and these are unreachable: ${missing[*]}"
    say "install and start them:  sudo apt-get install -y postgresql redis-server"
    exit 1
  fi
  say "not reachable, their tests will be skipped: ${missing[*]}"
fi
