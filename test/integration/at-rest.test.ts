import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPaperExchange } from '../../activities/exchange/paper';
import type { ExchangePort } from '../../activities/exchange/port';
import { startPlan } from '../../client/plans';
import { connectRedis } from '../../lib/connections';
import type { permitChain } from '../../workflows';
import { statusQuery } from '../../contract/messages';
import { PositionWatcher } from '../../workers/position-watcher';
import { auditOf, chainHarness, makePlan, setPositions, testConfig, type ChainHarness, waitForStage } from '../helpers';

/**
 * Blocked plans at rest, woken by the position watcher, and the symbol line driven by signals: the seed's
 * one-command fix executes a blocked plan by itself, and plans on one symbol keep their place however long they wait.
 */
let h: ChainHarness;
beforeAll(async () => {
  h = await chainHarness(testConfig({ PERMIT_TTL_S: '3', PERMIT_MARGIN_S: '1' }));
});
afterAll(() => h.close());

async function watcher(): Promise<PositionWatcher> {
  return new PositionWatcher({
    subscriber: await connectRedis(h.config),
    redis: h.redis,
    client: h.client,
    config: h.config,
    exchange: createPaperExchange(h.redis, h.keys, Date.now),
    log: () => undefined,
  });
}

async function amounts(symbol: string) {
  return {
    exchange: await h.redis.hget(h.keys.paperPosition(symbol), 'amount'),
    ledger: await h.redis.hget(h.keys.position(symbol), 'ledger_amount'),
  };
}

