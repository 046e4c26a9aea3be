// The console in a real browser (issue 15): headless Chromium driven through
// the DevTools protocol by puppeteer-core. Run by console_browser_test.cpp,
// which starts the stack and submits the jobs; this script only uses the
// browser, as an operator would. Environment:
//   CONSOLE_URL  the monitor (http://127.0.0.1:PORT)
//   TOKEN        an operator's API token
//   JOB_ID       the running sleep job to find, watch and cancel
//   SHOTS_DIR    where the screenshots go (console-overview.png, console-job.png)
//   CHROMIUM     the browser (default /usr/bin/chromium)
// Exits 0 when every step passed; else prints the step that failed and 1.
'use strict';
const puppeteer = require('puppeteer-core');
const path = require('path');

const env = (name) => {
  if (!process.env[name]) throw new Error(`${name} is not set`);
  return process.env[name];
};
const base = env('CONSOLE_URL');
const token = env('TOKEN');
const jobId = env('JOB_ID');
const shots = env('SHOTS_DIR');

let step = 'start';
const check = (ok, what) => { if (!ok) throw new Error(what); };

// Polls fn (which may run across reloads of the page) until it returns a
// truthy value or the deadline passes.
async function waitFor(fn, what, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) { /* the page is reloading: try again */ }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

const text = (page, selector) => page.$eval(selector, (e) => e.textContent);

async function login(page) {
  step = 'log in';
  await page.goto(`${base}/jobs`);  // no session: sent to /login
  check(page.url().endsWith('/login'), `expected /login, got ${page.url()}`);
  await page.type('#token', token);
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  check(new URL(page.url()).pathname === '/', `after login expected /, got ${page.url()}`);
}

async function overview(page) {
  step = 'overview';
  await page.waitForSelector('svg');
  const body = await text(page, 'main');
  check(body.includes('Jobs by status') && body.includes('busy of'), 'overview without jobs or workers');
  await page.screenshot({path: path.join(shots, 'console-overview.png'), fullPage: true});
}

async function findJob(page) {
  step = 'find the job by filter';
  await page.click('nav a[href="/jobs"]');
  await page.waitForSelector('form.filters');
  await page.select('select[name=status]', 'started');
  await page.select('select[name=type]', 'sleep');
  await Promise.all([page.waitForNavigation(), page.click('form.filters button[type=submit]')]);
  const url = new URL(page.url());
  check(url.searchParams.get('status') === 'started', `filter not in the URL: ${page.url()}`);
  const ids = await page.$$eval('#jobs tr td:first-child a', (as) => as.map((a) => a.textContent));
  check(ids.includes(jobId), `job ${jobId} not among the started sleep jobs: ${ids}`);
  await Promise.all([page.waitForNavigation(), page.click(`#jobs a[href="/jobs/${jobId}"]`)]);
}

async function jobPage(page) {
  step = 'job page: history and log';
  check(new URL(page.url()).pathname === `/jobs/${jobId}`, `not on the job page: ${page.url()}`);
  const history = await text(page, '#history');
  for (const s of ['initialized', 'queued', 'started']) check(history.includes(s), `history lacks ${s}: ${history}`);
  // The log is live: the worker's lines appear without a reload.
  await waitFor(async () => (await text(page, '#log')).includes('sleeping'), 'the log to show the job');
  await page.screenshot({path: path.join(shots, 'console-job.png'), fullPage: true});
}

async function cancel(page) {
  step = 'cancel from the page';
  page.on('dialog', (d) => d.accept());
  await page.click(`button[data-post="/jobs/${jobId}/cancel"]`);
  await waitFor(async () => (await text(page, '#status')).trim() === 'canceled', 'the status to become canceled');
  await waitFor(async () => (await text(page, '#history')).includes('canceled'), 'the history to show the cancel');
}

(async () => {
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  try {
    const page = await browser.newPage();
    await page.setViewport({width: 1280, height: 900});
    page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
    await login(page);
    await overview(page);
    await findJob(page);
    await jobPage(page);
    await cancel(page);
    console.log('browser: every step passed');
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(`browser: step "${step}" failed: ${e.message}`);
  process.exit(1);
});
