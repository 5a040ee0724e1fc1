/**
 * A worker and an intake, as processes, while their Redis is SIGKILLed and started again: each says once that it
 * lost Redis and once that it is back (with how long), and prints no stack trace and no line per failed attempt.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT, freePort, redisReachable, redisServerPath } from '../../scripts/servers';
import { testEnv } from '../helpers';
import { intakeSpec, workerSpec } from '../stack/chain';
import { ProcessGroup } from '../stack/processes';

const group = new ProcessGroup(join(PROJECT_ROOT, 'test-results', 'connection-state'));
const dir = mkdtempSync(join(tmpdir(), 'permit-chain-connection-state-'));

afterAll(async () => {
  await group.stopAll();
  rmSync(dir, { recursive: true, force: true });
}, 60_000);

describe('a process that loses its Redis', () => {
  it('prints one line when it loses Redis and one when it is back, and no stack trace', async () => {
    const port = await freePort();
    const url = `redis://127.0.0.1:${port}/0`;
    const redis = await group.start({
      name: 'redis',
      command: redisServerPath(),
      args: ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--dir', dir, '--appendonly', 'yes'],
      ready: () => redisReachable(url, 500),
    });
    const env = testEnv({ REDIS_URL: url });
    const [worker, intake] = await Promise.all([
      group.start(workerSpec('worker', env)),
      group.start(intakeSpec('intake', env)),
    ]);
    if (!worker || !intake) throw new Error('not started');
    const from = { worker: worker.output().split('\n').length, intake: intake.output().split('\n').length };

    await redis.kill();
    await new Promise((resolve) => setTimeout(resolve, 4_000));
    await redis.start();
    for (const proc of [worker, intake]) await proc.waitForLine(/Redis at .*: back after \d+\.\d s/, 30_000, 0);
    // A moment for any late line of the outage.
    await new Promise((resolve) => setTimeout(resolve, 2_000));

    for (const [proc, start] of [
      [worker, from.worker],
      [intake, from.intake],
    ] as const) {
      const lines = proc
        .output()
        .split('\n')
        .slice(start - 1);
      const shown = `${proc.name}:\n${lines.join('\n')}`;
      expect(
        lines.filter((line) => /Redis at .*: lost \(/.test(line)),
        shown,
      ).toHaveLength(1);
      expect(
        lines.filter((line) => /Redis at .*: back after \d+\.\d s/.test(line)),
        shown,
      ).toHaveLength(1);
      expect(
        lines.filter((line) => /\\n\s+at |^\s+at /.test(line)),
        shown,
      ).toEqual([]);
      expect(
        lines.filter((line) => /could not|ECONNREFUSED/.test(line)),
        shown,
      ).toEqual([]);
    }
  }, 120_000);
});
