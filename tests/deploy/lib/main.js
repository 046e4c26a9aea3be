'use strict';
// Command line of the deploy checks, driven by tests/deploy/check.sh. Each
// command prints one TAP-like line per check ("ok - ..." or "not ok - ...",
// then the problems indented) and exits 1 when one failed.
//
//   k8s --name N --render FILE --known FILE --work DIR [--checks schema,strict,policy,refs,keys]
//       [--external Kind/name]... [--pvc-access MODE] [--no-secrets]
//   k8s-patch --name N --before FILE --after FILE --object Kind/name --path PATH
//   compose-patch --before FILE --after FILE --service NAME
//   compose --config FILE
//   no-credentials --root DIR FILE_OR_DIR...
//   nomad --dir DIR --known FILE [--only FILE]...
//   nomad-patch --dir DIR --file NAME --tag TAG
//   set-image --kustomization FILE --image NAME=NEWNAME:TAG
const fs = require('fs');
const path = require('path');
const { Report, readYamlStream, readYaml, objectId, diffPaths } = require('./common');
const k8s = require('./k8s');
const nomad = require('./nomad');
const compose = require('./compose');

function parseArgs(argv) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) {
      out._.push(a);
      continue;
    }
    const key = a.slice(2);
    const next = argv[i + 1];
    const value = next === undefined || next.startsWith('--') ? true : (i++, next);
    if (out[key] === undefined) out[key] = value;
    else out[key] = [].concat(out[key], value);
  }
  return out;
}

let failed = 0;
function emit(description, report) {
  if (report.ok()) {
    console.log(`ok - ${description}`);
    return;
  }
  failed++;
  console.log(`not ok - ${description}`);
  const shown = report.problems.slice(0, 25);
  for (const p of shown) console.log(`    ${p}`);
  if (report.problems.length > shown.length) console.log(`    ... and ${report.problems.length - shown.length} more`);
}

function knownKeys(file) {
  return new Set(fs.readFileSync(file, 'utf8').split('\n').map((s) => s.trim()).filter(Boolean));
}

const list = (v) => (v === undefined ? [] : [].concat(v));

async function cmdK8s(a) {
  const objects = readYamlStream(a.render);
  const only = a.checks ? String(a.checks).split(',') : ['schema', 'strict', 'policy', 'refs', 'keys'];
  const want = (c) => only.includes(c);
  const kinds = {};
  for (const o of objects) kinds[o.kind] = (kinds[o.kind] || 0) + 1;
  const summary = Object.entries(kinds).map(([k, n]) => `${n} ${k}`).join(', ');
  let r = new Report();
  if (want('schema')) {
    k8s.schemaCheck(objects, r);
    emit(`${a.name}: ${objects.length} objects valid against the Kubernetes schemas (${summary})`, r);
  }
  if (want('strict')) {
    r = new Report();
    k8s.strictCheck(objects, path.join(a.work, a.name), r);
    emit(`${a.name}: no unknown or misspelt field (TypeScript types of kubernetes-models)`, r);
  }
  if (want('policy')) {
    r = new Report();
    k8s.policyCheck(objects, r, { pvcAccess: a['pvc-access'], noSecrets: a['no-secrets'] === true });
  emit(`${a.name}: Conveyor policy (restricted pod security, uid 10001, probes, resources, grace, worker-pool contract, RBAC${
    a['pvc-access'] ? `, conveyor-data ${a['pvc-access']}` : ''}${a['no-secrets'] ? ', no Secret in git' : ''})`, r);
  }
  if (want('refs')) {
    r = new Report();
    const externals = list(a.external);
    k8s.refCheck(objects, r, externals);
    emit(`${a.name}: every ConfigMap, Secret, PVC and ServiceAccount referenced exists${
      externals.length ? ` (external: ${externals.join(', ')})` : ''}`, r);
  }
  if (want('keys')) {
    r = new Report();
    k8s.keyCheck(objects, r, knownKeys(a.known));
    emit(`${a.name}: every CONVEYOR_* key is one the executables know`, r);
  }
}

