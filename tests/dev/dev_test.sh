#!/usr/bin/env bash
# tests/dev/dev_test.sh BUILD_DIR: tools/dev as the README and the runbooks
# use it (issue 13, items 2 and 3), each procedure run as written:
#   logs_honours_count        `tools/dev logs NAME N`, `-n N`, `all`; a bad count or no NAME exits 2
#   stop_and_start_by_name    `tools/dev stop|start NAME`, unknown names refused; `status`
#   reboot_sequence           jobs, `tools/dev stop`, `conveyor system prepare-for-reboot --yes`,
#                             `tools/dev start`: every job ends done
#   restore_sequence          `conveyor system backup`, `tools/dev stop`,
#                             `conveyor system restore FILE --clean --yes`, `tools/dev start`,
#                             `conveyor system status`
#   start_refuses_without_postgres  after `tools/dev down`, `start` refuses and builds nothing
# One private copy for all of them: its own state directory (DEV_STATE_DIR),
# PostgreSQL and devbroker, the services on DEV_PORT_BASE (28080; ctest's
# RESOURCE_LOCK dev_ports keeps two runs apart), the binaries of BUILD_DIR
# (DEV_NO_BUILD=1: nothing is built). Exit 0 when every case passed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:?usage: tests/dev/dev_test.sh BUILD_DIR}" && pwd)
state=$(mktemp -d /tmp/conveyor-dev-test.XXXXXX)
# Reachable by the postgres user, so the cluster lives inside it (else
# conveyor-stack puts it in a /tmp/conveyor-<hash> that the cleanup would miss).
chmod 755 "$state"
export DEV_STATE_DIR=$state DEV_BUILD_DIR=$build DEV_PORT_BASE=${DEV_PORT_BASE:-28080} DEV_NO_BUILD=1
cli=$build/tools/conveyor/conveyor
out=$state/out.txt err=$state/err.txt

dev() { "$root/tools/dev" "$@"; }

cleanup() {
  dev down >/dev/null 2>&1 || true
  rm -rf "$state"
}
trap cleanup EXIT
trap 'exit 143' TERM  # so that the EXIT trap stops what was started
trap 'exit 130' INT

current="" failed=()
fail() {
  echo "FAIL [$current]: $*" >&2
  [[ " ${failed[*]} " == *" $current "* ]] || failed+=("$current")
}

# run NAME CMD...: runs CMD with stdout in $out and stderr in $err; sets rc.
run() {
  local start=$SECONDS
  rc=0
  "$@" >"$out" 2>"$err" || rc=$?
  echo "    ${*#"$root/"}: exit $rc ($((SECONDS - start)) s)"
}
expect_rc() {  # expect_rc WANT WHAT
  [[ $rc -eq $1 ]] && return 0
  fail "$2: exit $rc, expected $1; stdout: $(tail -5 "$out"); stderr: $(tail -5 "$err")"
  return 1
}

sql() { psql "$CONVEYOR_DATABASE_URL" -XAtq -v ON_ERROR_STOP=1 -c "$1"; }

# wait_for SECONDS WHAT CMD...: polls CMD until it succeeds, at most SECONDS.
wait_for() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      fail "$what: not within $limit s"
      return 1
    fi
    sleep 0.2  # poll interval; the deadline above bounds the wait
  done
}

pid_alive() { [[ -f $state/run/$1.pid ]] && kill -0 "$(cat "$state/run/$1.pid")" 2>/dev/null; }
none_running() {
  local f
  for f in "$state"/run/*.pid; do
    [[ -f $f ]] || continue
    if kill -0 "$(cat "$f")" 2>/dev/null; then echo "$(basename "$f" .pid) still runs"; return 1; fi
  done
}
jobs_in() { sql "SELECT count(*) FROM conveyor.job WHERE id IN ($1) AND status = ANY ('{$2}')"; }
all_done() { [[ $(jobs_in "$1" "done") -eq $2 ]]; }
some_started() { [[ $(jobs_in "$1" started) -gt 0 ]]; }

submit_sleep() {  # submit_sleep SECONDS: prints the job id
  "$cli" job submit sleep --params "{\"seconds\": $1}" | sed -n 's/^submitted job \([0-9]*\).*/\1/p'
}

logs_honours_count() {
  local log=$state/logs/execution.log
  mkdir -p "$state/logs"
  seq 1 150 >"$log"
  run dev logs execution 5
  expect_rc 0 "logs execution 5" && { [[ $(cat "$out") == "$(seq 146 150)" ]] || fail "logs execution 5 printed: $(cat "$out")"; }
  run dev logs execution -n 5
  expect_rc 0 "logs execution -n 5" && { [[ $(cat "$out") == "$(seq 146 150)" ]] || fail "logs execution -n 5 printed: $(cat "$out")"; }
  run dev logs execution
  expect_rc 0 "logs execution" && { [[ $(cat "$out") == "$(seq 51 150)" ]] || fail "logs execution did not print the last 100 lines"; }
  run dev logs execution x
  expect_rc 2 "logs execution x" && { grep -q "line count.*'x'" "$err" || fail "logs execution x said: $(cat "$err")"; }
  run dev logs execution 0
  expect_rc 2 "logs execution 0"
  [[ ! -s $out ]] || fail "a bad count printed log lines"
  # The whole log (runbook 003 reads it whole), and a NAME is asked for by name.
  run dev logs execution all
  expect_rc 0 "logs execution all" && { [[ $(cat "$out") == "$(seq 1 150)" ]] || fail "logs execution all did not print the whole log"; }
  run dev logs
  expect_rc 2 "logs" && { grep -q "tools/dev logs: a NAME is required" "$err" || fail "logs without a NAME said: $(cat "$err")"; }
  run dev restart
  expect_rc 2 "restart" && { grep -q "tools/dev restart: a NAME is required" "$err" || fail "restart without a NAME said: $(cat "$err")"; }
  # The workers have a log each: it says where.
  run dev logs worker
  expect_rc 2 "logs worker" && { grep -q "logs/workers/\*.log, one per worker" "$err" || fail "logs worker said: $(cat "$err")"; }
}

