#!/usr/bin/env bash
# Install everything the benchmark peers, check.py and plot.py need.
# Idempotent: re-running does nothing when the pinned files have not changed.
#
#   bench/peers/setup.sh
#
# - bench/.venv: Python venv with bench/requirements.txt (the draft's FastAPI
#   + uvicorn, websockets for check.py, matplotlib for plot.py);
# - npm ci in bench/peers/node-ws (ws) and bench/peers/bun (bun, whose binary
#   comes from the npm registry package @oven/bun-linux-x64).
# Set PYTHON to choose the interpreter (default python3, 3.10 or newer).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bench=$(dirname "$here")
venv=$bench/.venv
python=${PYTHON:-python3}

stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# --- Python ----------------------------------------------------------------
req_stamp=$(stamp_of "$bench/requirements.txt" "$here/draft/requirements.txt")
if [[ -x $venv/bin/python && -f $venv/.setup-stamp && $(cat "$venv/.setup-stamp") == "$req_stamp" ]]; then
  echo "setup: $venv up to date"
else
  echo "setup: installing $venv"
  [[ -x $venv/bin/python ]] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$bench/requirements.txt"
  echo "$req_stamp" > "$venv/.setup-stamp"
fi

# --- Node packages -------------------------------------------------------------
for peer in node-ws bun; do
  dir=$here/$peer
  lock_stamp=$(stamp_of "$dir/package.json" "$dir/package-lock.json")
  if [[ -f $dir/node_modules/.setup-stamp && $(cat "$dir/node_modules/.setup-stamp") == "$lock_stamp" ]]; then
    echo "setup: $peer/node_modules up to date"
  else
    echo "setup: npm ci in $peer"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_stamp" > "$dir/node_modules/.setup-stamp"
  fi
done

# --- Report versions -----------------------------------------------------------
"$venv/bin/python" - <<'PY'
from importlib.metadata import version
print("setup: python " + __import__("sys").version.split()[0],
      *(f"{p} {version(p)}" for p in ("fastapi", "starlette", "uvicorn", "websockets", "matplotlib")), sep=", ")
PY
echo "setup: node $(node --version), ws $(node -p 'require("'"$here"'/node-ws/node_modules/ws/package.json").version')"
bun_bin=
for f in "$here"/bun/node_modules/@oven/bun-linux-*/bin/bun "$here/bun/node_modules/bun/bin/bun.exe"; do
  if [[ -x $f && $(stat -c %s "$f") -gt 1000000 ]]; then bun_bin=$f; break; fi
done
if [[ -z $bun_bin ]] || ! bun_version=$("$bun_bin" --version); then
  echo "setup: bun binary missing or not runnable (no AVX2? see README-bench.md)" >&2
  exit 1
fi
echo "setup: bun $bun_version"