// What `kustomize edit set image NAME=NEWNAME:TAG` does to a kustomization,
// for machines without a kustomize binary (kubectl has no `edit`): sets the
// entry of the images list, keeping the file's comments and order.
function cmdSetImage(a) {
  const YAML = require('yaml');
  const m = /^([^=]+)=(.+)$/.exec(a.image || '');
  if (!m) throw new Error(`--image NAME=NEWNAME:TAG expected, got ${a.image}`);
  const [, name, ref] = m;
  const colon = ref.lastIndexOf(':');
  const slash = ref.lastIndexOf('/');
  const newName = colon > slash ? ref.slice(0, colon) : ref;
  const newTag = colon > slash ? ref.slice(colon + 1) : undefined;
  const doc = YAML.parseDocument(fs.readFileSync(a.kustomization, 'utf8'));
  let images = doc.get('images');
  if (!images) {
    doc.set('images', doc.createNode([]));
    images = doc.get('images');
  }
  let entry = images.items.find((it) => it.get('name') === name);
  if (!entry) {
    entry = doc.createNode({ name });
    images.items.push(entry);
  }
  entry.set('newName', newName);
  if (newTag !== undefined) entry.set('newTag', newTag);
  fs.writeFileSync(a.kustomization, doc.toString());
}

// Objects keyed by kind/name; generated names lose their hash suffix only
// if the hash is the one thing that differs, so a changed ConfigMap shows.
function byId(objects) {
  return new Map(objects.map((o) => [objectId(o), o]));
}

function cmdK8sPatch(a) {
  const before = byId(readYamlStream(a.before));
  const after = byId(readYamlStream(a.after));
  const r = new Report();
  const changed = [];
  for (const id of new Set([...before.keys(), ...after.keys()])) {
    if (!before.has(id) || !after.has(id)) {
      changed.push(id);
      r.fail(id, before.has(id) ? 'disappeared' : 'appeared');
      continue;
    }
    const paths = diffPaths(before.get(id), after.get(id));
    if (paths.length === 0) continue;
    changed.push(id);
    const [wantKind, wantName] = a.object.split('/');
    const o = after.get(id);
    if (o.kind !== wantKind || o.metadata.name !== wantName) {
      r.fail(id, `changed too (${paths.join(', ')})`);
    } else if (paths.length !== 1 || paths[0] !== a.path) {
      r.fail(id, `changed at ${paths.join(', ')}; only ${a.path} may change`);
    }
  }
  r.expect(changed.length > 0, a.object, 'nothing changed: the patch did not reach it');
  emit(`${a.name}: the tag patch changes ${a.object} ${a.path} and nothing else (changed: ${changed.join(', ') || 'none'})`, r);
}

function cmdComposePatch(a) {
  const before = readYaml(a.before).services || {};
  const after = readYaml(a.after).services || {};
  const r = new Report();
  const changed = [];
  for (const name of new Set([...Object.keys(before), ...Object.keys(after)])) {
    const paths = diffPaths(before[name], after[name]);
    if (paths.length === 0) continue;
    changed.push(`${name} (${paths.join(', ')})`);
    if (name !== a.service) r.fail(`service ${name}`, `changed too: ${paths.join(', ')}`);
    else r.expect(paths.includes('image'), `service ${name}`, `its image did not change (changed: ${paths.join(', ')})`);
  }
  r.expect(changed.length > 0, `service ${a.service}`, 'nothing changed: the tag variable did not reach it');
  emit(`compose: CONVEYOR_${a.service.toUpperCase()}_TAG changes the service ${a.service} and nothing else (changed: ${changed.join('; ') || 'none'})`, r);
}

