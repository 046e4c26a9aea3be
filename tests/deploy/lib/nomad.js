'use strict';
// Checks of deploy/nomad: every job file parses as HCL (@cdktf/hcl2json, the
// HCL2 parser compiled to WebAssembly) and keeps the promises of runbook 001
// and issue 10: the image carries var.image_tag, resources, kill_timeout, a
// /readyz check on every service, non-root, no secret in the file, and the
// worker-pool contract (parameterized conveyor-worker, the pool's settings,
// its ACL policy).
//
// No Nomad binary runs here. `nomad job run -var image_tag=X file` is
// simulated by `resolve()`: `${var.NAME}` is replaced by -var values or the
// variable's default, as Nomad does at parse time; runtime interpolations
// (${NOMAD_META_x}, ${attr.x}) stay as they are, as Nomad leaves them for the
// client.
const fs = require('fs');
const path = require('path');
const hcl = require('@cdktf/hcl2json');

const SERVICES = ['creation', 'configuration', 'execution', 'publication', 'monitor', 'workerpool'];
const BATCH = { migrate: 'conveyor', worker: 'conveyor-worker' };
const MIN_KILL_TIMEOUT_S = 45;
const POOL_CAPABILITIES = ['dispatch-job', 'list-jobs', 'read-job', 'submit-job'];

async function parseFile(file) {
  return hcl.parse(path.basename(file), fs.readFileSync(file, 'utf8'));
}

// hcl2json gives every block as a list of bodies; labelled blocks as
// {label: [body]}. These return [label, body] pairs and bodies.
function labelled(obj, key) {
  const out = [];
  for (const [label, bodies] of Object.entries((obj && obj[key]) || {})) {
    for (const b of bodies) out.push([label, b]);
  }
  return out;
}
function bodies(obj, key) {
  return (obj && obj[key]) || [];
}
function one(obj, key) {
  return bodies(obj, key)[0];
}

function variables(doc) {
  const vars = {};
  for (const [name, body] of labelled(doc, 'variable')) vars[name] = body;
  return vars;
}

// Substitutes ${var.NAME} everywhere; a string that is only "${var.NAME}"
// takes the value itself (lists stay lists). Unknown variables are reported.
function resolve(doc, overrides = {}, unknown = []) {
  const vars = variables(doc);
  const value = (name) => {
    if (Object.prototype.hasOwnProperty.call(overrides, name)) return overrides[name];
    if (vars[name] && Object.prototype.hasOwnProperty.call(vars[name], 'default')) return vars[name].default;
    unknown.push(name);
    return undefined;
  };
  const walk = (v) => {
    if (typeof v === 'string') {
      const whole = /^\$\{var\.([A-Za-z0-9_]+)\}$/.exec(v);
      if (whole) return value(whole[1]);
      return v.replace(/\$\{var\.([A-Za-z0-9_]+)\}/g, (_, n) => String(value(n)));
    }
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  const { variable, ...rest } = doc;
  return walk(rest);
}

function seconds(duration) {
  const m = /^(\d+)(ms|s|m|h)$/.exec(String(duration));
  if (!m) return NaN;
  return Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2]];
}

// Every task of a (resolved or raw) document: {job, group, task, body}.
function tasks(doc) {
  const out = [];
  for (const [job, jb] of labelled(doc, 'job')) {
    for (const [group, gb] of labelled(jb, 'group')) {
      for (const [task, tb] of labelled(gb, 'task')) out.push({ job, jb, group, gb, task, tb });
    }
  }
  return out;
}

const SECRET_VALUE = /(postgres(ql)?:\/\/[^/\s:@]+:[^@\s]+@)|(password\s*=)/i;
const SECRET_KEY = /(DATABASE_URL|PASSWORD|TOKEN|SECRET)/;

