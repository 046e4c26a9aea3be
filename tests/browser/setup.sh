#!/usr/bin/env bash
# Puts what the browser test needs in place, once: Debian's chromium (through
# tools/deps.sh) and the pinned puppeteer-core (tools/npm-ci-pinned: `npm ci`
# of this folder's lockfile into WORK_DIR/npm, again only when the lockfile
# or node changed).
# Usage: setup.sh WORK_DIR. Prints nothing on success but its progress.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:?usage: setup.sh WORK_DIR}

if ! command -v chromium >/dev/null || ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "browser: chromium, node or npm missing: tools/deps.sh"
  "$root/tools/deps.sh"
fi

"$root/tools/npm-ci-pinned" "$here" "$work/npm"
