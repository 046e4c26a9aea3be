#!/usr/bin/env bash
# Offline validation of the deployments (issue 10): deploy/kubernetes,
# deploy/nomad and compose.yaml. No cluster, no Nomad agent, no container
# engine: what runs is kubectl kustomize, docker-compose config and the npm
# validators pinned in tests/deploy/package-lock.json.
#
#   tests/deploy/check.sh [WORK_DIR]     (ctest: tools/test -L deploy)
#
# WORK_DIR (default build/deploy-check) holds the npm packages (npm ci, only
# when the lockfile changed), the renders and the negative test inputs.
# Prints one "ok - ..." / "not ok - ..." line per check, then
# "deploy: N passed, M failed"; exits 1 when one failed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:-${CONVEYOR_DEPLOY_CHECK_DIR:-$root/build/deploy-check}}
mkdir -p "$work"
work=$(cd "$work" && pwd)
tool=$here/lib/main.js
k8s_dir=$root/deploy/kubernetes
nomad_dir=$root/deploy/nomad
overlays=(dev production)

passed=0
failed=0
pass() { echo "ok - $*"; passed=$((passed + 1)); }
fail() { echo "not ok - $1"; shift; for l in "$@"; do echo "    $l"; done; failed=$((failed + 1)); }

# Runs a node check command; its "ok"/"not ok" lines count.
checks() {
  local out rc=0
  out=$(node "$tool" "$@" 2>&1) || rc=$?
  echo "$out"
  passed=$((passed + $(grep -c '^ok - ' <<<"$out" || true)))
  failed=$((failed + $(grep -c '^not ok - ' <<<"$out" || true)))
  if [[ $rc -ne 0 ]] && ! grep -q '^not ok - ' <<<"$out"; then
    fail "node $1 exited $rc without a result"
  fi
}

# A negative self-test: the command must fail, and say what is expected.
expect_caught() {
  local what=$1 needle=$2 out rc=0
  shift 2
  out=$("$@" 2>&1) || rc=$?
  if [[ $rc -ne 0 ]] && grep -qF -- "$needle" <<<"$out"; then
    pass "negative: $what is caught ($(grep -F -m1 -- "$needle" <<<"$out" | sed 's/^ *//' | cut -c1-150))"
  else
    fail "negative: $what was not caught (exit $rc; expected a message with '$needle')" "$(head -5 <<<"$out")"
  fi
}

# sed that must change its file (else the negative test would prove nothing).
mutate() {
  local file=$1
  shift
  cp "$file" "$file.orig"
  sed -i "$@" "$file" && ! cmp -s "$file" "$file.orig"
}

# --- tools ------------------------------------------------------------------
have_tools() { command -v kubectl && command -v node && command -v npm && command -v docker-compose; } >/dev/null 2>&1
if ! have_tools; then
  echo "deploy: kubectl, node, npm or docker-compose missing: tools/deps.sh"
  "$root/tools/deps.sh"
fi
if ! have_tools; then
  fail "tools: kubectl, node, npm and docker-compose are needed (tools/deps.sh did not provide them all)"
  echo "deploy: $passed passed, $failed failed"
  exit 1
fi
kustomize_version=$(kubectl version --client -o json 2>/dev/null | node -e \
  'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{console.log(JSON.parse(s).kustomizeVersion||"")}catch(e){console.log("")}})')
kubectl_version=$(kubectl version --client -o json 2>/dev/null | node -e \
  'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{console.log(JSON.parse(s).clientVersion.gitVersion)}catch(e){console.log("?")}})')
if [[ ! $kustomize_version =~ ^v([0-9]+) ]] || ((BASH_REMATCH[1] < 5)); then
  fail "tools: kubectl $kubectl_version embeds kustomize '${kustomize_version:-none}'; the overlays need kustomize 5 or later (kubectl 1.27 or later; Debian 12's kubernetes-client is 1.20)"
  echo "deploy: $passed passed, $failed failed"
  exit 1
fi
echo "deploy: kubectl $kubectl_version (kustomize $kustomize_version), node $(node --version), $(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose /')"

# Pinned validators: npm ci again only when the lockfile (or node) changed.
npm_dir=$work/npm
if npm_out=$("$root/tools/npm-ci-pinned" "$here" "$npm_dir" 2>&1); then
  [[ -z $npm_out ]] || echo "deploy: $npm_out"
