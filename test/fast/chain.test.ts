import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cancelSignal, positionsChangedSignal, retrySignal, statusQuery } from '../../contract/messages';
import { type FastServer, ageOf, fastPlan, reached, startFastServer, timelineOf, until } from './harness';
import { MemoryChain } from './memory-activities';

/**
 * The chain's branches (testnet mode) on the time-skipping test server, with in-memory activities
 * (test/fast/memory-activities.ts): how each branch ends, what an operator reads on the way, and what the chain
 * asked of the layers. The worker's own workflow bundle; the real-server tests stay in test/integration.
 */
let fast: FastServer;
beforeAll(async () => {
  fast = await startFastServer();
});
afterAll(async () => {
  await fast?.teardown();
});

/** A blocked plan looks by itself every 10 re-check intervals: 300 s at RECHECK_INTERVAL_S 30. */
const FALLBACK_LOOK_MS = 300_000;

describe('the permit chain, fast', () => {
  it('grant → execute: one order, both positions moved, the symbol let go', async () => {
    const world = new MemoryChain();
    world.setPositions('BTCUSDT', '1', '1');
    const plan = fastPlan({ qty: '1' });
    const final = await fast.run(world, async (start) => (await start(plan)).result());
    expect(final.outcome).toBe('executed');
    expect(final.attempts).toBe(1);
    expect(final.governor).toMatchObject({ granted: true, reason: 'testnet_auto_approved' });
    expect(timelineOf(final)).toEqual([
      'governor: asked the Governor for a permit (attempt 1)',
      expect.stringMatching(/^governor: permit granted \(testnet_auto_approved\), valid until \S+Z$/),
      'apply: publishing to the Apply stream',
      'apply: published as 1-0',
      'p33: comparing exchange and ledger positions',
      'p33: positions agree: exchange 1, ledger 1',
      'execute: placing the order',
      `done: executed: FILLED 1 @ 1, order memory-${plan.plan_id}, ledger 0`,
    ]);
    expect(world.count('executePlan')).toBe(1);
    expect(world.orders.map((o) => o.plan_id)).toEqual([plan.plan_id]);
    expect(world.position('BTCUSDT')).toBe('0/0');
    expect(world.auditOf(plan.plan_id)).toEqual([
      'governor granted',
      'apply published',
      'p33 allowed',
      'execute FILLED',
    ]);
    expect(world.line('BTCUSDT')).toEqual({ holder: '', waiting: [] });
    expect(world.ended).toEqual(['executed']);
  });

  it('the layers as regular activities (LAYER_ACTIVITIES=regular): admitted first, then the turn and the permit', async () => {
    const world = new MemoryChain({ layerActivities: 'regular' });
    world.setPositions('BTCUSDT', '1', '1');
    const plan = fastPlan({ qty: '1' });
    const final = await fast.run(world, async (start) => (await start(plan)).result());
    expect(final.outcome).toBe('executed');
    // The admission alone (local: the workflow cannot know the worker's choice before), then the turn with the permit.
    expect(world.calls.slice(0, 3)).toEqual(['governorTurn', 'governorTurn', 'publishPlan']);
    expect(world.auditOf(plan.plan_id)).toEqual([
      'governor granted',
      'apply published',
      'p33 allowed',
      'execute FILLED',
    ]);
  });

  it('Governor deny: ends denied with the reason, nothing published, no order', async () => {
    const world = new MemoryChain();
    world.maxQty = '1';
    world.setPositions('BTCUSDT', '5', '5');
    const plan = fastPlan({ qty: '2' });
    const final = await fast.run(world, async (start) => (await start(plan)).result());
    expect(final.outcome).toBe('denied');
    expect(final.timeline.at(-1)?.detail).toBe('denied: Governor denied: size_limit_exceeded: qty 2 > max 1');
    expect(final.governor).toMatchObject({ granted: false, reason: 'size_limit_exceeded' });
    expect(world.count('publishPlan') + world.count('checkPosition') + world.count('executePlan')).toBe(0);
    expect(world.auditOf(plan.plan_id)).toEqual(['governor denied']);
    expect(world.line('BTCUSDT').holder).toBe('');
  });

  it('P3.3 block → the position watcher wakes the plan → execute, with a fresh permit and one publication', async () => {
    const world = new MemoryChain();
    world.setPositions('ETHUSDT', '2', '1');
    const plan = fastPlan({ symbol: 'ETHUSDT', qty: '2' });
    const { blocked, holderWhileBlocked, final } = await fast.run(world, async (start) => {
      const handle = await start(plan);
      const blocked = await reached(handle, 'blocked');
      const holderWhileBlocked = world.line('ETHUSDT').holder;
      world.setPositions('ETHUSDT', '2', '2');
      await handle.signal(positionsChangedSignal);
      return { blocked, holderWhileBlocked, final: await handle.result() };
    });
    // Blocked: what P3.3 saw, what to do, and the symbol free for other plans.
    expect(blocked.p33).toMatchObject({ allow: false, reason: 'reconcile_required_qty_mismatch' });
    expect(blocked.timeline.at(-1)?.detail).toMatch(/reconcile_required_qty_mismatch.*exchange 2.*ledger 1/);
    expect(blocked.next_step).toContain('retry');
    expect(holderWhileBlocked).toBe('');
    // Woken, it looked once, asked the Governor again (no permit is kept while blocked), and executed.
    expect(final.outcome).toBe('executed');
    expect(final.attempts).toBe(2);
    expect(timelineOf(final)).toContain('blocked: positions agree again: exchange 2, ledger 2');
    expect(world.count('peekPosition')).toBe(1);
    expect(world.count('executePlan')).toBe(1);
    expect(world.auditOf(plan.plan_id).filter((line) => line === 'apply published')).toHaveLength(1);
    expect(world.position('ETHUSDT')).toBe('0/0');
    // The wake, not the fallback look: the plan's clock did not reach it.
    expect(ageOf(final)).toBeLessThan(FALLBACK_LOOK_MS);
  });

  it('a retry while still blocked: the operator reads that it looked and why it stays; the fixed retry executes', async () => {
    const world = new MemoryChain();
    world.setPositions('SOLUSDT', '10', '9');
    const plan = fastPlan({ symbol: 'SOLUSDT', qty: '10' });
    const { still, final } = await fast.run(world, async (start) => {
      const handle = await start(plan);
      await reached(handle, 'blocked');
      await handle.signal(retrySignal, { by: 'ops', retry_id: 'r1' });
      const still = await until(handle, (status) => status.last_retry?.looked === true, 'looked after the retry');
      world.setPositions('SOLUSDT', '10', '10');
      await handle.signal(retrySignal, { by: 'ops', retry_id: 'r2' });
      return { still, final: await handle.result() };
    });
    expect(still.stage).toBe('blocked');
    expect(still.last_retry).toEqual({ by: 'ops', retry_id: 'r1', looked: true });
    expect(still.timeline.at(-1)?.detail).toMatch(
      /^looked again after the retry by ops: still .*exchange 10.*ledger 9/,
    );
    expect(final.outcome).toBe('executed');
    expect(world.count('peekPosition')).toBe(2);
    expect(world.count('executePlan')).toBe(1);
  });

  it('a blocked plan that nobody wakes looks by itself after 10 re-check intervals, then executes', async () => {
    const world = new MemoryChain();
    world.setPositions('ADAUSDT', '5', '4');
    const plan = fastPlan({ symbol: 'ADAUSDT', qty: '5' });
    const final = await fast.run(world, async (start) => {
      const handle = await start(plan);
      await reached(handle, 'blocked');
      world.setPositions('ADAUSDT', '5', '5'); // fixed without a word to the plan
      return handle.result();
    });
    expect(final.outcome).toBe('executed');
    expect(ageOf(final)).toBeGreaterThanOrEqual(FALLBACK_LOOK_MS);
    expect(ageOf(final)).toBeLessThan(2 * FALLBACK_LOOK_MS);
    expect(world.count('peekPosition')).toBe(1);
  });

  it('permit ran out: a layer that outlives the permit sends the plan back to the Governor, then it executes', async () => {
    // A permit good for 2 s (TTL 3 s, margin 1 s); Apply's first call takes 2.5 s. The layers as regular activities:
    // the server ends the call at the permit's deadline. As local activities, the SDK's start-to-close timeout (equal
    // to the permit's rest) sometimes raced the schedule-to-close one and was retried within the same permit.
    const world = new MemoryChain({ permitTtlS: 3, permitMarginS: 1, layerActivities: 'regular' });
    world.slow.publishPlan = [2_500];
    world.setPositions('XRPUSDT', '3', '3');
    const plan = fastPlan({ symbol: 'XRPUSDT', qty: '3' });
    // Real time, the server's clock locked (queries, never `result()` while it runs): Apply's timeout is the permit's.
    const final = await fast.run(world, async (start) => reached(await start(plan), 'done'));
    expect(final.outcome).toBe('executed');
    expect(final.attempts).toBe(2);
    expect(timelineOf(final)).toContain('governor: asked the Governor for a permit (attempt 2)');
    expect(world.count('publishPlan')).toBe(2);
    expect(world.count('executePlan')).toBe(1);
    expect(world.auditOf(plan.plan_id)).toEqual([
      'governor granted',
      'governor granted',
      'apply published',
      'p33 allowed',
      'execute FILLED',
    ]);
  });

  it('cancel while blocked: ends cancelled, audited, no order', async () => {
    const world = new MemoryChain();
    world.setPositions('DOTUSDT', '4', '1');
    const plan = fastPlan({ symbol: 'DOTUSDT', qty: '4' });
    const final = await fast.run(world, async (start) => {
      const handle = await start(plan);
      await reached(handle, 'blocked');
      await handle.signal(cancelSignal, { by: 'ops', reason: 'wrong size' });
      return handle.result();
    });
    expect(final.outcome).toBe('cancelled');
    expect(final.timeline.at(-1)?.detail).toBe('cancelled: cancelled by ops: wrong size');
    expect(world.auditOf(plan.plan_id)).toContain('operator cancel_requested');
    expect(world.count('executePlan')).toBe(0);
    expect(world.ended).toEqual(['cancelled']);
  });

  it("Temporal's cancellation of a plan waiting in line: ends cancelled and leaves the line", async () => {
    const world = new MemoryChain();
    world.setPositions('LTCUSDT', '1', '1');
    world.holdFor('LTCUSDT', 'other-plan');
    const plan = fastPlan({ symbol: 'LTCUSDT', qty: '1' });
    const { waiting, final } = await fast.run(world, async (start) => {
      const handle = await start(plan);
      const waiting = await until(handle, (status) => status.timeline.length > 0, 'in line');
      await handle.cancel();
      return { waiting, final: await handle.result() };
    });
    expect(waiting.timeline.at(-1)?.detail).toBe('in line for LTCUSDT: plan other-plan holds it, 0 ahead');
    expect(final.outcome).toBe('cancelled');
    expect(world.line('LTCUSDT')).toEqual({ holder: 'other-plan', waiting: [] });
    expect(world.count('executePlan')).toBe(0);
  });

  it('a long waiter continues as new: every run under the threshold, what it did carried over, then one order', async () => {
    // A look every 10 s of skipped time (10 × RECHECK_INTERVAL_S 1), ~6 events each: threshold 200 within minutes.
    const world = new MemoryChain({ continueAsNewEvents: 200, recheckIntervalS: 1, planMaxAgeS: 86_400 });
    world.setPositions('BNBUSDT', '2', '0');
    const plan = fastPlan({ symbol: 'BNBUSDT', qty: '2' });
    const { carried, runs, final } = await fast.run(world, async (start) => {
      const handle = await start(plan);
      await reached(handle, 'blocked');
      await fast.env.sleep('15m');
      const carried = await handle.query(statusQuery);
      const latest = await fast.env.client.workflow.getHandle(handle.workflowId).describe();
      world.setPositions('BNBUSDT', '2', '2');
      await handle.signal(positionsChangedSignal);
      const final = await handle.result();
      return { carried, runs: { first: handle.firstExecutionRunId, latest: latest.runId }, final };
    });
    expect(runs.latest).not.toBe(runs.first);
    expect(world.count('carryOver')).toBeGreaterThanOrEqual(2);
    expect(world.count('resumeCarried')).toBe(world.count('carryOver'));
    // Still blocked after continuing, with what the first run did: one permit, one publication, its first line.
    expect(carried.stage).toBe('blocked');
    expect(carried.attempts).toBe(1);
    expect(carried.apply?.stream_id).toBe('1-0');
    expect(carried.timeline[0]?.detail).toBe('asked the Governor for a permit (attempt 1)');
    expect(carried.timeline.some((t) => /^continued as a new run after \d+ events$/.test(t.detail))).toBe(true);
    expect(final.outcome).toBe('executed');
    expect(final.attempts).toBe(2);
    expect(world.auditOf(plan.plan_id).filter((line) => line === 'apply published')).toHaveLength(1);
    expect(world.orders).toHaveLength(1);
    // One plan: the observer heard of its end once, not once per run.
    expect(world.ended).toEqual(['executed']);
  });
});
