#!/usr/bin/env bash
# deploy/api/openapi.json (issue 15) is an OpenAPI 3.1 document: it passes
# the official 3.1 JSON schema, checked by @seriousme/openapi-schema-validator
# pinned in tests/deploy/openapi/package-lock.json (npm ci into the scratch
# dir, again only when the lockfile changed). A copy with a response that
# lacks its required description must fail (the check can fail). Offline
# once installed; integration_openapi checks the document against the
# running services. Usage: openapi.sh <scratch dir>
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
document=$root/deploy/api/openapi.json
scratch=${1:?usage: openapi.sh <scratch dir>}
command -v npm >/dev/null && command -v node >/dev/null || "$root/tools/deps.sh"

"$root/tools/npm-ci-pinned" "$here/openapi" "$scratch" >/dev/null
validate=$scratch/node_modules/.bin/validate-api

out=$("$validate" "$document" 2>&1) || { echo "$out"; echo "not ok - $document is not a valid OpenAPI document"; exit 1; }
grep -q '"valid": true' <<<"$out" || { echo "$out"; echo "not ok - unexpected validator output"; exit 1; }
grep -q '"openapi": "3.1.0"' "$document" || { echo "not ok - $document does not say openapi 3.1.0"; exit 1; }
echo "ok - $document is a valid OpenAPI 3.1 document"

# Negative: a response without its required description is refused.
python3 - "$document" "$scratch/broken.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
del doc["paths"]["/healthz"]["get"]["responses"]["200"]["description"]
json.dump(doc, open(sys.argv[2], "w"))
PY
if "$validate" "$scratch/broken.json" 2>&1 | grep -q '"valid": true'; then
  echo "not ok - negative: a response without a description was accepted"
  exit 1
fi
echo "ok - negative: a response without a description is refused"
echo "openapi: 2 passed, 0 failed"
