import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { DeterminismViolationError } from '@temporalio/workflow';
import { Worker, type ReplayResult } from '@temporalio/worker';
import { describe, expect, inject, it } from 'vitest';
import { PROJECT_ROOT } from '../../cli/servers';
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
  it("replays the current build's executed, blocked, long-blocked, expired, approved and looking plans", async () => {
    const results = await replayAll(inject('workflowBundlePath'));
    // The current build's own histories, one per kind of plan (docs/testing.md): no older build's.
    expect(results.map((r) => r.workflowId).sort()).toEqual([
      'approved-production',
      'blocked-long',
      'blocked-then-executed',
      'executed',
      'expired',
      'looked-while-moving',
      'woken-while-looking',
    ]);
    for (const result of results) expect(result.error, result.workflowId).toBeUndefined();
  });

  it('fails them against a workflow that changed the order of the layers', async () => {
    const codePath = await reorderedWorkflowBundle();
    const results = await replayAll(codePath);
    expect(results).toHaveLength(7);
    for (const result of results) expect(result.error, result.workflowId).toBeInstanceOf(DeterminismViolationError);
  });
});
