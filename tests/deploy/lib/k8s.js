'use strict';
// Checks of a rendered kustomize overlay (the output of `kubectl kustomize`):
//   schema  - every object against the Kubernetes JSON schemas of
//             kubernetes-models (@kubernetes-models/validate); a kind it does
//             not know fails;
//   strict  - every object as a TypeScript literal of its kubernetes-models
//             type: catches misspelt and unknown fields, which the JSON
//             schemas allow;
//   policy  - what Conveyor's deployment promises (DESIGN §6, issue 10):
//             restricted pod security, uid 10001, probes, resources, the
//             worker-pool contract, least-privilege RBAC;
//   refs    - every ConfigMap, Secret, PVC and ServiceAccount a pod names is
//             in the render (or declared external).
const fs = require('fs');
const path = require('path');
const { objectId } = require('./common');

const SERVICES = ['creation', 'configuration', 'execution', 'publication', 'monitor', 'workerpool'];
const SHARED_DATA = new Set(['publication', 'monitor']);
const UID = 10001;
const GRACE_S = 45;

// kubernetes-models module of an apiVersion/kind, e.g.
// "kubernetes-models/apps/v1/Deployment"; the core group has no folder.
function modelModule(o) {
  if (typeof o.apiVersion !== 'string' || typeof o.kind !== 'string') return null;
  const parts = o.apiVersion.split('/');
  const [group, version] = parts.length === 2 ? parts : ['', parts[0]];
  if (!/^[A-Za-z0-9.-]*$/.test(group) || !/^v[0-9a-z]+$/.test(version) || !/^[A-Z][A-Za-z0-9]*$/.test(o.kind)) {
    return null;
  }
  return `kubernetes-models/${group ? group + '/' : ''}${version}/${o.kind}`;
}

function resolveModel(o) {
  const mod = modelModule(o);
  if (!mod) return null;
  try {
    require.resolve(mod);
    return mod;
  } catch (e) {
    return null;
  }
}

// kustomize folds long base64 values of a Secret over several lines; the
// API server's decoder (Go's encoding/base64) skips those newlines, the
// schema's "byte" format does not. Checked as the API server reads them.
function forSchema(o) {
  if (o.kind !== 'Secret' || !o.data) return o;
  const data = Object.fromEntries(Object.entries(o.data).map(([k, v]) => [k, typeof v === 'string' ? v.replace(/[\r\n]/g, '') : v]));
  return { ...o, data };
}

function schemaCheck(objects, report) {
  for (const o of objects) {
    const id = objectId(o);
    const mod = resolveModel(o);
    if (!mod) {
      report.fail(id, `unknown kind: no Kubernetes schema for apiVersion ${o.apiVersion} kind ${o.kind}`);
      continue;
    }
    const Model = require(mod)[o.kind];
    try {
      new Model(forSchema(o)).validate();
    } catch (e) {
      const errors = e.errors || [{ instancePath: '', message: e.message }];
      for (const err of errors) {
        report.fail(id, `schema: ${err.instancePath || '/'} ${err.message}` +
          (err.params && err.params.allowedValues ? ` (${err.params.allowedValues.join(', ')})` : ''));
      }
    }
  }
}

// Writes one .ts file with every object as a typed literal and compiles it:
// TypeScript's excess-property check names unknown fields.
function strictCheck(objects, workDir, report) {
  const ts = require('typescript');
  fs.mkdirSync(workDir, { recursive: true });
  const file = path.join(workDir, 'objects.ts');
  const starts = [];
  let text = '';
  let line = 0;
  objects.forEach((o, i) => {
    const mod = resolveModel(o);
    if (!mod) return;  // schemaCheck reports it
    const chunk = `// ${objectId(o)}\nimport type { I${o.kind} as T${i} } from ${JSON.stringify(mod)};\n` +
      `export const o${i}: T${i} = ${JSON.stringify(o, null, 2)};\n`;
    starts.push({ line, id: objectId(o) });
    text += chunk;
    line += chunk.split('\n').length - 1;
  });
  fs.writeFileSync(file, text);
  const program = ts.createProgram({
    rootNames: [file],
    options: {
      strict: true, noEmit: true, skipLibCheck: true, types: [],
      module: ts.ModuleKind.CommonJS, moduleResolution: ts.ModuleResolutionKind.Node10,
      target: ts.ScriptTarget.ES2020,
    },
  });
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const message = ts.flattenDiagnosticMessageText(d.messageText, ' ');
    if (!d.file) {
      report.fail('typescript', message);
      continue;
    }
    const { line: l } = d.file.getLineAndCharacterOfPosition(d.start);
    let owner = starts[0];
    for (const s of starts) if (s.line <= l) owner = s;
    const lineText = d.file.text.split('\n')[l].trim();
    report.fail(owner ? owner.id : file, `strict: ${message} (at: ${lineText})`);
  }
}

