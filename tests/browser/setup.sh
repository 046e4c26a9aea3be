#!/usr/bin/env bash
# Puts what the browser test needs in place, once: Debian's chromium (through
# tools/deps.sh) and the pinned puppeteer-core (`npm ci` of this folder's
# lockfile into WORK_DIR/npm, again only when the lockfile or node changed).
# Usage: setup.sh WORK_DIR. Prints nothing on success but its progress.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:?usage: setup.sh WORK_DIR}

if ! command -v chromium >/dev/null || ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "browser: chromium, node or npm missing: tools/deps.sh"
  "$root/tools/deps.sh"
fi

npm_dir=$work/npm
mkdir -p "$npm_dir"
stamp=$( (cat "$here/package.json" "$here/package-lock.json"; node --version) | sha256sum | cut -c1-16)
if [[ ! -f $npm_dir/.stamp || $(cat "$npm_dir/.stamp") != "$stamp" || ! -d $npm_dir/node_modules ]]; then
  cp "$here/package.json" "$here/package-lock.json" "$npm_dir/"
  rm -rf "$npm_dir/node_modules"
  echo "browser: npm ci in $npm_dir"
  (cd "$npm_dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$stamp" >"$npm_dir/.stamp"
fi
