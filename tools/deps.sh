#!/usr/bin/env bash
# Installs the Debian packages Conveyor needs to build, test and run locally.
# Only what is missing is installed; `apt-get update` runs only then.
# Works as root (CI) or through sudo.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config g++
  libpqxx-dev libpq-dev librdkafka-dev libcpp-httplib-dev nlohmann-json3-dev libvalijson-dev libcli11-dev
  libspdlog-dev libfmt-dev libgtest-dev libgmock-dev libssl-dev
  postgresql-15 postgresql-client-15 kcat curl procps
  zlib1g-dev libbrotli-dev  # the fuzz test builds compression bombs (tests/fuzz)
  openssl  # the workerpool cluster test makes a TLS certificate for its fake API server
)

# The deploy checks (tests/deploy/check.sh, ctest label `deploy`): these are
# installed only when the command is missing, because the machine image may
# bring them from other packages (nodejs with its own npm; kubectl from
# another repository), and asking apt for Debian's package then would
# conflict with them. Debian 12's kubectl (kubernetes-client 1.20) embeds a
# kustomize too old for the overlays; check.sh says so if it is the one found.
commands=(
  kubectl:kubernetes-client node:nodejs npm:npm docker-compose:docker-compose
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$p")
  fi
done
for c in "${commands[@]}"; do
  command -v "${c%%:*}" >/dev/null 2>&1 || missing+=("${c#*:}")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "deps: all ${#packages[@]} packages and ${#commands[@]} commands installed"
  exit 0
fi

echo "deps: installing ${missing[*]}"
if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "deps: missing packages (${missing[*]}) and not root, no sudo: install them as root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "deps: done"
