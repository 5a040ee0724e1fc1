import type { WorkflowHandle } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPlan } from '../../client/plans';
import { statusQuery, wakeSignal } from '../../contract/messages';
import {
  chainHarness,
  eventually,
  makePlan,
  setPositions,
  testConfig,
  type ChainHarness,
  waitForStage,
} from '../helpers';

const { EventType } = temporal.api.enums.v1;

let h: ChainHarness;
beforeAll(async () => {
  h = await chainHarness(testConfig());
});
afterAll(() => h.close());

/** The event types a plan's current run recorded after its last `wake` signal, once a workflow task has answered it. */
async function eventsAfterWake(handle: WorkflowHandle): Promise<temporal.api.enums.v1.EventType[]> {
  return eventually(
    async () => {
      const events = (await handle.fetchHistory()).events ?? [];
      const signals = events.map((e) => e.workflowExecutionSignaledEventAttributes?.signalName);
      const wake = signals.lastIndexOf(wakeSignal.name);
      if (wake < 0) return undefined;
      const after = events.slice(wake + 1).map((e) => e.eventType ?? EventType.EVENT_TYPE_UNSPECIFIED);
      return after.includes(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) ? after : undefined;
    },
    10_000,
    'a workflow task after the wake',
  );
}

describe('the wake signal', () => {
  it('is no look: a blocked plan with no new build to move to stays at rest, its timeline and history unchanged', async () => {
    await setPositions(h, 'LTCUSDT', '3', '1');
    const plan = makePlan({ symbol: 'LTCUSDT', qty: '3' });
    await h.withWorker(async () => {
      const { workflowId, handle } = await startPlan(h.client, h.config, plan);
      const blocked = await waitForStage(h, workflowId, 'blocked');
      await handle.signal(wakeSignal);
      const after = await eventsAfterWake(handle);
      // Only the workflow task that saw the signal: no P3.3 look (a local activity's marker), no activity, no timer.
      expect(after).not.toContain(EventType.EVENT_TYPE_MARKER_RECORDED);
      expect(after).not.toContain(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED);
      expect(after).not.toContain(EventType.EVENT_TYPE_TIMER_STARTED);
      expect(after).not.toContain(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW);
      const status = await handle.query(statusQuery);
      expect(status.stage).toBe('blocked');
      expect(status.timeline).toEqual(blocked.timeline);
      expect(status.p33?.evaluated_at).toBe(blocked.p33?.evaluated_at);
      await handle.terminate('test over');
    });
  });
});