// The pod spec of a workload, or null.
function podSpec(o) {
  switch (o.kind) {
    case 'Pod': return o.spec;
    case 'PodTemplate': return o.template && o.template.spec;
    case 'Deployment': case 'StatefulSet': case 'DaemonSet': case 'ReplicaSet': case 'Job':
      return o.spec && o.spec.template && o.spec.template.spec;
    case 'CronJob':
      return o.spec && o.spec.jobTemplate && o.spec.jobTemplate.spec.template.spec;
    default: return null;
  }
}

function allContainers(spec) {
  return [...(spec.initContainers || []), ...(spec.containers || [])];
}

function labels(o) {
  return (o.metadata && o.metadata.labels) || {};
}

function isConveyor(o) {
  return labels(o)['app.kubernetes.io/part-of'] === 'conveyor';
}

// "registry.example.com/conveyor/conveyor-creation:git-1" -> "conveyor-creation"
function imageBase(image) {
  const noDigest = String(image).split('@')[0];
  const last = noDigest.split('/').pop();
  return last.split(':')[0];
}

function envValue(container, name) {
  const e = (container.env || []).find((x) => x.name === name);
  return e ? (e.value !== undefined ? e.value : { valueFrom: e.valueFrom }) : undefined;
}

const ALLOWED_VOLUMES = ['configMap', 'csi', 'downwardAPI', 'emptyDir', 'ephemeral',
  'persistentVolumeClaim', 'projected', 'secret'];

// The "restricted" Pod Security Standard (what the namespaces enforce) plus
// requests and limits on every container.
function podSecurity(id, spec, report) {
  const psc = spec.securityContext || {};
  for (const f of ['hostNetwork', 'hostPID', 'hostIPC']) {
    report.expect(!spec[f], id, `${f} must not be set`);
  }
  for (const v of spec.volumes || []) {
    const type = Object.keys(v).find((k) => k !== 'name');
    report.expect(ALLOWED_VOLUMES.includes(type), id, `volume ${v.name}: type ${type} is not allowed by the restricted profile`);
  }
  for (const c of allContainers(spec)) {
    const where = `${id} container ${c.name}`;
    const sc = c.securityContext || {};
    report.expect(!sc.privileged, where, 'privileged');
    report.expect(sc.allowPrivilegeEscalation === false, where, 'securityContext.allowPrivilegeEscalation must be false');
    const caps = sc.capabilities || {};
    report.expect((caps.drop || []).includes('ALL'), where, 'securityContext.capabilities.drop must hold ALL');
    report.expect((caps.add || []).every((x) => x === 'NET_BIND_SERVICE'), where, `adds capabilities ${caps.add}`);
    report.expect((sc.runAsNonRoot !== undefined ? sc.runAsNonRoot : psc.runAsNonRoot) === true, where, 'runAsNonRoot must be true');
    const uid = sc.runAsUser !== undefined ? sc.runAsUser : psc.runAsUser;
    report.expect(uid !== 0, where, 'runs as uid 0');
    const seccomp = (sc.seccompProfile || psc.seccompProfile || {}).type;
    report.expect(seccomp === 'RuntimeDefault' || seccomp === 'Localhost', where, 'seccompProfile must be RuntimeDefault');
    for (const p of c.ports || []) report.expect(!p.hostPort, where, `hostPort ${p.hostPort}`);
    const r = c.resources || {};
    for (const kind of ['requests', 'limits']) {
      for (const res of ['cpu', 'memory']) {
        report.expect(r[kind] && r[kind][res] !== undefined, where, `resources.${kind}.${res} is not set`);
      }
    }
  }
}

