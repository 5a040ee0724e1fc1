import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPaperExchange } from '../../activities/exchange/paper';
import { ExchangeUnknownError, type ExchangeOrder, type ExchangePort } from '../../activities/exchange/port';
import { createSymbolLine } from '../../activities/symbol-lock';
import { resetFailedPlan } from '../../client/operations';
import { startPlan, type StartedPlan } from '../../client/plans';
import { loadConfig } from '../../lib/config';
import { statusQuery, symbolFreeSignal } from '../../contract/messages';
import type { ChainStatus, Plan } from '../../contract/types';
import type { permitChain } from '../../workflows';
import { createLogger } from '../../lib/log';
import { LineSweeper } from '../../workers/line-sweep';
import { watchPlans } from '../../workers/gauges';
import { ChainMetrics } from '../../workers/metrics';
import { runCli } from '../../scripts/stack/cli-runner';
import { chainHarness, eventually, makePlan, setPositions, testEnv, waitForStage, type ChainHarness } from '../helpers';

/**
 * Plans Temporal terminates (`temporal workflow terminate`): the line sweep takes them out of their symbol's line and
 * hold within seconds, but keeps the hold of one terminated in Execute while its order may still reach the exchange;
 * `status` and `list` say they were terminated, and where.
 */
// A permit lives 10 s (the chain uses 8 of it); a hold's lease is 12 s: longer than the sweep may take.
const env = testEnv({ PERMIT_TTL_S: '10', PERMIT_MARGIN_S: '2' });
let h: ChainHarness;
beforeAll(async () => {
  h = await chainHarness(loadConfig(env));
});
afterAll(() => h.close());

/** A promise and the function that resolves it. */
function gate(): { passed: Promise<void>; open: () => void } {
  let open!: () => void;
  const passed = new Promise<void>((resolve) => (open = resolve));
  return { passed, open };
}

/**
 * The paper exchange, with what a test holds: positions read only once `positions` opens (while `holdPositions`),
 * orders that stay open on the exchange (`openOrders`: NEW until the test sets them final), or orders that stay on
 * the wire (never answered until `wire` opens).
 */
function heldExchange() {
  const paper = createPaperExchange(h.redis, h.keys, Date.now);
  const positions = gate();
  const wire = gate();
  const state = {
    holdPositions: false,
    mode: 'fill' as 'fill' | 'open' | 'wire',
    openOrders: new Map<string, ExchangeOrder>(),
  };
  const exchange: ExchangePort = {
    ...paper,
    async getPosition(symbol) {
      if (state.holdPositions) await positions.passed;
      return paper.getPosition(symbol);
    },
    async findOrder(symbol, clientOrderId) {
      return state.openOrders.get(clientOrderId) ?? paper.findOrder(symbol, clientOrderId);
    },
    async placeMarketOrder(request) {
      if (state.mode === 'wire') {
        await wire.passed;
        throw new ExchangeUnknownError('test: the answer never came', 1000);
      }
      if (state.mode === 'open') {
        state.openOrders.set(request.clientOrderId, {
          order_id: `held-${request.clientOrderId}`,
          client_order_id: request.clientOrderId,
          symbol: request.symbol,
          side: request.side,
          qty: request.qty,
          reduce_only: request.reduceOnly,
          status: 'NEW',
          filled_qty: '0',
          avg_price: '0',
          placed_at: Date.now(),
        });
        throw new ExchangeUnknownError(`test: order ${request.clientOrderId} is open`, 1000);
      }
      return paper.placeMarketOrder(request);
    },
  };
  return { exchange, state, positions, wire };
}

function sweeper(
  exchange: ExchangePort,
  receiveWindowMs?: number,
): { sweep: LineSweeper; lines: string[]; ended: string[] } {
  const lines: string[] = [];
  const ended: string[] = [];
  const sweep = new LineSweeper({
    redis: h.redis,
    client: h.client,
    config: h.config,
    exchange,
    log: (line) => lines.push(line),
    onEnded: (role) => ended.push(role),
    ...(receiveWindowMs !== undefined ? { receiveWindowMs } : {}),
  });
  sweep.start();
  return { sweep, lines, ended };
}

/** Waits until the plan stands in its symbol's line. */
async function inLine(plan: Plan): Promise<void> {
  await eventually(
    async () => ((await h.redis.zscore(h.keys.symbolLine(plan.symbol), plan.plan_id)) !== null ? true : undefined),
    20_000,
    `plan ${plan.plan_id} in line`,
  );
}

