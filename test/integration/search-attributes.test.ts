import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { status } from '@grpc/grpc-js';
import { Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerSearchAttributes } from '../../client/search-attributes';
import { temporalCliExecutable } from '../../cli/servers';
import { runCli } from '../../scripts/stack/cli-runner';
import { testEnv } from '../helpers';

const run = promisify(execFile);
const env = testEnv();

function temporalCli(): string {
  const cli = temporalCliExecutable();
  if (cli.type !== 'existing-path') throw new Error('no Temporal CLI in .tools: run scripts/setup.sh');
  return cli.path;
}
let connection: Connection;
beforeAll(async () => {
  connection = await Connection.connect({ address: env.TEMPORAL_ADDRESS });
});
afterAll(() => connection.close());

describe('permit-chain register-search-attributes', () => {
  it('waits for a namespace created a moment later, as on a cluster that is still spreading it', async () => {
    const namespace = `chain-${randomBytes(4).toString('hex')}`;
    const registering = runCli(['register-search-attributes'], { ...env, TEMPORAL_NAMESPACE: namespace });
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    // As the compose file's one-shot does it: the official CLI.
    await run(temporalCli(), ['operator', 'namespace', 'create', '-n', namespace, '--address', env.TEMPORAL_ADDRESS]);
    const registered = await registering;
    expect(registered.stderr).toBe('');
    expect(registered.stdout).toBe(
      `registered PlanId, Symbol, ChainStage, ChainOutcome, TradingMode in ${namespace}\n`,
    );
    expect(registered.code).toBe(0);
    const listed = await connection.operatorService.listSearchAttributes({ namespace });
    expect(Object.keys(listed.customAttributes ?? {})).toEqual(
      expect.arrayContaining(['PlanId', 'Symbol', 'ChainStage', 'ChainOutcome', 'TradingMode']),
    );
    // Again: nothing to add.
    const again = await runCli(['register-search-attributes'], { ...env, TEMPORAL_NAMESPACE: namespace });
    expect(again.stdout).toBe(`all registered already in ${namespace}\n`);
  });

  it('gives up on a namespace that does not appear, once its wait is over', async () => {
    const started = Date.now();
    await expect(
      registerSearchAttributes(connection, `nosuch-${randomBytes(4).toString('hex')}`, 500),
    ).rejects.toMatchObject({ code: status.NOT_FOUND });
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
  });
});
