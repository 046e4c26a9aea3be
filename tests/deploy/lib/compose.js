'use strict';
// Checks of compose.yaml as `docker-compose config` renders it (issue 12):
//   - PostgreSQL is published on 127.0.0.1 only (or not at all);
//   - every Conveyor service reads its database URL from its own secret file
//     (CONVEYOR_DATABASE_URL_FILE=/run/secrets/<service>-database-url, that
//     secret mounted, no CONVEYOR_DATABASE_URL value), the worker pool's
//     workers theirs (CONVEYOR_WORKER_DATABASE_URL_FILE);
//   - migrate runs as the owner and grants each service's login;
//   - every secret is a file (never an inline value), PostgreSQL's password too.
const SERVICES = ['creation', 'configuration', 'execution', 'publication', 'monitor', 'workerpool'];
const LOGINS = [...SERVICES, 'worker'];

// Host addresses of a service's published ports, in either syntax.
function publishedHosts(svc) {
  return (svc.ports || []).map((p) => {
    if (typeof p === 'object') return p.host_ip || (p.published ? '0.0.0.0' : null);
    const parts = String(p).split(':');
    return parts.length >= 3 ? parts[0] : '0.0.0.0';
  }).filter((h) => h !== null);
}

function secretNames(svc) {
  return (svc.secrets || []).map((s) => (typeof s === 'string' ? s : s.source));
}

function policyCheck(config, report) {
  const services = config.services || {};
  const secrets = config.secrets || {};
  const pg = services.postgres;
  if (report.expect(pg, 'postgres', 'service missing')) {
    for (const host of publishedHosts(pg)) {
      report.expect(host === '127.0.0.1', 'postgres', `published on ${host}: PostgreSQL must be on 127.0.0.1 only`);
    }
    const env = pg.environment || {};
    report.expect(env.POSTGRES_PASSWORD === undefined, 'postgres', 'POSTGRES_PASSWORD is a value: use POSTGRES_PASSWORD_FILE and a secret');
    report.expect(env.POSTGRES_PASSWORD_FILE === '/run/secrets/postgres-password' && secretNames(pg).includes('postgres-password'),
      'postgres', 'POSTGRES_PASSWORD_FILE must be the mounted secret postgres-password');
  }
  for (const [name, svc] of Object.entries(services)) {
    const env = svc.environment || {};
    report.expect(env.CONVEYOR_DATABASE_URL === undefined, name, 'CONVEYOR_DATABASE_URL is a value: use CONVEYOR_DATABASE_URL_FILE and a secret');
    report.expect(env.CONVEYOR_WORKER_DATABASE_URL === undefined, name, 'CONVEYOR_WORKER_DATABASE_URL is a value: use its _FILE and a secret');
  }
  for (const s of SERVICES) {
    const svc = services[s];
    if (!report.expect(svc, s, 'service missing')) continue;
    const env = svc.environment || {};
    const own = `${s}-database-url`;
    report.expect(env.CONVEYOR_DATABASE_URL_FILE === `/run/secrets/${own}` && secretNames(svc).includes(own), s,
      `its database URL must be its own secret: CONVEYOR_DATABASE_URL_FILE=/run/secrets/${own}, secret ${own} mounted`);
    const others = secretNames(svc).filter((n) => n !== own && !(s === 'workerpool' && n === 'worker-database-url'));
    report.expect(others.length === 0, s, `mounts secrets of others: ${others.join(', ')}`);
  }
  const pool = services.workerpool;
  if (pool) {
    report.expect((pool.environment || {}).CONVEYOR_WORKER_DATABASE_URL_FILE === '/run/secrets/worker-database-url' &&
      secretNames(pool).includes('worker-database-url'), 'workerpool',
    'its workers must log in as the worker role: CONVEYOR_WORKER_DATABASE_URL_FILE=/run/secrets/worker-database-url');
  }
  const migrate = services.migrate;
  if (report.expect(migrate, 'migrate', 'service missing')) {
    const cmd = [].concat(migrate.entrypoint || [], migrate.command || []).join(' ');
    report.expect((migrate.environment || {}).CONVEYOR_DATABASE_URL_FILE === '/run/secrets/owner-database-url', 'migrate',
      'must run as the owner: CONVEYOR_DATABASE_URL_FILE=/run/secrets/owner-database-url');
    report.expect(/conveyor db migrate/.test(cmd) && /conveyor db grant-login conveyor_\$+\{s\}_login --role conveyor_\$+s/.test(cmd),
      'migrate', 'must run conveyor db migrate, then conveyor db grant-login conveyor_<s>_login --role conveyor_<s> for each service');
    for (const s of LOGINS) {
      report.expect(new RegExp(`for s in [a-z ]*\\b${s}\\b[a-z ]*; do`).test(cmd) && secretNames(migrate).includes(`${s}-password`),
        'migrate', `no login for ${s}: the loop must cover it, with the secret ${s}-password mounted`);
    }
  }
  for (const [name, s] of Object.entries(secrets)) {
    report.expect(s && typeof s.file === 'string' && !('environment' in s) && !('content' in s), `secret ${name}`,
      'must be a file (deploy/container/make-secrets), not a value');
  }
}

module.exports = { policyCheck, SERVICES };
