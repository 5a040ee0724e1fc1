// What bin/permit-chain runs on the pinned Node: the compiled CLI in dist/ (`npm run build`, which scripts/setup.sh
// runs), in this process, with V8's compile cache. When the sources differ from those dist/ was built from, it says
// so in one line and runs the sources with tsx instead: slower, never stale. Plain JavaScript: it runs before any
// build exists. scripts/setup.sh asks `staleBuild` whether to build again.
'use strict';
const { createHash } = require('node:crypto');
const { existsSync, readFileSync, readdirSync, statSync } = require('node:fs');
const { join } = require('node:path');

/** The folders a build is made from, as BUILD_FOLDERS in workers/workflow-code.ts (a test keeps them equal). */
const BUILD_FOLDERS = ['contract', 'lib', 'activities', 'workflows', 'client', 'workers', 'cli'];

/**
 * The inputs (by path from `root`) that differ from those the build in `dist` was made from: added, removed or
 * changed. A file is hashed only when it was modified after the build began, so a fresh build costs a stat a file.
 * Undefined when there is no build at all.
 */
function staleBuild(root, dist = join(root, 'dist')) {
  const infoPath = join(dist, 'build-info.json');
  if (!existsSync(infoPath) || !existsSync(join(dist, 'cli', 'cli.js'))) return undefined;
  const info = JSON.parse(readFileSync(infoPath, 'utf8'));
  const builtAt = Date.parse(info.builtAt);
  const inputs = [];
  const walk = (dir, rel) => {
    if (!existsSync(dir)) return;
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = `${rel}/${entry.name}`;
      if (entry.isDirectory()) walk(join(dir, entry.name), path);
      else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')) inputs.push(path);
    }
  };
  for (const folder of BUILD_FOLDERS) walk(join(root, folder), folder);
  if (existsSync(join(root, 'package-lock.json'))) inputs.push('package-lock.json');
  const changed = inputs.filter((path) => {
    const built = info.sources[path];
    if (built === undefined) return true;
    const file = join(root, path);
    if (!(statSync(file).mtimeMs > builtAt)) return false;
    return createHash('sha256').update(readFileSync(file)).digest('hex') !== built;
  });
  const present = new Set(inputs);
  const removed = Object.keys(info.sources).filter((path) => !present.has(path));
  return [...changed, ...removed].sort();
}

function run(root) {
  const stale = staleBuild(root);
  let cli;
  if (stale && stale.length === 0) {
    require('node:module').enableCompileCache?.();
    cli = require(join(root, 'dist', 'cli', 'cli.js'));
  } else {
    const why = stale
      ? `dist/ was built from other sources (${stale.slice(0, 2).join(', ')}${stale.length > 2 ? ` and ${stale.length - 2} more` : ''} changed)`
      : 'no compiled CLI in dist/';
    process.stderr.write(
      `permit-chain: ${why}: running the sources with tsx (slower); bash scripts/setup.sh builds it again\n`,
    );
    require('tsx/cjs/api').register();
    cli = require('./cli.ts');
  }
  cli.main(process.argv).then((code) => {
    process.exitCode = code;
  });
}

module.exports = { BUILD_FOLDERS, staleBuild };

if (require.main === module) run(join(__dirname, '..'));
