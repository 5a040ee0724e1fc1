import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import { BUILD_INFO_FILE, hashSources, type BuildInfo } from './workflow-code';

/** True when this module runs compiled (dist/), false when it runs from the TypeScript sources. */
const COMPILED = extname(__filename) === '.js';
/** The checkout: this file's folder's parent from the sources, dist/'s parent when compiled. */
const SOURCE_ROOT = join(__dirname, ...(COMPILED ? ['..', '..'] : ['..']));
/** How many hex digits of the hash name a build: 64 bits, short enough to type. */
const BUILD_ID_LENGTH = 16;

/**
 * The build id of a set of inputs (hashSources: path → sha256): a hash over every input a worker runs from, the
 * workflow code and the activities alike, and package-lock.json (the SDK and the libraries). Any change to any of
 * them, an activity-only fix included, is another build; the same inputs give the same id wherever they are hashed.
 */
export function buildIdOf(sources: Record<string, string>): string {
  const paths = Object.keys(sources).sort();
  if (paths.length === 0) throw new Error('build id: no sources to hash (no checkout, and no build-info.json)');
  const hash = createHash('sha256');
  for (const path of paths) hash.update(`${path} ${sources[path]}\n`);
  return hash.digest('hex').slice(0, BUILD_ID_LENGTH);
}

/**
 * The build id of what this process runs. Compiled, it is that of the sources the build was made from (dist/'s
 * build-info.json, written by `npm run build`; the worker refuses a build whose sources changed since); from the
 * TypeScript sources, that of the sources as they are now. Both ways give one id for one checkout.
 */
export function currentBuildId(): string {
  if (COMPILED) {
    const infoPath = join(__dirname, '..', BUILD_INFO_FILE);
    if (!existsSync(infoPath)) throw new Error(`build id: no ${infoPath}: run npm run build`);
    return buildIdOf((JSON.parse(readFileSync(infoPath, 'utf8')) as BuildInfo).sources);
  }
  return buildIdOf(hashSources(SOURCE_ROOT));
}