function cmdCompose(a) {
  const r = new Report();
  compose.policyCheck(readYaml(a.config), r);
  emit('compose: PostgreSQL on 127.0.0.1 only, its password and every database URL from secret files, ' +
    'each service its own login, migrate grants them', r);
}

// A password written in a deployment file: the part after user: in a
// postgres URL, a PASSWORD-like variable (POSTGRES_PASSWORD=..., KEY: ...)
// set to a value, a YAML key `password:` with a value, or a conninfo
// password=... . References (${...}, $VAR, {{ ... }}, $(...), <...>, ****)
// are not values, nor is a *_FILE variable (it names a file).
const PLACEHOLDER = /^(\$|\{\{|<|\*+$|\?|-$)/;
function credentials(text) {
  const found = [];
  for (const m of text.matchAll(/postgres(?:ql)?:\/\/[^/\s:@'"]+:([^@\s'"]+)@/g)) {
    if (!PLACEHOLDER.test(m[1])) found.push(m[0]);
  }
  const patterns = [
    /(?:^|[\s"'{,])([A-Z][A-Z0-9_]*PASSWORD)["']?\s*[:=]\s*["']?([^\s"'#,}]+)/gm,
    /^\s*-?\s*(password)\s*:\s*["']?([^\s"'#]+)/gm,
    /(?:^|[\s"'])(password)=["']?([^\s"'#&]+)/gm,
  ];
  for (const re of patterns) {
    for (const m of text.matchAll(re)) {
      if (!PLACEHOLDER.test(m[2])) found.push(`${m[1]}=${m[2]}`);
    }
  }
  return found;
}

function cmdNoCredentials(a) {
  const r = new Report();
  const files = [];
  const walk = (p) => {
    const st = fs.statSync(p);
    if (st.isDirectory()) for (const e of fs.readdirSync(p).sort()) walk(path.join(p, e));
    else if (!/\.md$/.test(p)) files.push(p);
  };
  for (const p of a._) walk(path.resolve(a.root, p));
  for (const f of files) {
    for (const c of credentials(fs.readFileSync(f, 'utf8'))) {
      r.fail(path.relative(a.root, f), `a password is written in the file: ${c.replace(/(:|=)[^@=:]+(@?)$/, '$1****$2')}`);
    }
  }
  emit(`deploy: no password in any of ${files.length} deployment files (${a._.join(', ')})`, r);
}

async function loadNomad(dir, only) {
  const files = only.length ? only : fs.readdirSync(dir).filter((f) => f.endsWith('.nomad.hcl')).sort().map((f) => path.join(dir, f));
  const docs = new Map();
  for (const f of files) {
    const r = new Report();
    try {
      docs.set(f, await nomad.parseFile(f));
    } catch (e) {
      r.fail(f, `HCL parse error: ${String(e.message || e).split('\n')[0]}`);
    }
    emit(`nomad: ${path.basename(f)} parses as HCL`, r);
  }
  return docs;
}

async function cmdNomad(a) {
  const known = knownKeys(a.known);
  const only = list(a.only);
  const docs = await loadNomad(a.dir, only);
  const parsed = new Map();
  for (const [f, doc] of docs) {
    const r = new Report();
    const info = nomad.checkJobFile(f, doc, r, known);
    if (info) parsed.set(info.kind, { ...info, file: f });
    emit(`nomad: ${path.basename(f)}: image with var.image_tag and var.registry, user 10001, read-only root, resources, kill_timeout, ` +
      `secrets only from Nomad Variables${info && nomad.SERVICES.includes(info.kind) ? ', a /readyz check' : ''}`, r);
  }
  if (only.length) return;
  let r = new Report();
  const expected = [...nomad.SERVICES, 'migrate', 'worker'];
  for (const k of expected) r.expect(parsed.has(k), path.join(a.dir, `${k}.nomad.hcl`), 'missing');
  emit(`nomad: one job file per service (${nomad.SERVICES.join(', ')}) plus migrate and worker`, r);
  const worker = parsed.get('worker');
  if (worker) {
    r = new Report();
    nomad.checkWorkerContract(worker.file, worker.jb, r);
    emit('nomad: worker.nomad.hcl is the parameterized conveyor-worker of the pool contract (meta worker_name and pool, no restart, no reschedule)', r);
  }
  const pool = parsed.get('workerpool');
  if (pool && worker) {
    r = new Report();
    nomad.checkPoolContract(pool.file, pool.jb, worker.jobName, r);
    emit('nomad: workerpool.nomad.hcl sets the nomad backend (address, worker job, namespace) and reads its ACL token from a Nomad Variable', r);
  }
  const aclFile = path.join(a.dir, 'acl', 'conveyor-workerpool.policy.hcl');
  r = new Report();
  const namespaces = new Set([...parsed.values()].map((p) => (nomad.variables(p.doc).namespace || {}).default));
  r.expect(namespaces.size === 1, a.dir, `every job must default to the same namespace, found ${[...namespaces].join(', ')}`);
  try {
    nomad.checkAclPolicy(aclFile, await nomad.parseFile(aclFile), [...namespaces][0], r);
  } catch (e) {
    r.fail(aclFile, `HCL parse error: ${String(e.message || e).split('\n')[0]}`);
  }
  emit('nomad: acl/conveyor-workerpool.policy.hcl grants exactly dispatch-job, read-job, list-jobs, submit-job in the jobs\' namespace', r);
}

// `nomad job run -var image_tag=TAG <file>` re-submits that file's job only;
// resolved with and without the -var, only its image (and the tag it
// reports) may differ.
async function cmdNomadPatch(a) {
  const files = fs.readdirSync(a.dir).filter((f) => f.endsWith('.nomad.hcl')).sort();
  const r = new Report();
  const changed = [];
  for (const f of files) {
    const doc = await nomad.parseFile(path.join(a.dir, f));
    const patched = f === `${a.file}.nomad.hcl`;
    const before = nomad.resolve(doc);
    const after = nomad.resolve(doc, patched ? { image_tag: a.tag } : {});
    const paths = diffPaths(before, after);
    if (paths.length === 0) continue;
    changed.push(`${f}: ${paths.join(', ')}`);
    if (!patched) {
      r.fail(f, `changed too: ${paths.join(', ')}`);
      continue;
    }
    const t = nomad.tasks(after)[0];
    const allowed = paths.every((p) => /\.config\[0\]\.image$/.test(p) || /\.env\[0\]\.CONVEYOR_IMAGE_TAG$/.test(p));
    r.expect(allowed, f, `changed beyond the image: ${paths.join(', ')}`);
    r.expect(paths.some((p) => /\.config\[0\]\.image$/.test(p)), f, 'the image did not change');
    r.expect(t && t.tb.config[0].image.endsWith(`:${a.tag}`), f, `the image is ${t && t.tb.config[0].image}, not tagged ${a.tag}`);
  }
  r.expect(changed.length > 0, a.file, 'nothing changed');
  emit(`nomad: -var image_tag=${a.tag} on ${a.file}.nomad.hcl changes that job's image only (changed: ${changed.join('; ') || 'none'})`, r);
}

async function main() {
  const [cmd, ...rest] = process.argv.slice(2);
  const a = parseArgs(rest);
  const commands = {
    'k8s': cmdK8s, 'k8s-patch': cmdK8sPatch, 'compose-patch': cmdComposePatch, 'compose': cmdCompose,
    'no-credentials': cmdNoCredentials,
    'nomad': cmdNomad, 'nomad-patch': cmdNomadPatch, 'set-image': cmdSetImage,
  };
  if (!commands[cmd]) {
    console.error(`usage: main.js ${Object.keys(commands).join('|')} ...`);
    process.exit(2);
  }
  await commands[cmd](a);
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.log(`not ok - ${process.argv[2]}: ${e.message}`);
  process.exit(1);
});
