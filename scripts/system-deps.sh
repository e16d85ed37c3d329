#!/usr/bin/env bash
# Install what the tests need from Debian when it is missing: PostgreSQL server binaries (the tests start their own
# throwaway server with initdb/pg_ctl) and Chromium (the browser test drives it with Playwright).
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || need+=(postgresql)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ ${#need[@]} -eq 0 ] && { echo "==> system packages present (postgresql, chromium)"; exit 0; }
echo "==> installing ${need[*]} (apt)"
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
  echo "missing ${need[*]}: install them with apt as root" >&2; exit 1; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
$SUDO apt-get clean  # the downloaded packages: disk the model build needs more