else
  fail "tools: npm ci of tests/deploy/package-lock.json failed (is the npm registry reachable?)" "$(tail -5 <<<"$npm_out")"
  echo "deploy: $passed passed, $failed failed"
  exit 1
fi
export NODE_PATH=$npm_dir/node_modules

# Configuration keys the executables know: every "CONVEYOR_..." literal of
# the sources.
known=$work/known-keys.txt
# A secret key may come as <KEY>_FILE (libs/core config): the database URLs do.
grep -rhoE '"CONVEYOR_[A-Z0-9_]+"' "$root/libs" "$root/services" "$root/tools" | tr -d '"' |
  sed '/DATABASE_URL$/p; s/DATABASE_URL$/DATABASE_URL_FILE/' | sort -u >"$known"

# --- Kubernetes -------------------------------------------------------------
render=$work/render
rm -rf "$render" "$work/ts"
mkdir -p "$render"
for o in base "${overlays[@]}"; do
  dir=$k8s_dir/overlays/$o
  [[ $o == base ]] && dir=$k8s_dir/base
  if err=$(kubectl kustomize "$dir" 2>&1 >"$render/$o.yaml"); then
    pass "kustomize: ${dir#"$root"/} builds ($(grep -c '^kind:' "$render/$o.yaml") objects)"
  else
    fail "kustomize: ${dir#"$root"/} does not build" "$err"
  fi
done
[[ -s $render/dev.yaml ]] &&
  checks k8s --name dev --render "$render/dev.yaml" --known "$known" --work "$npm_dir/ts" --pvc-access ReadWriteOnce \
    --external Secret/conveyor-database
[[ -s $render/production.yaml ]] &&
  checks k8s --name production --render "$render/production.yaml" --known "$known" --work "$npm_dir/ts" \
    --pvc-access ReadWriteMany --no-secrets --external Secret/conveyor-database