// What every Conveyor pod has: uid/gid 10001, read-only root, /tmp from an
// emptyDir, no service-account token unless it is the worker pool.
function conveyorPod(id, spec, report, { token }) {
  const psc = spec.securityContext || {};
  for (const f of ['runAsUser', 'runAsGroup', 'fsGroup']) {
    report.expect(psc[f] === UID, id, `securityContext.${f} must be ${UID}, is ${psc[f]}`);
  }
  report.expect(spec.automountServiceAccountToken === token, id,
    `automountServiceAccountToken must be ${token}`);
  const volumes = Object.fromEntries((spec.volumes || []).map((v) => [v.name, v]));
  for (const c of spec.containers || []) {
    const where = `${id} container ${c.name}`;
    // A tag (the git hash in production), so a patch is a tag change.
    const tag = /:([^/:@]+)$/.exec(String(c.image).split('@')[0]);
    report.expect(tag && tag[1] !== 'latest', where, `image ${c.image} has no tag (or :latest): set it in the overlay's images:`);
    report.expect((c.securityContext || {}).readOnlyRootFilesystem === true, where, 'readOnlyRootFilesystem must be true');
    const tmp = (c.volumeMounts || []).find((m) => m.mountPath === '/tmp');
    report.expect(tmp && volumes[tmp.name] && volumes[tmp.name].emptyDir, where, '/tmp must be an emptyDir (the root is read-only)');
  }
}

function dataVolume(spec, container) {
  const m = (container.volumeMounts || []).find((x) => x.mountPath === '/var/lib/conveyor');
  if (!m) return null;
  return (spec.volumes || []).find((v) => v.name === m.name) || null;
}

// The database URL of a pod's container (issue 12): from the Secret
// conveyor-database's key `key`, as a mounted file (CONVEYOR_DATABASE_URL_FILE)
// or a secretKeyRef, never a value and never envFrom the whole Secret. With
// `onlyOwn`, every volume of that Secret in the pod projects that key alone,
// so a service cannot read another's login.
function databaseFromKey(id, spec, c, key, report, onlyOwn) {
  report.expect(!(c.envFrom || []).some((e) => e.secretRef), id,
    'envFrom a Secret: the pod would get every database login; mount its own key instead');
  const env = c.env || [];
  const direct = env.find((e) => e.name === 'CONVEYOR_DATABASE_URL');
  const file = env.find((e) => e.name === 'CONVEYOR_DATABASE_URL_FILE');
  const secretVolumes = (spec.volumes || []).filter((v) => v.secret && v.secret.secretName === 'conveyor-database');
  if (onlyOwn) {
    for (const v of secretVolumes) {
      const keys = (v.secret.items || []).map((i) => i.key);
      report.expect(keys.length === 1 && keys[0] === key, id,
        `volume ${v.name} must project only the key ${key} of the Secret conveyor-database (items), has ${keys.join(', ') || 'every key'}`);
    }
  }
  if (direct) {
    const ref = direct.valueFrom && direct.valueFrom.secretKeyRef;
    report.expect(!file, id, 'CONVEYOR_DATABASE_URL and CONVEYOR_DATABASE_URL_FILE are both set');
    report.expect(ref && ref.name === 'conveyor-database' && ref.key === key, id,
      `CONVEYOR_DATABASE_URL must come from the Secret conveyor-database key ${key}, not a value`);
    return;
  }
  if (!report.expect(file && typeof file.value === 'string', id,
    `its database URL (CONVEYOR_DATABASE_URL_FILE: the key ${key} of the Secret conveyor-database, mounted) is missing`)) return;
  const mount = (c.volumeMounts || []).find((m) => file.value.startsWith(m.mountPath.replace(/\/?$/, '/')));
  const vol = mount && secretVolumes.find((v) => v.name === mount.name);
  const rel = mount && file.value.slice(mount.mountPath.replace(/\/?$/, '/').length);
  report.expect(vol && (vol.secret.items || []).some((i) => i.key === key && i.path === rel), id,
    `CONVEYOR_DATABASE_URL_FILE=${file.value} must be the key ${key} of the Secret conveyor-database, mounted`);
}

