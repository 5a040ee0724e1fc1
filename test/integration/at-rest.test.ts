import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPaperExchange } from '../../activities/exchange/paper';
import type { ExchangePort } from '../../activities/exchange/port';
import { startPlan } from '../../client/plans';
import { connectRedis } from '../../lib/connections';
import type { permitChain } from '../../workflows';
import { positionsChangedSignal, retrySignal, statusQuery } from '../../contract/messages';
import type { ChainStatus } from '../../contract/types';
import { PositionWatcher } from '../../workers/position-watcher';
import {
  auditOf,
  chainHarness,
  eventually,
  makePlan,
  setPositions,
  testConfig,
  type ChainHarness,
  waitForStage,
} from '../helpers';

/**
 * Blocked plans at rest, woken by the position watcher, and the symbol line driven by signals: the one-command
 * ledger fix executes a blocked plan by itself, and plans on one symbol keep their place however long they wait.
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
  it('executes a blocked plan on the ledger fix alone (HSET ledger_amount), with no retry', async () => {
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

/** A promise and the function that resolves it: a point a test's exchange double waits at, or tells of. */
function gate(): { passed: Promise<void>; open: () => void } {
  let open!: () => void;
  const passed = new Promise<void>((resolve) => (open = resolve));
  return { passed, open };
}

/** Whether the plan's timeline has a line starting with `start`. */
async function timelineHas(handle: { query: (q: typeof statusQuery) => Promise<ChainStatus> }, start: string) {
  return (await handle.query(statusQuery)).timeline.some((t) => t.detail.startsWith(start)) ? true : undefined;
}

describe('a blocked plan’s looks', () => {
  it('looks again at its turn when it looked while another plan’s fill was on the exchange and not yet in the ledger', async () => {
    await setPositions(h, 'LINKUSDT', '3', '2');
    const blocked = makePlan({ symbol: 'LINKUSDT', qty: '1' });
    const mover = makePlan({ symbol: 'LINKUSDT', qty: '1' });
    const filled = gate();
    const recorded = gate();
    const paper = createPaperExchange(h.redis, h.keys, Date.now);
    // The mover's order fills at once; its Execute then waits to write the ledger until the test lets it.
    const exchange: ExchangePort = {
      ...paper,
      async placeMarketOrder(request) {
        const order = await paper.placeMarketOrder(request);
        if (request.clientOrderId === mover.plan_id) {
          filled.open();
          await recorded.passed;
        }
        return order;
      },
    };
    const finals = await h.withWorker(
      async () => {
        // The gate opens whatever happens: the worker's shutdown waits for the mover's Execute.
        try {
          const a = await startPlan(h.client, h.config, blocked);
          await waitForStage(h, a.workflowId, 'blocked'); // exchange 3, ledger 2
          // The ledger is fixed; no position watcher runs here, so only a retry tells the plan.
          await h.redis.hset(h.keys.position('LINKUSDT'), 'ledger_amount', '3');
          const b = await startPlan(h.client, h.config, mover);
          await filled.passed; // exchange 2, ledger 3: the mover holds the symbol, its fill not yet recorded
          await a.handle.signal(retrySignal, { by: 'ops' });
          // The look saw 2 against 3 while the mover held the symbol: it does not keep the plan blocked.
          await eventually(
            () => timelineHas(a.handle, 'positions disagree while they may be moving'),
            20_000,
            'the look to be made again at the plan’s turn',
          );
          expect((await a.handle.query(statusQuery)).stage).toBe('blocked');
          recorded.open();
          // The mover writes the ledger and lets go; the plan, first in line, looks holding the symbol: 2 and 2.
          return await Promise.all([a.handle.result(), b.handle.result()]);
        } finally {
          recorded.open();
        }
      },
      undefined,
      { exchange },
    );
    expect(finals.map((f) => f.outcome)).toEqual(['executed', 'executed']);
    const lines = finals[0]?.timeline.map((t) => t.detail) ?? [];
    expect(lines).toContain(
      `positions disagree while they may be moving (${mover.plan_id} holds LINKUSDT): looking again at this plan's turn on LINKUSDT`,
    );
    expect(lines).toContain(`in line for LINKUSDT to look at the positions: plan ${mover.plan_id} holds it, 0 ahead`);
    expect(lines).toContain('positions agree again: exchange 2, ledger 2');
    expect(await amounts('LINKUSDT')).toEqual({ exchange: '1', ledger: '1' });
    expect(await h.redis.exists(h.keys.symbolLock('LINKUSDT'), h.keys.symbolLine('LINKUSDT'))).toBe(0);
  });

  it('keeps a wake that comes while it looks: the change it tells of is looked at next, not at the fallback look', async () => {
    // Regular activities: a signal reaches the plan while its look still runs, in a workflow task of its own.
    const regular = testConfig({ LAYER_ACTIVITIES: 'regular', KEY_PREFIX: h.config.keyPrefix });
    await setPositions(h, 'AVAXUSDT', '3', '2');
    const plan = makePlan({ symbol: 'AVAXUSDT', qty: '1' });
    const read = gate();
    const answer = gate();
    let holdNextRead = false;
    const paper = createPaperExchange(h.redis, h.keys, Date.now);
    // The look reads the exchange (3), then waits before it answers.
    const exchange: ExchangePort = {
      ...paper,
      async getPosition(symbol) {
        const amount = await paper.getPosition(symbol);
        if (holdNextRead) {
          holdNextRead = false;
          read.open();
          await answer.passed;
        }
        return amount;
      },
    };
    const final = await h.withWorker(
      async () => {
        try {
          const { workflowId, handle } = await startPlan(h.client, regular, plan);
          await waitForStage(h, workflowId, 'blocked'); // exchange 3, ledger 2
          holdNextRead = true;
          await handle.signal(retrySignal, { by: 'ops' });
          await read.passed;
          // Meanwhile the exchange comes to the ledger's amount (a trade by hand), and the watcher would say so.
          await h.redis.hset(h.keys.paperPosition('AVAXUSDT'), 'amount', '2');
          await handle.signal(positionsChangedSignal);
          await eventually(
            async () => {
              const events = (await handle.fetchHistory()).events ?? [];
              const at = events.findIndex(
                (e) => e.workflowExecutionSignaledEventAttributes?.signalName === positionsChangedSignal.name,
              );
              return at >= 0 && events.slice(at).some((e) => e.workflowTaskCompletedEventAttributes) ? true : undefined;
            },
            20_000,
            'the plan to take in the position change while it looks',
          );
          answer.open(); // the look answers 3 against 2: still blocked, by what it read
          await eventually(
            async () => ((await handle.query(statusQuery)).stage === 'done' ? true : undefined),
            20_000,
            'the plan to look again at once (the fallback look is 300 s away)',
          );
          return await handle.result();
        } finally {
          answer.open();
        }
      },
      undefined,
      { config: regular, exchange },
    );
    expect(final.outcome).toBe('executed');
    expect(final.timeline.map((t) => t.detail)).toContain('positions agree again: exchange 2, ledger 2');
    expect(await amounts('AVAXUSDT')).toEqual({ exchange: '1', ledger: '1' });
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
  it('admits, takes the turn and asks for the permit in one local activity, with no patch marker', async () => {
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
    // One way through the workflow: deploys are versioned builds, not patches.
    expect(patches).toEqual([]);
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
