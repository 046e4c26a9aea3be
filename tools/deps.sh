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
  python3  # tests/deploy/observability.sh reads the Grafana dashboard's queries
  chromium  # the console's browser test (tests/browser), driven by puppeteer-core from npm
  clang-format  # tools/format and the ctest style_format (.clang-format; Debian 12: version 14)
)

# The deploy checks (tests/deploy/check.sh, ctest label `deploy`): these are
# installed only when the command is missing, because the machine image may
# bring them from other packages (nodejs with its own npm; kubectl from
# another repository), and asking apt for Debian's package then would
# conflict with them. Debian 12's kubectl (kubernetes-client 1.20) embeds a
# kustomize too old for the overlays; check.sh says so if it is the one found.
commands=(
  kubectl:kubernetes-client node:nodejs npm:npm docker-compose:docker-compose
  promtool:prometheus  # promtool checks /metrics and deploy/observability (see install_quietly)
)
# Packages whose install would start (and enable) a server nobody asked
# for: Debian's prometheus runs one. They are installed in a second step
# with every service start refused (policy-rc.d exit 101) and disabled after.
quiet_packages=(prometheus)

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
install_quietly() {
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
    "${as_root[@]}" chmod 755 "$policy"
    made_policy=1
  fi
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" ||
    { [[ $made_policy -eq 0 ]] || "${as_root[@]}" rm -f "$policy"; return 1; }
  [[ $made_policy -eq 0 ]] || "${as_root[@]}" rm -f "$policy"
  if [[ -d /run/systemd/system ]]; then
    "${as_root[@]}" systemctl disable --now "$@" >/dev/null 2>&1 || true
  fi
}
plain=() quiet=()
for p in "${missing[@]}"; do
  if [[ " ${quiet_packages[*]} " == *" $p "* ]]; then quiet+=("$p"); else plain+=("$p"); fi
done
if [[ ${#plain[@]} -gt 0 ]]; then
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${plain[@]}"
fi
if [[ ${#quiet[@]} -gt 0 ]]; then install_quietly "${quiet[@]}"; fi
echo "deps: done"