// PostgreSQL reachable only inside the cluster: no NodePort/LoadBalancer
// Service in front of port 5432, no hostPort, no hostNetwork.
function postgresNotExposed(objects, report) {
  for (const o of objects) {
    const id = objectId(o);
    if (o.kind === 'Service') {
      const type = (o.spec && o.spec.type) || 'ClusterIP';
      const pg = (o.spec.ports || []).some((p) => p.port === 5432 || p.targetPort === 5432 || p.targetPort === 'postgres');
      if (pg) report.expect(type === 'ClusterIP' && !(o.spec.externalIPs || []).length, id, `PostgreSQL exposed outside the cluster (type ${type})`);
    }
    const spec = podSpec(o);
    if (!spec) continue;
    for (const c of allContainers(spec)) {
      for (const p of c.ports || []) report.expect(!p.hostPort, id, `container ${c.name} publishes hostPort ${p.hostPort}`);
    }
    report.expect(!spec.hostNetwork, id, 'hostNetwork: its ports would be on every interface of the node');
  }
}

function expectProbe(where, probe, pathWanted, report, name) {
  const get = probe && probe.httpGet;
  report.expect(get && get.path === pathWanted && (get.port === 8080 || get.port === 'http'), where,
    `${name} must be httpGet ${pathWanted} on port 8080`);
}

