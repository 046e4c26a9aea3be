'use strict';
// Shared helpers of the deploy checks: reading YAML streams, reporting, and a
// structural diff. Every check reports through a Report so that check.sh can
// print one line per check and count them.
const fs = require('fs');
const YAML = require('yaml');

// Problems found by one check; `fail()` records, `ok()` tells whether none.
class Report {
  constructor() {
    this.problems = [];
  }
  fail(where, message) {
    this.problems.push(`${where}: ${message}`);
  }
  expect(cond, where, message) {
    if (!cond) this.fail(where, message);
    return cond;
  }
  ok() {
    return this.problems.length === 0;
  }
}

// All documents of a YAML stream (kubectl kustomize output), as plain objects.
// A YAML syntax error is fatal: it names the file.
function readYamlStream(file) {
  const text = fs.readFileSync(file, 'utf8');
  const docs = YAML.parseAllDocuments(text);
  const out = [];
  for (const doc of docs) {
    if (doc.errors.length) {
      throw new Error(`${file}: YAML error: ${doc.errors[0].message}`);
    }
    const value = doc.toJS();
    if (value !== null && value !== undefined) out.push(value);
  }
  return out;
}

function readYaml(file) {
  const doc = YAML.parseDocument(fs.readFileSync(file, 'utf8'));
  if (doc.errors.length) throw new Error(`${file}: YAML error: ${doc.errors[0].message}`);
  return doc.toJS();
}

// "Deployment/conveyor-creation" (with the namespace when there is one).
function objectId(o) {
  const ns = o.metadata && o.metadata.namespace ? `${o.metadata.namespace}/` : '';
  return `${o.kind}/${ns}${o.metadata && o.metadata.name}`;
}

// Paths (a.b[0].c) where two JSON-like values differ.
function diffPaths(a, b, path = '', out = []) {
  if (a === b) return out;
  const ta = Array.isArray(a) ? 'array' : typeof a;
  const tb = Array.isArray(b) ? 'array' : typeof b;
  if (ta !== tb || ta !== 'object' && ta !== 'array' || a === null || b === null) {
    out.push(path || '(root)');
    return out;
  }
  if (ta === 'array') {
    const n = Math.max(a.length, b.length);
    for (let i = 0; i < n; i++) diffPaths(a[i], b[i], `${path}[${i}]`, out);
    return out;
  }
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const k of [...keys].sort()) diffPaths(a[k], b[k], path ? `${path}.${k}` : k, out);
  return out;
}

module.exports = { Report, readYamlStream, readYaml, objectId, diffPaths };