async function terminate(started: StartedPlan, why: string): Promise<number> {
  await h.client.workflow.getHandle(started.workflowId).terminate(why);
  return Date.now();
}

describe('the line sweep', () => {
  it('drops a terminated waiter within 2 s: the plan behind it gets the symbol when it is let go', async () => {
    await setPositions(h, 'ADAUSDT', '2', '2');
    const [dead, next] = [makePlan({ symbol: 'ADAUSDT', qty: '1' }), makePlan({ symbol: 'ADAUSDT', qty: '1' })];
    const line = createSymbolLine(h.redis, h.config.keyPrefix, Date.now);
    const operator = { plan_id: 'reconcile-test', symbol: 'ADAUSDT' };
    expect((await line.holdSymbol(operator, 60_000)).held).toBe(true);
    const { exchange } = heldExchange();
    const { sweep } = sweeper(exchange);
    try {
      const final = await h.withWorker(
        async () => {
          const a = await startPlan(h.client, h.config, dead);
          await inLine(dead);
          const b = await startPlan(h.client, h.config, next);
          await inLine(next);
          const at = await terminate(a, 'test: a waiter that died');
          await eventually(
            async () =>
              (await h.redis.zscore(h.keys.symbolLine('ADAUSDT'), dead.plan_id)) === null ? true : undefined,
            5_000,
            'the dead waiter dropped',
          );
          expect(Date.now() - at).toBeLessThan(2_000);
          // The operator lets go and wakes whom the line names first: the living plan, not the dead one.
          const first = await line.releaseSymbol(operator);
          expect(first).toBe(next.plan_id);
          await b.handle.signal(symbolFreeSignal);
          return b.handle.result();
        },
        undefined,
        { exchange },
      );
      expect(final.outcome).toBe('executed');
    } finally {
      sweep.stop();
    }
  });

  it('frees, within seconds, the symbol of a holder terminated before Execute; the next plan executes', async () => {
    await setPositions(h, 'DOTUSDT', '2', '2');
    const [dead, next] = [makePlan({ symbol: 'DOTUSDT', qty: '1' }), makePlan({ symbol: 'DOTUSDT', qty: '1' })];
    const held = heldExchange();
    held.state.holdPositions = true;
    const { sweep, lines } = sweeper(held.exchange);
    try {
      const { final, took } = await h.withWorker(
        async () => {
          try {
            const a = await startPlan(h.client, h.config, dead);
            await waitForStage(h, a.workflowId, 'p33'); // holding DOTUSDT, P3.3's exchange read held
            const b = await startPlan(h.client, h.config, next);
            await inLine(next);
            const at = await terminate(a, 'test: a holder that died');
            held.positions.open();
            const result = await b.handle.result();
            return { final: result, took: Date.now() - at };
          } finally {
            held.positions.open();
          }
        },
        undefined,
        { exchange: held.exchange },
      );
      expect(final.outcome).toBe('executed');
      // The hold's lease was 12 s: the sweep, not the lease, let the next plan in.
      expect(took).toBeLessThan(6_000);
      expect(lines).toContainEqual(
        expect.stringMatching(
          new RegExp(
            `plan ${dead.plan_id} \\(terminated\\) held DOTUSDT: closed in stage \\w+, before any order: symbol freed`,
          ),
        ),
      );
    } finally {
      sweep.stop();
    }
  });

  it('keeps the symbol of a plan terminated mid-Execute while its order is open, and frees it once it is final', async () => {
    await setPositions(h, 'XRPUSDT', '2', '2');
    const [dead, next] = [makePlan({ symbol: 'XRPUSDT', qty: '1' }), makePlan({ symbol: 'XRPUSDT', qty: '1' })];
    const held = heldExchange();
    held.state.mode = 'open';
    const { sweep, lines } = sweeper(held.exchange);
    try {
      const final = await h.withWorker(
        async () => {
          const a = await startPlan(h.client, h.config, dead);
          await eventually(
            () => Promise.resolve(held.state.openOrders.has(dead.plan_id) ? true : undefined),
            20_000,
            'order',
          );
          const permit = (await a.handle.query(statusQuery)).governor;
          if (!permit) throw new Error('no permit');
          held.state.mode = 'fill';
          const b = await startPlan(h.client, h.config, next);
          await inLine(next);
          await terminate(a, 'test: killed mid-Execute');
          // Past the permit's end and the hold's lease (12 s from its take): still held, the order is open.
          const leaseEnd = permit.issued_at + 12_000;
          await new Promise((r) => setTimeout(r, Math.max(0, leaseEnd + 2_000 - Date.now())));
          expect(await h.redis.get(h.keys.symbolLock('XRPUSDT'))).toBe(dead.plan_id);
          expect((await b.handle.query(statusQuery)).stage).toBe('governor');
          const order = held.state.openOrders.get(dead.plan_id);
          if (!order) throw new Error('no order');
          held.state.openOrders.set(dead.plan_id, { ...order, status: 'EXPIRED' });
          const at = Date.now();
          const result = await b.handle.result();
          expect(Date.now() - at).toBeLessThan(5_000);
          return result;
        },
        undefined,
        { exchange: held.exchange },
      );
      expect(final.outcome).toBe('executed');
      expect(lines).toContain(
        `line sweep: plan ${dead.plan_id} (terminated) held XRPUSDT: closed in Execute, its order is NEW: kept`,
      );
      expect(lines).toContain(
        `line sweep: plan ${dead.plan_id} (terminated) held XRPUSDT: closed in Execute, its order is EXPIRED on the exchange: symbol freed`,
      );
    } finally {
      sweep.stop();
    }
  });

  it('keeps the symbol of a plan terminated with its order on the wire until its permit’s end plus the receive window', async () => {
    await setPositions(h, 'LTCUSDT', '2', '2');
    const [dead, next] = [makePlan({ symbol: 'LTCUSDT', qty: '1' }), makePlan({ symbol: 'LTCUSDT', qty: '1' })];
    const held = heldExchange();
    held.state.mode = 'wire';
    const receiveWindowMs = 6_000;
    const { sweep } = sweeper(held.exchange, receiveWindowMs);
    try {
      const { final, permitEnd, tookAt } = await h.withWorker(
        async () => {
          try {
            const a = await startPlan(h.client, h.config, dead);
            await waitForStage(h, a.workflowId, 'execute');
            const permit = (await a.handle.query(statusQuery)).governor;
            if (!permit) throw new Error('no permit');
            const b = await startPlan(h.client, h.config, next);
            await inLine(next);
            await terminate(a, 'test: killed with its order on the wire');
            // The lease (12 s from the take) ends about 2 s after the permit; the hold lasts 6 s after it.
            await new Promise((r) => setTimeout(r, Math.max(0, permit.expires_at + 4_000 - Date.now())));
            expect(await h.redis.get(h.keys.symbolLock('LTCUSDT'))).toBe(dead.plan_id);
            held.state.mode = 'fill';
            const result = await b.handle.result();
            const took = result.timeline.find(
              (t) => t.stage === 'governor' && t.detail.startsWith('asked the Governor'),
            );
            return { final: result, permitEnd: permit.expires_at, tookAt: took?.at ?? 0 };
          } finally {
            held.wire.open();
          }
        },
        undefined,
        { exchange: held.exchange },
      );
      expect(final.outcome).toBe('executed');
      expect(tookAt).toBeGreaterThanOrEqual(permitEnd + receiveWindowMs);
      expect(tookAt).toBeLessThan(permitEnd + receiveWindowMs + 4_000);
    } finally {
      sweep.stop();
    }
  });

  it('drops hundreds of terminated waiters at once: a new plan does not wait behind them', async () => {
    await setPositions(h, 'BNBUSDT', '2', '2');
    const line = createSymbolLine(h.redis, h.config.keyPrefix, Date.now);
    const operator = { plan_id: 'reconcile-bulk', symbol: 'BNBUSDT' };
    expect((await line.holdSymbol(operator, 120_000)).held).toBe(true);
    const dead = Array.from({ length: 200 }, () => makePlan({ symbol: 'BNBUSDT', qty: '1' }));
    const fresh = makePlan({ symbol: 'BNBUSDT', qty: '1' });
    const { exchange } = heldExchange();
    let sweep: ReturnType<typeof sweeper> | undefined;
    const { final, took } = await h
      .withWorker(
        async () => {
          const started = await Promise.all(dead.map((plan) => startPlan(h.client, h.config, plan)));
          await eventually(
            async () => ((await h.redis.zcard(h.keys.symbolLine('BNBUSDT'))) === dead.length ? true : undefined),
            60_000,
            'every plan in line',
          );
          await Promise.all(started.map((s) => terminate(s, 'test: batch terminate')));
          // The operator lets go without waking anyone, like a holder that died: only the sweep can clear the line.
          await line.releaseSymbol(operator);
          const at = Date.now();
          const b = await startPlan(h.client, h.config, fresh);
          sweep = sweeper(exchange);
          const result = await b.handle.result();
          return { final: result, took: Date.now() - at };
        },
        undefined,
        { exchange },
      )
      .finally(() => sweep?.sweep.stop());
    expect(final.outcome).toBe('executed');
    expect(took).toBeLessThan(8_000);
    expect(await h.redis.zcard(h.keys.symbolLine('BNBUSDT'))).toBe(0);
    expect(sweep?.ended).toEqual(Array(dead.length).fill('waiter'));
    expect(sweep?.lines).toContain(`line sweep: dropped ${dead.length} closed plan(s) from BNBUSDT's line`);
    // Neither holder nor line: a sweep takes the symbol out of its register.
    await sweep?.sweep.sweep();
    expect(await h.redis.sismember(h.keys.symbolLines, 'BNBUSDT')).toBe(0);
  });

  it('keeps a plan run again by a reset in its line: its earlier run is closed, its latest runs', async () => {
    await setPositions(h, 'FILUSDT', '1', 'garbage');
    const plan = makePlan({ symbol: 'FILUSDT', qty: '1' });
    const line = createSymbolLine(h.redis, h.config.keyPrefix, Date.now);
    const operator = { plan_id: 'reconcile-reset', symbol: 'FILUSDT' };
    const { exchange } = heldExchange();
    const { sweep, ended } = sweeper(exchange);
    try {
      const final = await h.withWorker(
        async () => {
          const { handle, workflowId } = await startPlan(h.client, h.config, plan);
          expect((await handle.result()).outcome).toBe('failed'); // P3.3 cannot read the ledger
          await h.redis.hset(h.keys.position('FILUSDT'), 'ledger_amount', '1');
          expect((await line.holdSymbol(operator, 60_000)).held).toBe(true);
          await resetFailedPlan(h.client, h.redis, h.keys, plan.plan_id, 'test');
          await inLine(plan);
          // Visibility lists the failed run as closed; the sweep's describe reads the latest run, which waits.
          const closedRun = `WorkflowId = '${workflowId}' AND ExecutionStatus = 'Completed'`;
          await eventually(async () => ((await h.client.workflow.count(closedRun)).count === 1 ? true : undefined));
          await new Promise((r) => setTimeout(r, 3_000));
          expect(await h.redis.zscore(h.keys.symbolLine('FILUSDT'), plan.plan_id)).not.toBeNull();
          await line.releaseSymbol(operator);
          return h.client.workflow.getHandle<typeof permitChain>(workflowId).result();
        },
        undefined,
        { exchange },
      );
      expect(final.outcome).toBe('executed');
      expect(ended).toEqual([]);
    } finally {
      sweep.stop();
    }
  });

  it('wakes the first waiter of a symbol let go without a wake (its holder died), not at its 30 s refresh', async () => {
    await setPositions(h, 'AVAXUSDT', '2', '2');
    const waiter = makePlan({ symbol: 'AVAXUSDT', qty: '1' });
    const line = createSymbolLine(h.redis, h.config.keyPrefix, Date.now);
    const operator = { plan_id: 'reconcile-lost', symbol: 'AVAXUSDT' };
    expect((await line.holdSymbol(operator, 60_000)).held).toBe(true);
    const { exchange } = heldExchange();
    const { sweep } = sweeper(exchange);
    try {
      const { final, took } = await h.withWorker(
        async () => {
          const a = await startPlan(h.client, h.config, waiter);
          await inLine(waiter);
          await line.releaseSymbol(operator);
          const at = Date.now();
          const result = await a.handle.result();
          return { final: result, took: Date.now() - at };
        },
        undefined,
        { exchange },
      );
      expect(final.outcome).toBe('executed');
      expect(took).toBeLessThan(6_000);
    } finally {
      sweep.stop();
    }
  });
});