stop_and_start_by_name() {
  run dev stop nosuch
  expect_rc 2 "stop nosuch" && { grep -q "unknown process 'nosuch'" "$err" || fail "stop nosuch said: $(cat "$err")"; }
  pid_alive execution || { fail "execution does not run before the case"; return; }
  run dev stop execution
  expect_rc 0 "stop execution" || return
  pid_alive execution && fail "execution still runs after stop execution"
  local s
  for s in creation configuration publication monitor workerpool webhook-sink; do
    pid_alive "$s" || fail "$s stopped with stop execution"
  done
  sql 'SELECT 1' >/dev/null || fail "PostgreSQL is not reachable after stop execution"
  run dev status
  expect_rc 3 "status with execution stopped" &&
    { grep -q '^execution: stopped' "$out" || fail "status does not show execution stopped: $(cat "$out")"; }
  run dev start nosuch
  expect_rc 2 "start nosuch"
  run dev start execution
  expect_rc 0 "start execution" || return
  pid_alive execution || fail "execution does not run after start execution"
  grep -q "creation pid" "$out" && fail "start execution started creation again"
  run dev status
  expect_rc 0 "status with everything running"
  return 0
}

# Runbook 003 as the README writes it.
reboot_sequence() {
  local ids=() id list
  for _ in $(seq 1 12); do
    id=$(submit_sleep 1)
    [[ -n $id ]] || { fail "job submit sleep printed no id"; return; }
    ids+=("$id")
  done
  list=$(IFS=,; echo "${ids[*]}")
  wait_for 30 "a job started" some_started "$list" || return
  run dev stop
  expect_rc 0 "tools/dev stop" || return
  none_running >/dev/null || fail "services run after tools/dev stop: $(none_running)"
  local left
  left=$(jobs_in "$list" "initialized,configured,ready,queued,started")
  [[ $left -gt 0 ]] || fail "every job ended before the stop: the case proves nothing (raise the count)"
  run "$cli" system prepare-for-reboot --yes
  expect_rc 0 "conveyor system prepare-for-reboot --yes" || return
  [[ $(jobs_in "$list" "queued,started") -eq 0 ]] || fail "jobs still queued or started after prepare-for-reboot"
  run dev start
  expect_rc 0 "tools/dev start" || return
  wait_for 60 "all ${#ids[@]} jobs done after tools/dev start" all_done "$list" "${#ids[@]}" ||
    sql "SELECT id, status FROM conveyor.job WHERE id IN ($list) AND status <> 'done'" >&2
}

# Runbook 002 (and 001's reset from a backup) as the README writes it.
restore_sequence() {
  local backup=$state/backup.dump later
  run "$cli" system backup "$backup"
  expect_rc 0 "conveyor system backup" || return
  later=$(submit_sleep 0)
  run dev stop
  expect_rc 0 "tools/dev stop" || return
  run "$cli" system restore "$backup" --clean --yes
  expect_rc 0 "conveyor system restore --clean --yes" || return
  [[ $(sql "SELECT count(*) FROM conveyor.job WHERE id = $later") -eq 0 ]] ||
    fail "job $later, submitted after the backup, is still there after the restore"
  run dev start
  expect_rc 0 "tools/dev start" || return
  run "$cli" system status
  expect_rc 0 "conveyor system status"
  local id
  id=$(submit_sleep 0)
  [[ -n $id ]] || { fail "no job could be submitted after the restore"; return; }
  # The backup holds the worker row of the worker that ran then, still
  # active: until worker_heartbeat_timeout_s (30 s) the pool counts it as
  # its one worker and starts none, hence 60 s.
  wait_for 60 "job $id done after the restore" all_done "$id" 1
}

start_refuses_without_postgres() {
  run dev down
  expect_rc 0 "tools/dev down" || return
  run dev start
  expect_rc 1 "tools/dev start without PostgreSQL"
  grep -q "not running" "$err" || fail "start said: $(cat "$err")"
  grep -q "tools/dev up" "$err" || fail "start does not say to run tools/dev up: $(cat "$err")"
  grep -q "^==> build" "$out" && fail "start built"
  none_running >/dev/null || fail "start started something: $(none_running)"
  return 0
}

case_run() {
  current=$1
  echo "=== $1"
  local start=$SECONDS
  "$1" || true
  echo "--- $1 ($((SECONDS - start)) s)"
}

case_run logs_honours_count

current=setup
echo "=== setup: $state, ports from $DEV_PORT_BASE"
"$build/tools/stack/conveyor-stack" up --dir "$state" --ephemeral >/dev/null
run dev up
expect_rc 0 "tools/dev up (DEV_NO_BUILD=1)" || exit 1
# shellcheck source=/dev/null
source "$state/env"
# One worker of four slots: most jobs of reboot_sequence outlast the stop.
"$cli" params set max_number_of_worker_instances=1 worker_concurrency=4 >/dev/null

case_run stop_and_start_by_name
case_run reboot_sequence
case_run restore_sequence
case_run start_refuses_without_postgres

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "dev_test: FAILED: ${failed[*]}" >&2
  for f in "$state"/logs/*.log; do
    [[ -f $f ]] || continue
    echo "--- last lines of $f" >&2
    tail -15 "$f" >&2
  done
  exit 1
fi
echo "dev_test: all cases passed"
