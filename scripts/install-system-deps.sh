#!/usr/bin/env bash
# Make sure the server binaries `make dev`, `make test` and `make bench` start are installed.
# As root on Debian/Ubuntu it installs what is missing; otherwise it says in one line what to install.
# WITH_SERVERS=0 skips PostgreSQL and Redis (`make lint` needs only promtool).
set -euo pipefail

missing=()
if [ "${WITH_SERVERS:-1}" = 1 ]; then
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  if ! command -v initdb >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    missing+=(postgresql)
  fi
  command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
fi
# `make lint` and `make test` check deploy/prometheus/alerts.yml with promtool (Debian's prometheus).
if [ "${WITH_PROMTOOL:-0}" = 1 ] && ! command -v promtool >/dev/null 2>&1; then
  missing+=(prometheus)
fi
if [ "${WITH_WRK:-0}" = 1 ] && ! command -v wrk >/dev/null 2>&1; then
  missing+=(wrk)
fi
# `make test` sets WITH_BROWSER=1: tests/browser drive Debian's Chromium through Playwright.
if [ "${WITH_BROWSER:-0}" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  missing+=(chromium)
fi

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's packages may start system-wide servers; ours run on their own ports, so stop them
  # (prometheus: only its promtool is wanted).
  if command -v service >/dev/null 2>&1; then
    service redis-server stop >/dev/null 2>&1 || true
    service postgresql stop >/dev/null 2>&1 || true
    service prometheus stop >/dev/null 2>&1 || true
  fi
  exit 0
fi
echo "missing: ${missing[*]} -- install them (Debian/Ubuntu: sudo apt-get install ${missing[*]})" >&2
exit 1