function policyCheck(objects, report, opts) {
  const byId = new Map(objects.map((o) => [`${o.kind}/${o.metadata && o.metadata.name}`, o]));
  const get = (kind, name) => byId.get(`${kind}/${name}`);

  for (const o of objects) {
    const spec = podSpec(o);
    if (spec) podSecurity(objectId(o), spec, report);
  }

  // The six services.
  const images = new Map();
  for (const svc of SERVICES) {
    const name = `conveyor-${svc}`;
    const d = get('Deployment', name);
    if (!report.expect(d, name, 'Deployment missing')) continue;
    const id = objectId(d);
    const spec = podSpec(d);
    report.expect(isConveyor(d), id, 'label app.kubernetes.io/part-of=conveyor missing');
    report.expect(labels(d)['conveyor.dev/after-migrate'] === 'true', id,
      'label conveyor.dev/after-migrate=true missing (the first apply phase would start it before migrations)');
    conveyorPod(id, spec, report, { token: svc === 'workerpool' });
    report.expect(spec.terminationGracePeriodSeconds === GRACE_S, id,
      `terminationGracePeriodSeconds must be ${GRACE_S} (drain of 30 s)`);
    if (!report.expect(spec.containers.length === 1, id, 'one container expected')) continue;
    const c = spec.containers[0];
    const base = imageBase(c.image);
    report.expect(base === name, id, `image ${c.image} is not ${name}`);
    if (images.has(c.image)) report.fail(id, `shares image ${c.image} with ${images.get(c.image)}`);
    images.set(c.image, id);
    expectProbe(id, c.readinessProbe, '/readyz', report, 'readinessProbe');
    expectProbe(id, c.livenessProbe, '/healthz', report, 'livenessProbe');
    report.expect(envValue(c, 'CONVEYOR_HTTP_HOST') === '0.0.0.0', id, 'CONVEYOR_HTTP_HOST must be 0.0.0.0 in a pod');
    report.expect(envValue(c, 'CONVEYOR_HTTP_PORT') === '8080', id, 'CONVEYOR_HTTP_PORT must be 8080');
    report.expect(envValue(c, 'CONVEYOR_SHUTDOWN_GRACE_MS') === '30000', id, 'CONVEYOR_SHUTDOWN_GRACE_MS must be 30000');
    const from = (c.envFrom || []).map((e) => (e.configMapRef ? `cm:${e.configMapRef.name}` : `secret:${e.secretRef && e.secretRef.name}`));
    report.expect(from.some((f) => f.startsWith('cm:conveyor-config')), id, 'envFrom ConfigMap conveyor-config missing');
    databaseFromKey(id, spec, c, `${svc}-database-url`, report, true);
    const data = dataVolume(spec, c);
    if (report.expect(data, id, 'nothing mounted at /var/lib/conveyor (CONVEYOR_DATA_DIR)')) {
      if (SHARED_DATA.has(svc)) {
        report.expect(data.persistentVolumeClaim && data.persistentVolumeClaim.claimName === 'conveyor-data', id,
          'the data dir must be the PVC conveyor-data (shared with the workers)');
      } else {
        report.expect(data.emptyDir, id, 'the data dir must be an emptyDir');
      }
    }
  }

  // The worker pool and its access.
  const pool = get('Deployment', 'conveyor-workerpool');
  if (pool) {
    const id = objectId(pool);
    const spec = podSpec(pool);
    const c = spec.containers[0];
    report.expect(spec.serviceAccountName === 'conveyor-workerpool', id, 'serviceAccountName must be conveyor-workerpool');
    report.expect(envValue(c, 'CONVEYOR_WORKERPOOL_BACKEND') === 'kubernetes', id, 'CONVEYOR_WORKERPOOL_BACKEND must be kubernetes');
    report.expect(envValue(c, 'CONVEYOR_WORKER_POOL') === 'default', id, 'CONVEYOR_WORKER_POOL must be default');
    const tpl = envValue(c, 'CONVEYOR_WORKERPOOL_KUBERNETES_POD_TEMPLATE');
    report.expect(tpl === 'conveyor-worker' && get('PodTemplate', tpl), id,
      `CONVEYOR_WORKERPOOL_KUBERNETES_POD_TEMPLATE=${tpl} must name the PodTemplate in the render`);
  }
  const sa = get('ServiceAccount', 'conveyor-workerpool');
  report.expect(sa, 'ServiceAccount/conveyor-workerpool', 'missing');
  const role = get('Role', 'conveyor-workerpool');
  if (report.expect(role, 'Role/conveyor-workerpool', 'missing')) {
    const want = [
      { apiGroups: [''], resources: ['pods'], verbs: ['create', 'delete', 'get', 'list', 'watch'] },
      { apiGroups: [''], resources: ['podtemplates'], verbs: ['get'], resourceNames: ['conveyor-worker'] },
    ];
    const norm = (r) => JSON.stringify({
      apiGroups: [...(r.apiGroups || [])].sort(), resources: [...(r.resources || [])].sort(),
      verbs: [...(r.verbs || [])].sort(), resourceNames: r.resourceNames ? [...r.resourceNames].sort() : undefined,
    });
    const got = (role.rules || []).map(norm).sort();
    const exp = want.map(norm).sort();
    report.expect(JSON.stringify(got) === JSON.stringify(exp), objectId(role),
      `rules must be exactly pods create/get/list/watch/delete and podtemplates get conveyor-worker; got ${got.join(' ')}`);
  }
  const rb = get('RoleBinding', 'conveyor-workerpool');
  if (report.expect(rb, 'RoleBinding/conveyor-workerpool', 'missing')) {
    report.expect(rb.roleRef.kind === 'Role' && rb.roleRef.name === 'conveyor-workerpool', objectId(rb), 'must bind the Role conveyor-workerpool');
    const subj = rb.subjects || [];
    report.expect(subj.length === 1 && subj[0].kind === 'ServiceAccount' && subj[0].name === 'conveyor-workerpool' &&
      subj[0].namespace === rb.metadata.namespace, objectId(rb), 'must bind only the ServiceAccount conveyor-workerpool of its namespace');
  }
  for (const o of objects) {
    report.expect(o.kind !== 'ClusterRole' && o.kind !== 'ClusterRoleBinding', objectId(o),
      'no cluster-wide RBAC: the pool needs its own namespace only');
  }

  // The worker PodTemplate (contract with the kubernetes backend).
  const pt = get('PodTemplate', 'conveyor-worker');
  if (report.expect(pt, 'PodTemplate/conveyor-worker', 'missing')) {
    const id = objectId(pt);
    const spec = podSpec(pt);
    conveyorPod(id, spec, report, { token: false });
    report.expect(spec.terminationGracePeriodSeconds === GRACE_S, id, `terminationGracePeriodSeconds must be ${GRACE_S}`);
    const cs = spec.containers || [];
    if (report.expect(cs.length === 1 && cs[0].name === 'worker', id, 'exactly one container, named worker')) {
      const c = cs[0];
      report.expect(imageBase(c.image) === 'conveyor-worker', id, `image ${c.image} is not conveyor-worker`);
      report.expect(envValue(c, 'CONVEYOR_HTTP_HOST') === '0.0.0.0' && envValue(c, 'CONVEYOR_HTTP_PORT') === '8080', id,
        'CONVEYOR_HTTP_HOST=0.0.0.0 and CONVEYOR_HTTP_PORT=8080 expected');
      for (const k of ['CONVEYOR_WORKER_NAME', 'CONVEYOR_INSTANCE_ID', 'CONVEYOR_WORKER_POOL']) {
        report.expect(envValue(c, k) === undefined, id, `${k} is set by the backend per pod, not in the template`);
      }
      const from = (c.envFrom || []).map((e) => (e.configMapRef ? 'cm' : 'secret'));
      report.expect(from.includes('cm'), id, 'envFrom the ConfigMap expected');
      databaseFromKey(id, spec, c, 'worker-database-url', report, true);
      const data = dataVolume(spec, c);
      report.expect(data && data.persistentVolumeClaim && data.persistentVolumeClaim.claimName === 'conveyor-data', id,
        'the PVC conveyor-data must be mounted at /var/lib/conveyor');
    }
  }

  // Migrations.
  const job = get('Job', 'conveyor-migrate');
  if (report.expect(job, 'Job/conveyor-migrate', 'missing')) {
    const id = objectId(job);
    const spec = podSpec(job);
    conveyorPod(id, spec, report, { token: false });
    report.expect(labels(job)['conveyor.dev/after-migrate'] === undefined, id, 'must be applied in the first phase');
    const c = spec.containers[0];
    report.expect(imageBase(c.image) === 'conveyor', id, `image ${c.image} is not the CLI image conveyor`);
    const cmd = [...(c.command || []), ...(c.args || [])].join(' ');
    report.expect(/conveyor db init && conveyor db migrate &&/.test(cmd), id, `must run db init then db migrate, runs: ${cmd}`);
    // As the owner, then one login per service into its role (issue 12).
    databaseFromKey(id, spec, c, 'owner-database-url', report, false);
    const projected = new Set((spec.volumes || []).filter((v) => v.secret && v.secret.secretName === 'conveyor-database')
      .flatMap((v) => (v.secret.items || []).map((i) => i.key)));
    report.expect(/conveyor db grant-login "conveyor_\$\{s\}_login" --role "conveyor_\$s"/.test(cmd), id,
      'must run conveyor db grant-login conveyor_<s>_login --role conveyor_<s> for each service s');
    for (const svc of [...SERVICES, 'worker']) {
      report.expect(new RegExp(`for s in [a-z ]*\\b${svc}\\b[a-z ]*; do`).test(cmd) && projected.has(`${svc}-password`), id,
        `no login for ${svc}: the loop must cover it, with the Secret's key ${svc}-password mounted`);
    }
  }
  postgresNotExposed(objects, report);
  // No credential from git: every Secret is made outside the repository
  // (overlays/dev/make-secrets, or the operator in production).
  for (const o of objects) {
    report.expect(o.kind !== 'Secret', objectId(o), 'a Secret in the render carries values from git: create it outside the repository');
  }

  // Services for the API and the dashboard.
  for (const name of ['conveyor-creation', 'conveyor-monitor']) {
    const s = get('Service', name);
    if (!report.expect(s, `Service/${name}`, 'missing')) continue;
    report.expect((s.spec.type || 'ClusterIP') === 'ClusterIP', objectId(s), 'must be ClusterIP');
  }
  const mon = get('Service', 'conveyor-monitor');
  if (mon) {
    const a = mon.metadata.annotations || {};
    report.expect(a['prometheus.io/scrape'] === 'true' && a['prometheus.io/port'] === '8080', objectId(mon),
      'prometheus.io/scrape and prometheus.io/port annotations expected');
  }
  for (const s of objects.filter((o) => o.kind === 'Service')) {
    const sel = s.spec.selector || {};
    const match = objects.some((o) => {
      const t = o.spec && o.spec.template && o.spec.template.metadata && o.spec.template.metadata.labels;
      return t && Object.entries(sel).every(([k, v]) => t[k] === v);
    });
    report.expect(match, objectId(s), `selector ${JSON.stringify(sel)} matches no pod template`);
  }

  // Overlay specific.
  const pvc = get('PersistentVolumeClaim', 'conveyor-data');
  if (report.expect(pvc, 'PersistentVolumeClaim/conveyor-data', 'missing') && opts.pvcAccess) {
    report.expect(JSON.stringify(pvc.spec.accessModes) === JSON.stringify([opts.pvcAccess]), objectId(pvc),
      `accessModes must be [${opts.pvcAccess}]`);
    if (opts.pvcAccess === 'ReadWriteMany') {
      report.expect(pvc.spec.storageClassName, objectId(pvc), 'an RWX storageClassName must be named');
    }
  }
  if (opts.noSecrets) {
    for (const o of objects) {
      report.expect(o.kind !== 'Secret', objectId(o), 'the production overlay must not carry a Secret (the operator provides it)');
    }
  }
}

