import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { DeterminismViolationError } from '@temporalio/workflow';
import { Worker, type ReplayResult } from '@temporalio/worker';
import { describe, expect, inject, it } from 'vitest';
import { PROJECT_ROOT } from '../../scripts/servers';
import { quietRuntime, reorderedWorkflowBundle } from '../helpers';

/**
 * Replay safety: the recorded histories of real plans (scripts/record-histories.ts) must replay against the
 * workflow code as it is now. A change that would break plans already running fails here, in CI.
 */
const HISTORIES = join(PROJECT_ROOT, 'test', 'histories');

function recorded() {
  return readdirSync(HISTORIES)
    .filter((file) => /\.json(\.gz)?$/.test(file))
    .sort()
    .map((file) => {
      // A long history is kept gzipped: its thousands of events compress fifty-fold.
      const raw = readFileSync(join(HISTORIES, file));
      const text = file.endsWith('.gz') ? gunzipSync(raw).toString('utf8') : raw.toString('utf8');
      return { workflowId: file.replace(/\.json(\.gz)?$/, ''), history: JSON.parse(text) as unknown };
    });
}

async function replayAll(codePath: string): Promise<ReplayResult[]> {
  quietRuntime();
  const results: ReplayResult[] = [];
  for await (const result of Worker.runReplayHistories({ workflowBundle: { codePath } }, recorded()))
    results.push(result);
  return results;
}

describe('replay of recorded plans', () => {
  it('replays executed, blocked-then-executed, blocked-long, expired, approved and woken-while-looking plans against the current workflow', async () => {
    const results = await replayAll(inject('workflowBundlePath'));
    // Recorded once per way: before one Governor call per turn, since (-one-call), and since settled looks
    // (-settled); the two kinds of plans that reach the settled looks' change also from before it.
    expect(results.map((r) => r.workflowId).sort()).toEqual([
      'approved-production',
      'approved-production-one-call',
      'approved-production-settled',
      'blocked-long',
      'blocked-then-executed',
      'blocked-then-executed-one-call',
      'blocked-then-executed-settled',
      'executed',
      'executed-one-call',
      'executed-settled',
      'expired',
      'expired-one-call',
      'expired-settled',
      'looked-while-moving',
      'looked-while-moving-settled',
      'woken-while-looking',
      'woken-while-looking-settled',
    ]);
    for (const result of results) expect(result.error, result.workflowId).toBeUndefined();
  });

  it('fails them against a workflow that changed the order of the layers', async () => {
    const codePath = await reorderedWorkflowBundle();
    const results = await replayAll(codePath);
    expect(results).toHaveLength(17);
    for (const result of results) expect(result.error, result.workflowId).toBeInstanceOf(DeterminismViolationError);
  });
});
