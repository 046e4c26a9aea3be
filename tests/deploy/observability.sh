#!/usr/bin/env bash
# deploy/observability (issue 15): the Prometheus scrape config and alerting
# rules pass `promtool check config` and `promtool check rules`; the Grafana
# dashboard is JSON whose every query names only metrics some Conveyor
# process exposes (a string literal in libs/ or services/, or process_*).
# Offline: no service runs. Usage: observability.sh <scratch dir>
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=$root/deploy/observability
scratch=${1:?usage: observability.sh <scratch dir>}
command -v promtool >/dev/null || "$root/tools/deps.sh"

rm -rf "$scratch" && mkdir -p "$scratch"
# The config reads the reader token from a file next to it: promtool checks it exists.
cp "$dir/prometheus.yml" "$dir/conveyor-alerts.yml" "$scratch/"
echo "cvt_not_a_real_token" >"$scratch/conveyor-reader.token"
promtool check config "$scratch/prometheus.yml"
promtool check rules "$dir/conveyor-alerts.yml"

# Metric names used by the dashboard's and the rules' expressions.
python3 - "$dir/grafana-dashboard.json" "$dir/conveyor-alerts.yml" >"$scratch/names" <<'PY'
import json, re, sys
dashboard = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
if not exprs:
    sys.exit("grafana-dashboard.json: no panel has a query")
exprs.append(open(sys.argv[2]).read())
names = set()
for e in exprs:
    for n in re.findall(r"\b((?:conveyor|process)_[a-z0-9_]+)", e):
        names.add(re.sub(r"_(bucket|sum|count)$", "", n) if n.endswith(("_bucket", "_sum", "_count")) else n)
print("\n".join(sorted(names)))
PY
missing=0
while read -r name; do
  if [[ $name == process_* ]]; then
    grep -rqF "\"$name\"" "$root/libs/core/src/metrics" || { echo "not exposed: $name"; missing=1; }
  elif ! grep -rqF "\"$name\"" "$root/libs" "$root/services" --include=*.cpp; then
    echo "not exposed by any service: $name"
    missing=1
  fi
done <"$scratch/names"
[[ $missing -eq 0 ]] || { echo "deploy/observability names metrics no process exposes" >&2; exit 1; }
echo "observability: config, rules and $(wc -l <"$scratch/names") metric names checked"