// Names a pod refers to must exist in the render, unless declared external.
function refCheck(objects, report, externals) {
  const have = new Set(objects.map((o) => `${o.kind}/${o.metadata && o.metadata.name}`));
  const ok = (kind, name) => have.has(`${kind}/${name}`) || externals.includes(`${kind}/${name}`);
  for (const o of objects) {
    const spec = podSpec(o);
    if (!spec) continue;
    const id = objectId(o);
    const claimTemplates = new Set(((o.spec && o.spec.volumeClaimTemplates) || []).map((t) => t.metadata.name));
    if (spec.serviceAccountName) {
      report.expect(ok('ServiceAccount', spec.serviceAccountName), id, `ServiceAccount ${spec.serviceAccountName} not found`);
    }
    for (const v of spec.volumes || []) {
      if (v.configMap) report.expect(ok('ConfigMap', v.configMap.name), id, `ConfigMap ${v.configMap.name} not found`);
      if (v.secret) report.expect(ok('Secret', v.secret.secretName), id, `Secret ${v.secret.secretName} not found`);
      if (v.persistentVolumeClaim) {
        report.expect(ok('PersistentVolumeClaim', v.persistentVolumeClaim.claimName), id,
          `PersistentVolumeClaim ${v.persistentVolumeClaim.claimName} not found`);
      }
    }
    for (const c of allContainers(spec)) {
      const names = new Set((spec.volumes || []).map((v) => v.name));
      for (const m of c.volumeMounts || []) {
        report.expect(names.has(m.name) || claimTemplates.has(m.name), id, `container ${c.name} mounts unknown volume ${m.name}`);
      }
      for (const e of c.envFrom || []) {
        if (e.configMapRef) report.expect(ok('ConfigMap', e.configMapRef.name), id, `ConfigMap ${e.configMapRef.name} not found`);
        if (e.secretRef) report.expect(ok('Secret', e.secretRef.name), id, `Secret ${e.secretRef.name} not found`);
      }
      for (const e of c.env || []) {
        const vf = e.valueFrom || {};
        if (vf.secretKeyRef) report.expect(ok('Secret', vf.secretKeyRef.name), id, `Secret ${vf.secretKeyRef.name} not found`);
        if (vf.configMapKeyRef) report.expect(ok('ConfigMap', vf.configMapKeyRef.name), id, `ConfigMap ${vf.configMapKeyRef.name} not found`);
      }
    }
  }
}

// CONVEYOR_* names in env lists and ConfigMap/Secret keys must be keys the
// executables know, or the services would only warn about them.
function keyCheck(objects, report, known) {
  const check = (id, name) => {
    if (name.startsWith('CONVEYOR_')) report.expect(known.has(name), id, `unknown configuration key ${name}`);
  };
  for (const o of objects) {
    const id = objectId(o);
    if (o.kind === 'ConfigMap' || o.kind === 'Secret') {
      for (const k of Object.keys({ ...(o.data || {}), ...(o.stringData || {}) })) check(id, k);
    }
    const spec = podSpec(o);
    if (!spec) continue;
    for (const c of allContainers(spec)) for (const e of c.env || []) check(id, e.name);
  }
}

module.exports = { schemaCheck, strictCheck, policyCheck, refCheck, keyCheck, podSpec, imageBase };
