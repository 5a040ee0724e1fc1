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
  it('replays executed, blocked-then-executed, blocked-long, expired and approved plans against the current workflow', async () => {
    const results = await replayAll(inject('workflowBundlePath'));
    // Each recorded twice: the plans of before one Governor call per turn, and (-one-call) since.
    expect(results.map((r) => r.workflowId).sort()).toEqual([
      'approved-production',
      'approved-production-one-call',
      'blocked-long',
      'blocked-then-executed',
      'blocked-then-executed-one-call',
      'executed',
      'executed-one-call',
      'expired',
      'expired-one-call',
    ]);
    for (const result of results) expect(result.error, result.workflowId).toBeUndefined();
  });

  it('fails them against a workflow that changed the order of the layers', async () => {
    const codePath = await reorderedWorkflowBundle();
    const results = await replayAll(codePath);
    expect(results).toHaveLength(9);
    for (const result of results) expect(result.error, result.workflowId).toBeInstanceOf(DeterminismViolationError);
  });
});