# Patch one image by tag, in a copy of deploy/kubernetes, as an operator
# would with `kustomize edit set image`; without a kustomize binary (kubectl
# has no `edit`), main.js set-image makes the same change to the images list.
set_image() {
  local overlay_dir=$1 spec=$2
  if command -v kustomize >/dev/null 2>&1; then
    (cd "$overlay_dir" && kustomize edit set image "$spec")
  else
    node "$tool" set-image --kustomization "$overlay_dir/kustomization.yaml" --image "$spec"
  fi
}
command -v kustomize >/dev/null 2>&1 || echo "deploy: no kustomize binary: images are set by main.js set-image (the kustomization's images: list)"
for o in "${overlays[@]}"; do
  [[ -s $render/$o.yaml ]] || continue
  registry=$(node -e 'const Y=require("yaml");const k=Y.parse(require("fs").readFileSync(process.argv[1],"utf8"));
    console.log(k.images.find(i=>i.name==="conveyor-creation").newName.replace(/\/conveyor-creation$/,""))' \
    "$k8s_dir/overlays/$o/kustomization.yaml")
  for target in "conveyor-creation Deployment/conveyor-creation spec.template.spec.containers[0].image" \
                "conveyor-worker PodTemplate/conveyor-worker template.spec.containers[0].image"; do
    read -r image object field <<<"$target"
    copy=$work/kpatch/$o-$image
    rm -rf "$copy"
    mkdir -p "$copy"
    cp -r "$k8s_dir/." "$copy/"
    set_image "$copy/overlays/$o" "$image=$registry/$image:git-patched"
    if kubectl kustomize "$copy/overlays/$o" >"$copy/after.yaml" 2>"$copy/err"; then
      checks k8s-patch --name "kustomize $o, $image" --before "$render/$o.yaml" --after "$copy/after.yaml" \
        --object "$object" --path "$field"
    else
      fail "kustomize $o: the copy with $image patched does not build" "$(cat "$copy/err")"
    fi
  done
done

# --- compose ----------------------------------------------------------------
# `docker-compose config` interpolates and prints the effective file; it
# needs no engine. The environment is emptied of the tag variables first.
compose_config() {
  env -i PATH="$PATH" HOME="${HOME:-/root}" "$@" docker-compose -f "$root/compose.yaml" --project-name conveyor config
}
mkdir -p "$work/compose"
if compose_config >"$work/compose/before.yaml" 2>"$work/compose/err" &&
   compose_config CONVEYOR_CREATION_TAG=git-patched >"$work/compose/after.yaml" 2>>"$work/compose/err"; then
  pass "compose: compose.yaml is valid for docker-compose config ($(docker-compose version --short 2>/dev/null))"
  checks compose-patch --before "$work/compose/before.yaml" --after "$work/compose/after.yaml" --service creation
  checks compose --config "$work/compose/before.yaml"
else
  fail "compose: docker-compose config fails on compose.yaml" "$(cat "$work/compose/err")"
fi

# --- Nomad ------------------------------------------------------------------
checks nomad --dir "$nomad_dir" --known "$known"

# --- credentials (issue 12): no password in any deployment file --------------
checks no-credentials --root "$root" deploy compose.yaml compose.local.yaml
checks nomad-patch --dir "$nomad_dir" --file creation --tag git-patched

# --- negative self-tests: the checks catch what they claim to ---------------
neg=$work/negative
rm -rf "$neg"
mkdir -p "$neg"
cat >"$neg/unknown-kind.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deploymnet
metadata:
  name: typo
EOF
cat >"$neg/wrong-type.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: wrong-type
spec:
  replicas: two
  selector:
    matchLabels: {app: x}
  template:
    metadata:
      labels: {app: x}
    spec:
      containers:
        - name: x
          image: x
EOF
k8s_neg() { node "$tool" k8s --name "neg-$1" --render "$2" --known "$known" --work "$npm_dir/ts" --checks "$3"; }
expect_caught "an unknown kind (Deploymnet)" "unknown kind" k8s_neg unknown-kind "$neg/unknown-kind.yaml" schema
expect_caught "a wrongly typed field (replicas: two)" "must be integer" k8s_neg wrong-type "$neg/wrong-type.yaml" schema

# A copy of the dev render, broken by one sed expression, must fail CHECK
# with a message holding NEEDLE.
render_neg() { # name check sed-expression needle description
  local file=$neg/$1.yaml
  cp "$render/dev.yaml" "$file"
  if mutate "$file" "$3"; then
    expect_caught "$5" "$4" k8s_neg "$1" "$file" "$2"
  else
    fail "negative: $5: the mutation did not apply"
  fi
}
if [[ -s $render/dev.yaml ]]; then
  render_neg misspelt strict '0,/readinessProbe:/s//readinesProbe:/' "readinesProbe" "a misspelt field (readinesProbe)"
  render_neg probe policy 's#path: /readyz#path: /ready#' "readinessProbe must be httpGet /readyz" "a readiness probe off /readyz"
  render_neg untagged policy 's#image: localhost/conveyor-execution:dev#image: localhost/conveyor-execution#' "has no tag" \
    "a Conveyor image without a tag"
  render_neg root policy '0,/runAsUser: 10001/s//runAsUser: 0/' "runs as uid 0" "a Conveyor pod running as root"
  render_neg rbac policy 's/^  - podtemplates$/  - podtemplates\n  - secrets/' "rules must be exactly" "a Role that also reads secrets"
  render_neg refs refs 's/claimName: conveyor-data$/claimName: conveyor-dat/' "PersistentVolumeClaim conveyor-dat not found" \
    "a claim of a PVC that does not exist"
  render_neg key keys 's/CONVEYOR_KAFKA_BROKERS:/CONVEYOR_KAFKA_BROKER:/' "unknown configuration key CONVEYOR_KAFKA_BROKER" \
    "a misspelt configuration key"
  render_neg other-login policy '0,/key: creation-database-url/s//key: monitor-database-url/' \
    "must project only the key creation-database-url" "a service mounting another service's database login"
  render_neg whole-secret policy '0,/- configMapRef:/s//- secretRef:/' \
    "envFrom a Secret" "a service given the whole database Secret"
  render_neg pg-nodeport policy '/^  name: postgres$/,/^---$/s/^  type: ClusterIP$/  type: NodePort/' "exposed outside the cluster" \
    "a NodePort Service in front of PostgreSQL"
  cp "$render/dev.yaml" "$neg/two-images.yaml"
  if mutate "$neg/two-images.yaml" 's#\(image: .*/conveyor-\(creation\|configuration\)\):dev#\1:git-patched#'; then
    expect_caught "a kustomize patch that changes two services" "changed too" \
      node "$tool" k8s-patch --name neg --before "$render/dev.yaml" --after "$neg/two-images.yaml" \
      --object Deployment/conveyor-creation --path 'spec.template.spec.containers[0].image'
  else
    fail "negative: a kustomize patch that changes two services: the mutation did not apply"
  fi
fi
if [[ -s $work/compose/before.yaml ]]; then
  cp "$work/compose/before.yaml" "$neg/compose-after.yaml"
  if mutate "$neg/compose-after.yaml" 's#\(conveyor-\(creation\|execution\)\):dev#\1:git-patched#'; then
    expect_caught "a compose patch that changes two services" "changed too" \
      node "$tool" compose-patch --before "$work/compose/before.yaml" --after "$neg/compose-after.yaml" --service creation
  else
    fail "negative: a compose patch that changes two services: the mutation did not apply"
  fi
  compose_neg() { # name sed-expression needle description
    cp "$work/compose/before.yaml" "$neg/compose-$1.yaml"
    if mutate "$neg/compose-$1.yaml" "$2"; then
      expect_caught "$4" "$3" node "$tool" compose --config "$neg/compose-$1.yaml"
    else
      fail "negative: $4: the mutation did not apply"
    fi
  }
  compose_neg pg-public 's#127.0.0.1:5432:5432#5432:5432#; s#host_ip: 127.0.0.1#host_ip: 0.0.0.0#' \
    "PostgreSQL must be on 127.0.0.1 only" "PostgreSQL published on every interface"
  compose_neg shared-login 's#/run/secrets/creation-database-url#/run/secrets/owner-database-url#' \
    "its database URL must be its own secret" "a compose service logging in as the owner"
fi
mkdir -p "$neg/credentials/deploy"
cp "$root/compose.yaml" "$neg/credentials/compose.yaml"
if mutate "$neg/credentials/compose.yaml" 's#POSTGRES_PASSWORD_FILE: /run/secrets/postgres-password#POSTGRES_PASSWORD: hunter2#'; then
  expect_caught "a password written in compose.yaml" "a password is written in the file" \
    node "$tool" no-credentials --root "$neg/credentials" deploy compose.yaml
else
  fail "negative: a password written in compose.yaml: the mutation did not apply"
fi
# creation.nomad.hcl broken by one sed expression must fail with NEEDLE.
nomad_neg() { # name sed-expression needle description
  local dir=$neg/nomad-$1
  mkdir -p "$dir"
  cp "$nomad_dir/creation.nomad.hcl" "$dir/creation.nomad.hcl"
  if mutate "$dir/creation.nomad.hcl" "$2"; then
    expect_caught "$4" "$3" node "$tool" nomad --dir "$dir" --known "$known" --only "$dir/creation.nomad.hcl"
  else
    fail "negative: $4: the mutation did not apply"
  fi
}
nomad_neg untagged 's#:\${var.image_tag}"#:git-1a2b3c"#' "does not interpolate var.image_tag" "a Nomad image with a fixed tag"
nomad_neg no-check 's#path     = "/readyz"#path     = "/status"#' "an http check on /readyz is required" "a Nomad service without a /readyz check"
nomad_neg no-kill-timeout '/kill_timeout = "45s"/d' "kill_timeout must be at least" "a Nomad task without kill_timeout"
nomad_neg no-resources '/resources {/,/^      }/d' "resources with cpu and memory are required" "a Nomad task without resources"
nomad_neg secret 's#CONVEYOR_HTTP_PORT         = "8080"#CONVEYOR_DATABASE_URL = "postgresql://conveyor:hunter2@db:5432/conveyor"#' \
  "is a secret" "a database URL written in a Nomad file"
nomad_neg shared-login 's#nomadVar "nomad/jobs/conveyor-creation" }}{{ .database_url }}#nomadVar "nomad/jobs" }}{{ .database_url }}#' \
  "the job's own Variable" "a Nomad service reading the shared database login"
nomad_neg syntax 's#^job "conveyor-creation" {#job "conveyor-creation" {{#' "HCL parse error" "a Nomad file that is not HCL"

echo "deploy: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