describe('the position watcher', () => {
  it("executes a blocked plan on the seed's fix alone (HSET ledger_amount), with no retry", async () => {
    await setPositions(h, 'BTCUSDT', '0.062', '0.002');
    const plan = makePlan({ symbol: 'BTCUSDT', qty: '0.062' });
    const watching = await watcher();
    await watching.start();
    try {
      await h.withWorker(async () => {
        const { workflowId, handle } = await startPlan(h.client, h.config, plan);
        await waitForStage(h, workflowId, 'blocked');
        expect(await h.redis.zscore(h.keys.p33Blocked('BTCUSDT'), plan.plan_id)).not.toBeNull();
        const fixedAt = Date.now();
        await h.redis.hset(h.keys.position('BTCUSDT'), 'ledger_amount', '0.062');
        const final = await handle.result();
        const fixToExecuted = Date.now() - fixedAt;
        expect(final.outcome).toBe('executed');
        expect(final.timeline.some((t) => t.detail.startsWith('retry requested'))).toBe(false);
        // Milliseconds here; the bound only says "not the fallback look" (10 re-check intervals).
        expect(fixToExecuted).toBeLessThan(5_000);
      });
    } finally {
      watching.stop();
    }
    expect(await amounts('BTCUSDT')).toEqual({ exchange: '0', ledger: '0' });
    expect(await h.redis.zscore(h.keys.p33Blocked('BTCUSDT'), plan.plan_id)).toBeNull();
  });

  it('starts without keyspace notifications when its Redis user may not subscribe, and says so', async () => {
    const password = `pw-${Date.now()}`;
    await h.redis.call('ACL', 'SETUSER', 'nosubscribe', 'on', `>${password}`, '~*', '&*', '+@all', '-psubscribe');
    try {
      const url = new URL(h.config.redisUrl);
      url.username = 'nosubscribe';
      url.password = password;
      const lines: string[] = [];
      const limited = new PositionWatcher({
        subscriber: await connectRedis({ ...h.config, redisUrl: url.toString() }),
        redis: h.redis,
        client: h.client,
        config: h.config,
        exchange: createPaperExchange(h.redis, h.keys, Date.now),
        log: (line) => lines.push(line),
      });
      await limited.start();
      limited.stop();
      expect(lines).toEqual([
        expect.stringMatching(/^position watcher: cannot subscribe to keyspace notifications \(NOPERM/),
      ]);
    } finally {
      await h.redis.call('ACL', 'DELUSER', 'nosubscribe');
    }
  });

  it('wakes, by its sweep, the plans of a symbol whose positions agree without any notification', async () => {
    await setPositions(h, 'ETHUSDT', '2', '1');
    const plan = makePlan({ symbol: 'ETHUSDT', qty: '2' });
    const sweeper = await watcher(); // not started: no notifications reach it, only the sweep
    try {
      await h.withWorker(async () => {
        const { workflowId, handle } = await startPlan(h.client, h.config, plan);
        await waitForStage(h, workflowId, 'blocked');
        await sweeper.sweep();
        expect((await handle.query(statusQuery)).stage).toBe('blocked'); // still 2 vs 1: nobody woken
        await h.redis.hset(h.keys.position('ETHUSDT'), 'ledger_amount', '2');
        await sweeper.sweep();
        expect((await handle.result()).outcome).toBe('executed');
      });
    } finally {
      sweeper.stop();
    }
    // The symbol has no blocked plan left, and the next sweep forgets it.
    await sweeper.sweep();
    expect(await h.redis.sismember(h.keys.p33BlockedSymbols, 'ETHUSDT')).toBe(0);
  });
});

/** The paper exchange, taking `ms` to place each order: holders keep the symbol longer than a permit lives. */
function slowExchange(ms: number): ExchangePort {
  const paper = createPaperExchange(h.redis, h.keys, Date.now);
  return {
    ...paper,
    async placeMarketOrder(request) {
      await new Promise((resolve) => setTimeout(resolve, ms));
      return paper.placeMarketOrder(request);
    },
  };
}

describe('the symbol line', () => {
  it('keeps each plan’s place while it waits longer than a permit lives: one permit per plan, asked at its turn', async () => {
    await setPositions(h, 'SOLUSDT', '4', '4');
    const plans = Array.from({ length: 4 }, () => makePlan({ symbol: 'SOLUSDT', qty: '1' }));
    // Each order takes 1.5 s; the last plan waits about 4.5 s, over twice a permit's 2 s of life for the chain.
    const finals = await h.withWorker(
      async () => {
        const started = await Promise.all(plans.map((plan) => startPlan(h.client, h.config, plan)));
        return Promise.all(started.map((s) => s.handle.result()));
      },
      undefined,
      { exchange: slowExchange(1_500) },
    );
    expect(finals.map((f) => f.outcome)).toEqual(Array(4).fill('executed'));
    expect(finals.map((f) => f.attempts)).toEqual(Array(4).fill(1));
    for (const plan of plans) {
      const governor = (await auditOf(h, plan.plan_id)).filter(([layer]) => layer === 'governor');
      expect(governor).toEqual([['governor', 'granted', 'testnet_auto_approved']]);
    }
    expect(await amounts('SOLUSDT')).toEqual({ exchange: '0', ledger: '0' });
  });

  it('skips a waiter whose workflow ended: the next one is woken at once, not when the dead one goes stale', async () => {
    await setPositions(h, 'ADAUSDT', '2', '2');
    const [first, dead, last] = Array.from({ length: 3 }, () => makePlan({ symbol: 'ADAUSDT', qty: '1' }));
    if (!first || !dead || !last) throw new Error('plans');
    const lastTook = await h.withWorker(
      async () => {
        const a = await startPlan(h.client, h.config, first);
        await waitForStage(h, a.workflowId, 'execute');
        const b = await startPlan(h.client, h.config, dead);
        await waitForStage(h, b.workflowId, 'governor');
        const c = await startPlan(h.client, h.config, last);
        await waitForStage(h, c.workflowId, 'governor');
        // Terminated, not cancelled: it cannot leave the line by itself.
        await h.client.workflow.getHandle<typeof permitChain>(b.workflowId).terminate('test: a waiter that died');
        const t0 = Date.now();
        expect((await a.handle.result()).outcome).toBe('executed');
        expect((await c.handle.result()).outcome).toBe('executed');
        return Date.now() - t0;
      },
      undefined,
      { exchange: slowExchange(1_000) },
    );
    // The dead waiter's place would otherwise hold the line for WAITER_STALE_MS (90 s).
    expect(lastTook).toBeLessThan(10_000);
    expect(await h.redis.zscore(h.keys.symbolLine('ADAUSDT'), dead.plan_id)).toBeNull();
    expect(await amounts('ADAUSDT')).toEqual({ exchange: '0', ledger: '0' });
  });
});

describe('LAYER_ACTIVITIES=regular', () => {
  it('runs the same chain with the Redis layers as regular activities', async () => {
    const regular = testConfig({ LAYER_ACTIVITIES: 'regular', KEY_PREFIX: h.config.keyPrefix });
    await setPositions(h, 'DOTUSDT', '1', '1');
    const plan = makePlan({ symbol: 'DOTUSDT', qty: '1' });
    const history = await h.withWorker(
      async () => {
        const { handle } = await startPlan(h.client, regular, plan);
        expect((await handle.result()).outcome).toBe('executed');
        return handle.fetchHistory();
      },
      undefined,
      { config: regular },
    );
    const scheduled = (history.events ?? [])
      .map((e) => e.activityTaskScheduledEventAttributes?.activityType?.name)
      .filter((name): name is string => Boolean(name));
    expect(scheduled).toEqual(['governorTurn', 'publishPlan', 'checkPosition', 'executePlan']);
  });
});

describe('one Governor call per turn', () => {
  it('admits, takes the turn and asks for the permit in one local activity, and marks the plan with its patch', async () => {
    await setPositions(h, 'XRPUSDT', '1', '1');
    const plan = makePlan({ symbol: 'XRPUSDT', qty: '1' });
    const history = await h.withWorker(async () => {
      const { handle } = await startPlan(h.client, h.config, plan);
      expect((await handle.result()).outcome).toBe('executed');
      return handle.fetchHistory();
    });
    const converter = h.client.options.loadedDataConverter.payloadConverter;
    const steps: string[] = [];
    const patches: string[] = [];
    for (const event of history.events ?? []) {
      const marker = event.markerRecordedEventAttributes;
      if (marker?.markerName === 'core_local_activity') {
        const data = marker.details?.data?.payloads?.[0];
        if (data) steps.push(converter.fromPayload<{ activity_type: string }>(data).activity_type);
      }
      const patchId = marker?.markerName === 'core_patch' ? marker.details?.['patch-data']?.payloads?.[0] : undefined;
      if (patchId) patches.push(converter.fromPayload<{ id: string }>(patchId).id);
      const scheduled = event.activityTaskScheduledEventAttributes?.activityType?.name;
      if (scheduled) steps.push(scheduled);
    }
    expect(patches).toEqual(['one-governor-call-per-turn']);
    expect(steps).toEqual(['governorTurn', 'publishPlan', 'checkPosition', 'executePlan']);
    const governor = (await auditOf(h, plan.plan_id)).filter(([layer]) => layer === 'governor');
    expect(governor).toEqual([['governor', 'granted', 'testnet_auto_approved']]);
  });
});

describe('one Governor call per turn, cancelled at once', () => {
  it('lets go of the symbol its admitting call took, when a cancel came with its start', async () => {
    await setPositions(h, 'LTCUSDT', '1', '1');
    const plan = makePlan({ symbol: 'LTCUSDT', qty: '1' });
    // No worker yet: the start and the cancellation request reach the plan in its first workflow task together.
    const { handle } = await startPlan(h.client, h.config, plan);
    await handle.cancel();
    const status = await h.withWorker(() => handle.result());
    expect(status.outcome).toBe('cancelled');
    expect(await h.redis.exists(h.keys.symbolLock('LTCUSDT'))).toBe(0);
    const next = makePlan({ symbol: 'LTCUSDT', qty: '1' });
    const took = await h.withWorker(async () => {
      const t0 = Date.now();
      const { handle: second } = await startPlan(h.client, h.config, next);
      expect((await second.result()).outcome).toBe('executed');
      return Date.now() - t0;
    });
    // Not after the cancelled plan's lease (PERMIT_TTL_S + PERMIT_MARGIN_S = 4 s here).
    expect(took).toBeLessThan(3_000);
  });
});
