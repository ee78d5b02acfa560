#!/usr/bin/env bash
# End-to-end tests of the web client in real headless Chromium.
#
# Installs what is missing (Debian's chromium when /usr/bin/chromium is absent, the
# pinned playwright-core with `npm ci`), builds the server unless BAVARD_BIN names a
# binary, then runs `npm test`. Exits non-zero on any failure.
#
#   tests/e2e/run.sh                      # build target/debug/bavard and test it
#   BAVARD_BIN=/path/to/bavard tests/e2e/run.sh
#
# Screenshots land in test-output/ at the repository root.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if [ ! -x /usr/bin/chromium ]; then
  echo "e2e: installing Debian's chromium" >&2
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "e2e: node and npm are needed (Node.js 20.11 or later)" >&2
  exit 1
fi

cd "$here"
if [ ! -f node_modules/playwright-core/package.json ] \
  || ! node -e 'const l=require("./package-lock.json"),i=require("./node_modules/playwright-core/package.json");process.exit(l.packages["node_modules/playwright-core"].version===i.version?0:1)'; then
  echo "e2e: npm ci" >&2
  npm ci --no-audit --no-fund
fi

if [ -z "${BAVARD_BIN:-}" ]; then
  echo "e2e: cargo build -p bavard" >&2
  (cd "$root" && cargo build -p bavard)
  export BAVARD_BIN="$root/target/debug/bavard"
fi
if [ ! -x "$BAVARD_BIN" ]; then
  echo "e2e: BAVARD_BIN=$BAVARD_BIN is not an executable" >&2
  exit 1
fi

mkdir -p "$root/test-output"
npm test
