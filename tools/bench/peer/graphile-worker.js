// graphile-worker 0.17.3, the peer of issue 14's resident target, run the
// way FACTS.md ran it: no-op jobs, its default settings but a concurrency
// of 32, on the PostgreSQL given. Two modes:
//   before  every job added first (add_jobs, 1,000 a call), then timed from
//           the runner's start to an empty queue: the peer's own figure;
//   during  the runner started, then 4 clients add 100 jobs a call while it
//           runs, timed from the first add to an empty queue: the same
//           shape as conveyor-bench's throughput phase (4 submitters,
//           --batch 100, first created_at to last done).
// The result lines go to stderr (the peer logs every job on stdout, as it
// does by default). CPU is the whole machine's (/proc/stat): run it on an
// otherwise quiet machine, as conveyor-bench.
//
//   node graphile-worker.js DATABASE_URL [JOBS] [CONCURRENCY] [MODE...]
"use strict";
const fs = require("fs");
const os = require("os");
const { run } = require("graphile-worker");
const { Pool } = require("pg");

const [url, jobsArg, concurrencyArg, ...modesArg] = process.argv.slice(2);
if (!url) {
  console.error("usage: node graphile-worker.js DATABASE_URL [JOBS] [CONCURRENCY] [before|during...]");
  process.exit(2);
}
const jobs = Number(jobsArg || 20000);
const concurrency = Number(concurrencyArg || 32);
const modes = modesArg.length ? modesArg : ["before", "during"];
for (const m of modes) {
  if (m !== "before" && m !== "during") {
    console.error(`graphile-worker.js: unknown mode ${m} (before or during)`);
    process.exit(2);
  }
}
const noop = { noop: async () => {} };

function machineTicks() {
  const f = fs.readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = f[3] + f[4];
  const all = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: all - idle, all };
}

async function add(pool, count) {
  await pool.query(
    "SELECT graphile_worker.add_jobs(ARRAY(SELECT ROW('noop', json_build_object('n', g), NULL, NULL, NULL, NULL, " +
      "NULL, NULL)::graphile_worker.job_spec FROM generate_series(1, $1) g))",
    [count]);
}

async function queueEmpty(pool) {
  for (;;) {
    const { rows } = await pool.query("SELECT count(*)::int AS n FROM graphile_worker._private_jobs");
    if (rows[0].n === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 20));  // a poll of progress
  }
}

async function runMode(pool, mode) {
  await pool.query("DELETE FROM graphile_worker._private_jobs");
  if (mode === "before") {
    for (let left = jobs; left > 0; left -= 1000) await add(pool, Math.min(1000, left));
  }
  const t0 = process.hrtime.bigint();
  const c0 = machineTicks();
  const runner = await run({ connectionString: url, concurrency, noHandleSignals: true, taskList: noop });
  if (mode === "during") {
    let left = jobs;
    const client = async () => {
      while (left > 0) {
        const n = Math.min(100, left);
        left -= n;
        await add(pool, n);
      }
    };
    await Promise.all([client(), client(), client(), client()]);
  }
  await queueEmpty(pool);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const c1 = machineTicks();
  await runner.stop();
  const busy = (c1.busy - c0.busy) / (c1.all - c0.all);
  const cores = os.cpus().length;
  console.error(
    `peer graphile-worker 0.17.3 ${mode}: ${jobs} jobs, concurrency ${concurrency}: ` +
      `${(jobs / seconds).toFixed(1)} jobs/s over ${seconds.toFixed(2)} s; machine ${(busy * 100).toFixed(0)}% busy ` +
      `(${cores} cores), ${((busy * cores * seconds * 1000) / jobs).toFixed(2)} ms of CPU per job`);
}

(async () => {
  const pool = new Pool({ connectionString: url, max: 8 });
  // Its schema, installed (or migrated) by a first runner.
  const first = await run({ connectionString: url, concurrency: 1, noHandleSignals: true, taskList: noop });
  await first.stop();
  for (const mode of modes) await runMode(pool, mode);
  await pool.end();
})().catch((e) => {
  console.error(`graphile-worker.js: ${e.message}`);
  process.exit(1);
});
