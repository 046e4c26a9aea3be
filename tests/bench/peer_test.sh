#!/usr/bin/env bash
# Smoke test of tools/bench/peer/run (tests/bench/CMakeLists.txt): the peer,
# graphile-worker as pinned, runs 300 no-op jobs in both modes on a database
# of its own in the testenv cluster, and says how fast.
set -euo pipefail
root=$1
fail() { echo "peer_test: $*" >&2; exit 1; }
base=$(sed -n "s/^CONVEYOR_PG_URL_BASE=//p" "${CONVEYOR_TESTENV_DIR:?}/env")
[[ -n $base ]] || fail "no CONVEYOR_PG_URL_BASE in $CONVEYOR_TESTENV_DIR/env"
db=peer_$$_$RANDOM
psql -q "$base/postgres" -c "CREATE DATABASE $db"
trap 'psql -q "$base/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true' EXIT

# A wrong mode: refused by name, exit 2.
set +e
err=$("$root/tools/bench/peer/run" "$base/$db" 10 2 sideways 2>&1 >/dev/null)
rc=$?
set -e
[[ $rc -eq 2 && $err == *"unknown mode sideways"* ]] || fail "a wrong mode gave exit $rc: $err"

out=$("$root/tools/bench/peer/run" "$base/$db" 300 8 before during 2>&1 >/dev/null) || fail "the run failed: $out"
for mode in before during; do
  line=$(grep "^peer graphile-worker 0.17.3 $mode: 300 jobs, concurrency 8: " <<<"$out") ||
    fail "no $mode line in: $out"
  [[ $line =~ :\ ([0-9.]+)\ jobs/s\ over\ ([0-9.]+)\ s\;.*\ ([0-9.]+)\ ms\ of\ CPU\ per\ job$ ]] ||
    fail "no figures in: $line"
  awk -v r="${BASH_REMATCH[1]}" 'BEGIN { exit !(r > 0) }' || fail "no throughput in: $line"
done
left=$(psql -Atq "$base/$db" -c "SELECT count(*) FROM graphile_worker._private_jobs")
[[ $left == 0 ]] || fail "$left jobs left in the peer's queue"
echo "peer_test: ok"
