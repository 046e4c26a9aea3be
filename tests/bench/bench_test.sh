#!/usr/bin/env bash
# Smoke test of conveyor-bench (tests/bench/CMakeLists.txt): bench_test.sh BENCH
set -euo pipefail
bench=$1
fail() { echo "bench_test: $*" >&2; exit 1; }

# --help: usage on stdout, exit 0, quickly, and no stack started (no
# PostgreSQL or devbroker child, no temp dir of a stack).
# (Counted by a glob: `ls` of no match would fail the script under pipefail.)
stacks() { local d=(/tmp/conveyor-e2e*); [[ -e ${d[0]} ]] && echo "${#d[@]}" || echo 0; }
before=$(stacks)
start=$SECONDS
out=$("$bench" --help) || fail "--help exited $?"
[[ $out == *"--workload"* && $out == *"--fast-db"* && $out == *"--json"* ]] || fail "--help printed no usage: $out"
(( SECONDS - start < 5 )) || fail "--help took $((SECONDS - start)) s: it ran something"
after=$(stacks)
(( after <= before )) || fail "--help made a stack directory under /tmp"

# An unknown option: exit 2 and its name on stderr.
set +e
err=$("$bench" --no-such-option 2>&1 >/dev/null)
rc=$?
set -e
[[ $rc -eq 2 ]] || fail "an unknown option exited $rc, not 2"
[[ $err == *"--no-such-option"* ]] || fail "the error does not name the option: $err"

# A tiny run: every field of the report. The throughput phase submits in
# batches (POST /v1/jobs/batch: 7, 7 and 6 jobs), the latency phase one by one.
# The webhook sink takes 30 ms to answer (--sink-delay), so no job's done hop is
# shorter. Five jobs wait through both phases on one that never ends
# (--waiting): configured before the first, counted in neither. The job
# folders go to a folder of the run's own under --files-dir, seen while the
# run lasts and removed after it.
files=$(mktemp -d)
trap 'rm -rf "$files" "$files.seen"' EXIT
( until compgen -G "$files/conveyor-bench-files-*/logs/*/job-*" >/dev/null; do sleep 0.1; done; touch "$files.seen" ) &
watcher=$!
json=$("$bench" --workload process --jobs 20 --batch 7 --concurrency 6 --rate 50 --duration 2s --sink-delay 30 \
  --waiting 5 --files-dir "$files" --json) ||
  fail "the tiny run exited $?"
kill "$watcher" 2>/dev/null || true
[[ -e $files.seen ]] || fail "no job folder under --files-dir $files during the run"
[[ -z $(ls -A "$files") ]] || fail "--files-dir $files was not cleaned up: $(ls -A "$files")"
set +e
err=$("$bench" --files-dir "$files/missing" --jobs 0 --duration 0 2>&1 >/dev/null)
rc=$?
set -e
[[ $rc -ne 0 && $err == *"--files-dir"* ]] || fail "a missing --files-dir was not refused by name ($rc): $err"
python3 - "$json" "$files" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["settings"]["files_dir"] == sys.argv[2], r["settings"]
assert r["settings"]["durable_postgres"] is True, r["settings"]
assert r["settings"]["batch"] == 7 and r["settings"]["concurrency"] == 6, r["settings"]
assert r["settings"]["sink_delay_ms"] == 30, r["settings"]
assert r["settings"]["waiting"] == 5, r["settings"]
assert r["machine"]["nproc"] >= 1
# The file system of the job folders, e.g. "ext4 (vda, no journal)", "tmpfs".
assert r["machine"]["files_volume"] not in ("", "unknown"), r["machine"]
[w] = r["workloads"]
assert w["workload"] == "process", w
assert w["params"] == {"seconds": 0}, w  # the jobs' params, reported as run
for phase, jobs in (("throughput", 20), ("latency", 100)):
    p = w[phase]
    assert p["jobs"] == jobs and p["done"] == jobs and not p["timed_out"], (phase, p)
    assert p["jobs_per_s"] > 0 and p["span_s"] > 0, (phase, p)
    lat = p["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"], (phase, lat)
    cpu = p["cpu_ms_per_job"]
    for name in ("creation", "configuration", "execution", "publication", "worker-1", "worker-2",
                 "devbroker", "postgres", "job processes", "bench"):
        assert name in cpu, (phase, name, cpu)
    assert cpu["postgres"] > 0, (phase, cpu)
    # /proc counts CPU in clock ticks (10 ms): the 20 `sleep 0` processes of
    # the throughput phase (about 0.8 ms each) may take less than one tick
    # together; the latency phase's 100 take about eight.
    assert cpu["job processes"] > 0 or jobs < 100, (phase, cpu)
    # Where the latency goes: one entry per hop of the hot path, in order.
    hops = [h["status"] for h in p["hops"]]
    assert hops == ["configured", "ready", "queued", "started", "processed", "done"], (phase, hops)
    for h in p["hops"]:
        assert h["changes"] == jobs and 0 <= h["p50_ms"] <= h["p99_ms"], (phase, h)
    assert p["hops"][-1]["p50_ms"] >= 30, ("the sink answers in 30 ms", phase, p["hops"][-1])
for name in ("creation", "worker-1", "devbroker"):
    assert w["peak_rss_mib"][name] > 1, w["peak_rss_mib"]
PY
echo "bench_test: ok"