/** The terminated-plan gauges as a scrape reads them (a fresh registry each time: the gauges cache for 5 s). */
async function terminatedGauges(): Promise<{ terminated: number; inExecute: number }> {
  const metrics = new ChainMetrics({ processMetrics: false });
  watchPlans(metrics, h.client, h.config, createLogger({ level: 'error', format: 'json' }));
  const text = await metrics.text();
  const value = (name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
  return {
    terminated: value('permit_chain_plans_terminated'),
    inExecute: value('permit_chain_plans_terminated_in_execute'),
  };
}

describe('status and list of a terminated plan', () => {
  it('say terminated for a plan no worker ever ran: its stage from its search attributes, no order', async () => {
    const plan = makePlan({ symbol: 'SUIUSDT', qty: '1' });
    const started = await startPlan(h.client, h.config, plan); // no worker: its first workflow task never runs
    await terminate(started, 'test: before any worker');
    const run = await runCli(['status', plan.plan_id, '--json'], env);
    expect(run.code).toBe(0);
    const status = JSON.parse(run.stdout) as ChainStatus;
    expect(status).toMatchObject({ plan_id: plan.plan_id, stage: 'governor', attempts: 0 });
    expect(status.closed).toMatchObject({
      status: 'terminated',
      reason: 'test: before any worker',
      order_may_be_on_exchange: false,
      next_step: 'it placed no order (closed in stage governor); submit a new plan if the trade is still wanted',
    });
  });

  it('say terminated, the last stage, and for one terminated in Execute that its order may be on the exchange', async () => {
    await setPositions(h, 'TRXUSDT', '2', '2');
    const plan = makePlan({ symbol: 'TRXUSDT', qty: '1' });
    const waiting = makePlan({ symbol: 'TRXUSDT', qty: '1' });
    const held = heldExchange();
    held.state.mode = 'open';
    const before = await terminatedGauges();
    await h.withWorker(
      async () => {
        const a = await startPlan(h.client, h.config, plan);
        await eventually(
          () => Promise.resolve(held.state.openOrders.has(plan.plan_id) ? true : undefined),
          20_000,
          'order',
        );
        const b = await startPlan(h.client, h.config, waiting);
        await inLine(waiting);
        await terminate(a, 'test: operator terminated it');
        await terminate(b, 'test: operator terminated the waiter');

        const status = await runCli(['status', plan.plan_id], env);
        expect(status.stderr).toBe('');
        expect(status.code).toBe(0);
        const lines = status.stdout.split('\n');
        expect(lines[0]).toMatch(new RegExp(`^plan ${plan.plan_id}  stage execute  TERMINATED  mode testnet`));
        expect(status.stdout).toContain('terminated by Temporal during execute (test: operator terminated it)');
        expect(status.stdout).toContain('its order may be on the exchange');
        expect(status.stdout).toContain('permit-chain position TRXUSDT');

        const json = await runCli(['status', plan.plan_id, '--json'], env);
        const parsed = JSON.parse(json.stdout) as ChainStatus;
        expect(parsed.stage).toBe('execute');
        expect(parsed.closed).toMatchObject({
          status: 'terminated',
          reason: 'test: operator terminated it',
          order_may_be_on_exchange: true,
        });

        const other = await runCli(['status', waiting.plan_id, '--json'], env);
        expect((JSON.parse(other.stdout) as ChainStatus).closed).toMatchObject({
          status: 'terminated',
          order_may_be_on_exchange: false,
        });

        const list = await eventually(
          async () => {
            const run = await runCli(['list', '--symbol', 'TRXUSDT', '--json'], env);
            const rows = (JSON.parse(run.stdout) as { plans: { plan_id: string; outcome: string }[] }).plans;
            return rows.length === 2 && rows.every((row) => row.outcome === 'terminated') ? rows : undefined;
          },
          20_000,
          'both plans listed as terminated',
        );
        expect(list.map((row) => row.plan_id).sort()).toEqual([plan.plan_id, waiting.plan_id].sort());
        const text = await runCli(['list', '--symbol', 'TRXUSDT'], env);
        const row = text.stdout.split('\n').find((l) => l.startsWith(plan.plan_id)) ?? '';
        expect(row).toMatch(/TRXUSDT\s+execute\s+terminated/);
        expect(row).toContain('order may be on the exchange: permit-chain position TRXUSDT');
        const filtered = await runCli(['list', '--outcome', 'terminated', '--symbol', 'TRXUSDT', '--json'], env);
        expect((JSON.parse(filtered.stdout) as { plans: unknown[] }).plans).toHaveLength(2);

        // The gauges count this task queue's terminated plans, those in Execute apart.
        const after = await terminatedGauges();
        expect(after.terminated - before.terminated).toBe(2);
        expect(after.inExecute - before.inExecute).toBe(1);
      },
      undefined,
      { exchange: held.exchange },
    );
  });
});
