#!/bin/sh
# Runs a command on the project's pinned Node: .tools/node/bin (the version in .node-version, installed by
# scripts/setup.sh) goes first on PATH, so `node` and every `#!/usr/bin/env node` tool (vitest, tsc, eslint, tsx)
# is that Node, whichever Node runs npm. The npm scripts go through here: `sh scripts/with-node.sh vitest run`.
# Without .tools/node, a Node on PATH that meets `engines` runs the command (the Docker image's build stage); an
# older one gets scripts/setup.sh first, which installs the pinned Node.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
pinned="$root/.tools/node/bin/node"
if [ "$("$pinned" --version 2>/dev/null)" != "v$(tr -d '[:space:]' <"$root/.node-version")" ]; then
  if [ -e "$pinned" ] || ! node -e "process.exit(+process.versions.node.split('.')[0] >= +/\d+/.exec(require('$root/package.json').engines.node)[0] ? 0 : 1)" 2>/dev/null; then
    echo "with-node: the pinned Node ($(cat "$root/.node-version")) is not in .tools/node: running scripts/setup.sh" >&2
    bash "$root/scripts/setup.sh" >&2
  fi
fi
# node_modules/.bin too, as npm puts it there: `sh scripts/with-node.sh vitest run FILE` works outside npm.
PATH="$root/.tools/node/bin:$root/node_modules/.bin:$PATH"
export PATH
exec "$@"
