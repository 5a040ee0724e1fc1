import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { currentBuildId } from '../workers/build-id';

const PACKAGE_NAME = 'quantum-permit-chain';

/**
 * This package's version, from its package.json: found by walking up from here, so that the answer is the same
 * whether the CLI runs from its TypeScript sources or from a compiled copy in a subfolder.
 */
export function packageVersion(from: string = __dirname): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      const manifest = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (manifest.name === PACKAGE_NAME && manifest.version) return manifest.version;
    }
    if (dirname(dir) === dir) throw new Error(`no package.json of ${PACKAGE_NAME} above ${from}`);
  }
}

/** The Temporal TypeScript SDK this process runs: the installed @temporalio/client, not the range asked for. */
export function temporalSdkVersion(): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- a JSON file, read once
  return (require('@temporalio/client/package.json') as { version: string }).version;
}

/**
 * `permit-chain --version --json`: the chain's version, its build id (workers/build-id.ts: the version a worker of
 * this checkout or build polls as, with WORKER_VERSIONING) and the Temporal SDK's.
 */
export function versionInfo(): { version: string; buildId: string; temporalSdk: string } {
  return { version: packageVersion(), buildId: currentBuildId(), temporalSdk: temporalSdkVersion() };
}

/** `permit-chain --version`: three lines, the chain's version, its build id and the Temporal SDK's version. */
export function versionText(): string {
  const { version, buildId, temporalSdk } = versionInfo();
  return `permit-chain ${version}\nbuild ${buildId}\nTemporal TypeScript SDK ${temporalSdk}`;
}
