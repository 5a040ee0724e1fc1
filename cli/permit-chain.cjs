#!/usr/bin/env node
// The package's `permit-chain` bin (npx, npm run cli) and the tests' entry: runs the TypeScript CLI through tsx, so
// there is no build step. Operators run bin/permit-chain, the compiled CLI (cli/launch.cjs); the production image
// runs `node dist/cli/cli.js`. Started by a Node older than `engines` (the
// system's, through npx), it runs itself again on the pinned Node that scripts/setup.sh installs in .tools/node.
const { spawn } = require('node:child_process');
const { existsSync, readFileSync } = require('node:fs');
const { join } = require('node:path');

const root = join(__dirname, '..');
const engines = require('../package.json').engines.node;
if (Number(process.versions.node.split('.')[0]) < Number(/\d+/.exec(engines)[0])) {
  const pinned = join(root, '.tools', 'node', 'bin', 'node');
  const version = readFileSync(join(root, '.node-version'), 'utf8').trim();
  if (!existsSync(pinned)) {
    console.error(`permit-chain: Node ${process.version} is older than ${engines}: run bash scripts/setup.sh first`);
    process.exit(1);
  }
  console.error(
    `permit-chain: Node ${process.version} is older than ${engines}: running on Node ${version} (.tools/node)`,
  );
  const child = spawn(pinned, [__filename, ...process.argv.slice(2)], { stdio: 'inherit' });
  // Ctrl-C reaches both processes (one process group): this one waits for the CLI, which stops gracefully on the
  // first SIGINT and would die at once on a second. SIGTERM and SIGHUP, which come to one pid, are passed on.
  process.on('SIGINT', () => undefined);
  for (const signal of ['SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal));
  child.on('exit', (code, signal) => {
    if (signal) {
      process.removeAllListeners(signal);
      process.kill(process.pid, signal);
    } else process.exit(code ?? 1);
  });
} else {
  require('tsx/cjs/api').register();
  require('./cli.ts')
    .main(process.argv)
    .then((code) => {
      process.exitCode = code;
    });
}