// Checks of one job file; `kind` is the base name (creation, worker, ...).
function checkJobFile(file, doc, report, known) {
  const kind = path.basename(file).replace(/\.nomad\.hcl$/, '');
  const isService = SERVICES.includes(kind);
  const image = isService ? `conveyor-${kind}` : BATCH[kind];
  if (!report.expect(image, file, `unexpected job file (expected one of ${[...SERVICES, ...Object.keys(BATCH)].join(', ')})`)) return;
  const vars = variables(doc);
  for (const v of ['image_tag', 'registry']) {
    report.expect(vars[v] && typeof vars[v].default === 'string', file, `variable "${v}" with a string default is missing`);
  }
  const unknown = [];
  const defaults = resolve(doc, {}, unknown);
  for (const u of unknown) report.fail(file, `refers to var.${u}, which is not declared`);
  const jobs = labelled(doc, 'job');
  if (!report.expect(jobs.length === 1, file, `one job per file expected, found ${jobs.length}`)) return;
  const [jobName, jb] = jobs[0];
  report.expect(jobName === `conveyor-${kind}`, file, `job must be named conveyor-${kind}, is ${jobName}`);
  const type = jb.type || 'service';
  report.expect(type === (isService ? 'service' : 'batch'), file, `job type must be ${isService ? 'service' : 'batch'}, is ${type}`);

  const raw = tasks(doc);
  const resolved = tasks(defaults);
  if (!report.expect(raw.length > 0, file, 'no task')) return;
  raw.forEach((t, i) => {
    const where = `${file} task ${t.task}`;
    const cfg = one(t.tb, 'config') || {};
    report.expect(t.tb.driver === 'docker', where, `driver must be docker, is ${t.tb.driver}`);
    report.expect(typeof cfg.image === 'string' && cfg.image.includes('${var.image_tag}'), where,
      `image ${cfg.image} does not interpolate var.image_tag: the tag could not be patched with -var image_tag=`);
    report.expect(typeof cfg.image === 'string' && cfg.image.includes('${var.registry}'), where,
      `image ${cfg.image} does not interpolate var.registry`);
    const rimg = (one(resolved[i].tb, 'config') || {}).image;
    report.expect(rimg === `${vars.registry && vars.registry.default}/${image}:${vars.image_tag && vars.image_tag.default}`, where,
      `image resolves to ${rimg}, expected <registry>/${image}:<image_tag>`);
    report.expect(String(t.tb.user) === '10001', where, `user must be "10001" (non-root), is ${t.tb.user}`);
    report.expect(cfg.readonly_rootfs === true, where, 'config.readonly_rootfs must be true');
    report.expect(JSON.stringify(cfg.cap_drop) === '["ALL"]', where, 'config.cap_drop must be ["ALL"]');
    report.expect(seconds(t.tb.kill_timeout) >= MIN_KILL_TIMEOUT_S, where,
      `kill_timeout must be at least ${MIN_KILL_TIMEOUT_S}s (the SIGTERM drain), is ${t.tb.kill_timeout}`);
    const res = one(t.tb, 'resources');
    report.expect(res && res.cpu > 0 && res.memory > 0, where, 'resources with cpu and memory are required');
    const env = Object.assign({}, ...bodies(t.tb, 'env'));
    for (const [k, v] of Object.entries(env)) {
      if (k.startsWith('CONVEYOR_')) report.expect(known.has(k), where, `unknown configuration key ${k}`);
      // <KEY>_FILE naming a rendered secret is how a secret gets in (issue 12).
      const secretFile = /_FILE$/.test(k) && String(v).startsWith('${NOMAD_SECRETS_DIR}/');
      report.expect(!SECRET_KEY.test(k) || secretFile, where, `${k} is a secret: it belongs in a template from a Nomad Variable, not in env`);
      report.expect(!SECRET_VALUE.test(String(v)), where, `env ${k} holds what looks like a credential`);
    }
    for (const s of JSON.stringify(cfg).match(/postgres(ql)?:\/\/[^"]*/g) || []) {
      report.fail(where, `config holds a database URL (${s})`);
    }
    const templates = bodies(t.tb, 'template');
    // Each job its own database login (issue 12): CONVEYOR_DATABASE_URL_FILE
    // names a template under secrets/ that reads the job's own Variable
    // nomad/jobs/<job> (which no other job can read), never the shared one.
    report.expect(!templates.some((tp) => /CONVEYOR_DATABASE_URL=/.test(tp.data || '')), where,
      'CONVEYOR_DATABASE_URL in an env template: every job would share one login; use the job\'s own Variable and CONVEYOR_DATABASE_URL_FILE');
    const urlFile = String(env.CONVEYOR_DATABASE_URL_FILE || '');
    const dest = urlFile.replace(/^\$\{NOMAD_SECRETS_DIR\}\//, 'secrets/');
    const dbTemplate = templates.find((tp) => tp.destination === dest);
    if (report.expect(urlFile.startsWith('${NOMAD_SECRETS_DIR}/') && dbTemplate, where,
      'CONVEYOR_DATABASE_URL_FILE must name a template rendered under ${NOMAD_SECRETS_DIR}/')) {
      report.expect(dbTemplate.env !== true, where, 'the database URL template must be a file, not env = true');
      report.expect(new RegExp(`nomadVar\\s+"nomad/jobs/${jobName}"\\s*\\}\\}\\{\\{\\s*\\.database_url\\s*\\}\\}`).test(dbTemplate.data || ''), where,
        `the database URL must be the database_url of the job's own Variable nomad/jobs/${jobName}`);
    }
    for (const tp of templates) {
      for (const line of String(tp.data || '').split('\n')) {
        const m = /^\s*(CONVEYOR_[A-Z0-9_]+)=/.exec(line);
        if (m) report.expect(known.has(m[1]), where, `unknown configuration key ${m[1]} in a template`);
      }
    }
  });

  if (isService) {
    for (const [group, gb] of labelled(jb, 'group')) {
      const checks = bodies(gb, 'service').flatMap((s) => bodies(s, 'check'));
      report.expect(checks.some((c) => c.type === 'http' && c.path === '/readyz'), `${file} group ${group}`,
        'a service with an http check on /readyz is required');
    }
  }
  if (kind === 'migrate') checkMigrateLogins(file, raw[0], jobName, report);
  return { kind, jobName, jb, doc };
}

// The migrate job creates every service's login (conveyor db grant-login),
// each password rendered from its own Variable into a file.
function checkMigrateLogins(file, t, jobName, report) {
  const cmd = [].concat((one(t.tb, 'config') || {}).entrypoint || [], (one(t.tb, 'config') || {}).args || []).join(' ');
  report.expect(/conveyor db migrate/.test(cmd) && /conveyor db grant-login "conveyor_\$\$\{s\}_login" --role "conveyor_\$s"/.test(cmd), file,
    'must run conveyor db migrate, then conveyor db grant-login conveyor_<s>_login --role conveyor_<s> for each service s');
  const templates = bodies(t.tb, 'template');
  for (const svc of [...SERVICES, 'worker']) {
    const tp = templates.find((x) => x.destination === `secrets/${svc}-password`);
    report.expect(new RegExp(`for s in [a-z ]*\\b${svc}\\b[a-z ]*; do`).test(cmd) && tp && tp.env !== true &&
      new RegExp(`nomadVar\\s+"nomad/jobs/${jobName}".*\\.${svc}_password\\b`).test(tp.data || ''), file,
    `no login for ${svc}: the loop must cover it, its password a file secrets/${svc}-password from nomad/jobs/${jobName}`);
  }
}

function checkWorkerContract(file, jb, report) {
  const p = one(jb, 'parameterized');
  if (report.expect(p, file, 'conveyor-worker must be parameterized')) {
    report.expect(JSON.stringify([...(p.meta_required || [])].sort()) === JSON.stringify(['pool', 'worker_name']), file,
      `parameterized.meta_required must be ["worker_name", "pool"], is ${JSON.stringify(p.meta_required)}`);
  }
  const groups = labelled(jb, 'group');
  if (!report.expect(groups.length === 1 && groups[0][0] === 'worker', file, 'one group named "worker" expected')) return;
  const gb = groups[0][1];
  const r = one(gb, 'restart');
  report.expect(r && r.attempts === 0, file, 'restart { attempts = 0 } expected: the pool replaces lost workers');
  const rs = one(gb, 'reschedule');
  report.expect(rs && rs.attempts === 0 && rs.unlimited === false, file, 'reschedule { attempts = 0, unlimited = false } expected');
  const ts = labelled(gb, 'task');
  if (!report.expect(ts.length === 1 && ts[0][0] === 'worker', file, 'one task named "worker" expected')) return;
  const env = Object.assign({}, ...bodies(ts[0][1], 'env'));
  const want = {
    CONVEYOR_WORKER_NAME: '${NOMAD_META_worker_name}',
    CONVEYOR_INSTANCE_ID: '${NOMAD_META_worker_name}',
    CONVEYOR_WORKER_POOL: '${NOMAD_META_pool}',
  };
  for (const [k, v] of Object.entries(want)) report.expect(env[k] === v, file, `env ${k} must be "${v}", is ${env[k]}`);
}

function checkPoolContract(file, jb, workerJobName, report) {
  const t = tasks({ job: { x: [jb] } })[0];
  const env = Object.assign({}, ...bodies(t.tb, 'env'));
  report.expect(env.CONVEYOR_WORKERPOOL_BACKEND === 'nomad', file, 'CONVEYOR_WORKERPOOL_BACKEND must be nomad');
  report.expect(/^https?:\/\/.+:\d+$/.test(env.CONVEYOR_WORKERPOOL_NOMAD_ADDR || ''), file, 'CONVEYOR_WORKERPOOL_NOMAD_ADDR must be an http(s) URL with a port');
  report.expect(env.CONVEYOR_WORKERPOOL_NOMAD_JOB === workerJobName, file,
    `CONVEYOR_WORKERPOOL_NOMAD_JOB must name the worker job (${workerJobName}), is ${env.CONVEYOR_WORKERPOOL_NOMAD_JOB}`);
  report.expect(env.CONVEYOR_WORKERPOOL_NOMAD_NAMESPACE, file, 'CONVEYOR_WORKERPOOL_NOMAD_NAMESPACE must be set');
  const tokenTpl = bodies(t.tb, 'template').find((tp) => /CONVEYOR_WORKERPOOL_NOMAD_TOKEN=/.test(tp.data || ''));
  report.expect(tokenTpl && tokenTpl.env === true && /nomadVar\s+"nomad\/jobs\/conveyor-workerpool"/.test(tokenTpl.data), file,
    'CONVEYOR_WORKERPOOL_NOMAD_TOKEN must come from the Nomad Variable nomad/jobs/conveyor-workerpool through a template with env = true');
}

function checkAclPolicy(file, doc, namespace, report) {
  const extra = Object.keys(doc).filter((k) => k !== 'namespace');
  report.expect(extra.length === 0, file, `grants more than a namespace rule: ${extra.join(', ')}`);
  const rules = labelled(doc, 'namespace');
  if (!report.expect(rules.length === 1, file, 'exactly one namespace rule expected')) return;
  const [ns, body] = rules[0];
  report.expect(ns === namespace, file, `namespace rule "${ns}" must be the jobs' namespace "${namespace}"`);
  const keys = Object.keys(body).filter((k) => k !== 'capabilities');
  report.expect(keys.length === 0, file, `only capabilities expected in the namespace rule, found ${keys.join(', ')}`);
  report.expect(JSON.stringify([...(body.capabilities || [])].sort()) === JSON.stringify(POOL_CAPABILITIES), file,
    `capabilities must be exactly ${POOL_CAPABILITIES.join(', ')}; are ${JSON.stringify(body.capabilities)}`);
}

module.exports = {
  SERVICES, parseFile, resolve, tasks, checkJobFile, checkWorkerContract, checkPoolContract, checkAclPolicy, variables,
};
