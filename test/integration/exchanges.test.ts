import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { binanceClientOrderId } from '../../activities/exchange';
import { startPlan } from '../../client/plans';
import { retrySignal, statusQuery } from '../../contract/messages';
import { loadConfig } from '../../lib/config';
import { Dec, formatDec } from '../../lib/decimal';
import type { ChainStatus, Plan } from '../../contract/types';
import {
  DEFAULT_SYMBOLS,
  startBinanceDouble,
  type BinanceDouble,
  type DoubleOrder,
  type Fault,
} from '../../scripts/binance-double/server';
import { runCli } from '../../scripts/stack/cli-runner';
import { seededRandom } from '../../scripts/stack/seeded-random';
import { chainHarness, eventually, makePlan, testEnv, waitForStage, type ChainHarness, type TestEnv } from '../helpers';

/**
 * The whole chain (real Temporal dev server, real Redis, a real worker) on each exchange it can trade on: the paper
 * exchange and Binance USD-M futures, here the double of its API (scripts/binance-double), over real HTTP, signed by
 * the connector and checked by the double as Binance checks. The same stories pass on both; the double's own
 * behaviours (trading rules, order states, faults) follow, then a load with faults injected at random.
 */

/** Ten symbols on the double: mark 100, step 0.001, min notional 5 (an opening order needs qty >= 0.05). */
const LOAD_SYMBOLS = Array.from({ length: 10 }, (_, i) => `L${String.fromCharCode(65 + i)}USDT`);
const DOUBLE_SYMBOLS = {
  ...DEFAULT_SYMBOLS,
  ...Object.fromEntries(
    LOAD_SYMBOLS.map((symbol) => [
      symbol,
      { stepSize: '0.001', minQty: '0.001', minNotional: '5', maxQty: '100000', markPrice: '100.00' },
    ]),
  ),
};

/** An exchange as these tests drive it: set its side of a position, read it back, count a plan's orders. */
interface Venue {
  setExchange(symbol: string, amount: string): Promise<void>;
  exchangeAmount(symbol: string): Promise<Dec>;
  ordersOf(plan: Plan): Promise<number>;
}

let double: BinanceDouble;

function doubleOrders(plan: Plan): DoubleOrder[] {
  const id = binanceClientOrderId(plan.plan_id);
  return double.orders().filter((order) => order.clientOrderId === id);
}

function doubleAmount(symbol: string): Dec {
  return double
    .positions()
    .filter((p) => p.symbol === symbol)
    .reduce((sum, p) => sum.add(p.positionAmt), new Dec(0));
}

function doubleEnv(): TestEnv {
  return testEnv({
    EXCHANGE: 'binance-usdm-testnet',
    BINANCE_BASE_URL: double.url,
    BINANCE_API_KEY: double.apiKey,
    BINANCE_API_SECRET: double.apiSecret,
    // Shorter than Binance's default, so that an unknown send is looked up again sooner.
    BINANCE_RECV_WINDOW_MS: '2000',
  });
}

const venues: { name: string; env: () => TestEnv; venue: (h: ChainHarness) => Venue }[] = [
  {
    name: 'paper',
    env: () => testEnv(),
    venue: (h) => ({
      setExchange: async (symbol, amount) => void (await h.redis.hset(h.keys.paperPosition(symbol), 'amount', amount)),
      exchangeAmount: async (symbol) => new Dec((await h.redis.hget(h.keys.paperPosition(symbol), 'amount')) ?? '0'),
      ordersOf: (plan) => h.redis.exists(h.keys.paperOrder(plan.plan_id)),
    }),
  },
  {
    name: 'the Binance double',
    env: doubleEnv,
    venue: () => ({
      setExchange: (symbol, amount) => Promise.resolve(double.setPosition(symbol, amount)),
      exchangeAmount: (symbol) => Promise.resolve(doubleAmount(symbol)),
      ordersOf: (plan) => Promise.resolve(doubleOrders(plan).length),
    }),
  },
];

beforeAll(async () => {
  double = await startBinanceDouble({ symbols: DOUBLE_SYMBOLS });
});
afterAll(() => double.stop());

describe.each(venues)('the chain on $name', (kind) => {
  let env: TestEnv;
  let venue: Venue;
  let h: ChainHarness;
  beforeAll(async () => {
    env = kind.env();
    h = await chainHarness(loadConfig(env));
    venue = kind.venue(h);
  });
  afterAll(() => h.close());

  async function positions(symbol: string, exchange: string, ledger: string): Promise<void> {
    await venue.setExchange(symbol, exchange);
    await h.redis.hset(h.keys.position(symbol), 'ledger_amount', ledger);
  }

  async function ledgerOf(symbol: string): Promise<Dec> {
    return new Dec((await h.redis.hget(h.keys.position(symbol), 'ledger_amount')) ?? 'NaN');
  }

  it("the desk's incident: blocked on the mismatch, executed once the ledger is fixed, one order", async () => {
    await positions('BTCUSDT', '0.062', '0.002');
    const plan = makePlan({ symbol: 'BTCUSDT', side: 'SELL', qty: '0.062', reduce_only: true });
    await h.withWorker(async () => {
      const { workflowId, handle } = await startPlan(h.client, h.config, plan);
      const blocked = await waitForStage(h, workflowId, 'blocked');
      expect(blocked.p33).toMatchObject({
        reason: 'reconcile_required_qty_mismatch',
        exchange_amount: '0.062',
        ledger_amount: '0.002',
      });
      await h.redis.hset(h.keys.position('BTCUSDT'), 'ledger_amount', '0.062');
      // The operator's retry (no position watcher runs beside this test's worker).
      await handle.signal(retrySignal, { by: 'ops' });
      const final = await handle.result();
      expect(final.outcome).toBe('executed');
      expect(final.execution).toMatchObject({ status: 'FILLED', filled_qty: '0.062', requested_qty: '0.062' });
    });
    expect(formatDec(await venue.exchangeAmount('BTCUSDT'))).toBe('0');
    expect(formatDec(await ledgerOf('BTCUSDT'))).toBe('0');
    expect(await venue.ordersOf(plan)).toBe(1);
  });

  it('a BUY that opens and a reduce-only SELL that closes: both executed, exchange == ledger', async () => {
    await positions('ETHUSDT', '0', '0');
    const buy = makePlan({ symbol: 'ETHUSDT', side: 'BUY', qty: '0.5', reduce_only: false });
    const sell = makePlan({ symbol: 'ETHUSDT', side: 'SELL', qty: '0.2', reduce_only: true });
    await h.withWorker(async () => {
      const first = await (await startPlan(h.client, h.config, buy)).handle.result();
      const second = await (await startPlan(h.client, h.config, sell)).handle.result();
      expect([first.outcome, second.outcome]).toEqual(['executed', 'executed']);
    });
    expect((await venue.exchangeAmount('ETHUSDT')).eq('0.3')).toBe(true);
    expect((await ledgerOf('ETHUSDT')).eq('0.3')).toBe(true);
    expect([await venue.ordersOf(buy), await venue.ordersOf(sell)]).toEqual([1, 1]);
  });

  it('a reduce-only order bigger than the position: P3.3 holds it back, no order reaches the exchange', async () => {
    await positions('ETHUSDT', '0.01', '0.01');
    const plan = makePlan({ symbol: 'ETHUSDT', side: 'SELL', qty: '0.02', reduce_only: true });
    await h.withWorker(async () => {
      const { workflowId, handle } = await startPlan(h.client, h.config, plan);
      const blocked = await waitForStage(h, workflowId, 'blocked');
      expect(blocked.p33).toMatchObject({ allow: false, reason: 'reduce_only_exceeds_position' });
      await handle.cancel();
      expect((await handle.result()).outcome).toBe('cancelled');
    });
    expect(await venue.ordersOf(plan)).toBe(0);
    expect((await venue.exchangeAmount('ETHUSDT')).eq('0.01')).toBe(true);
  });

  it('position and reconcile read the exchange through its port', async () => {
    await positions('ETHUSDT', '1.25', '1');
    await h.withWorker(async () => {
      const shown = await runCli(['position', 'ETHUSDT', '--json'], env);
      expect(JSON.parse(shown.stdout)).toMatchObject({
        symbol: 'ETHUSDT',
        exchange_amount: '1.25',
        ledger_amount: '1',
        within_tolerance: false,
      });
      const reconciled = await runCli(['reconcile', 'ETHUSDT', '--by', 'ops', '--yes', '--json'], env);
      expect(reconciled.code).toBe(0);
    });
    expect(formatDec(await ledgerOf('ETHUSDT'))).toBe('1.25');
  });
});

describe('the chain on the Binance double: its rules, its order states, its faults', () => {
  let h: ChainHarness;
  beforeAll(async () => {
    h = await chainHarness(loadConfig(doubleEnv()));
  });
  afterAll(() => h.close());

  async function positions(symbol: string, amount: string): Promise<void> {
    double.setPosition(symbol, amount);
    await h.redis.hset(h.keys.position(symbol), 'ledger_amount', amount);
  }

  async function run(plan: Plan): Promise<ChainStatus> {
    return h.withWorker(async () => (await startPlan(h.client, h.config, plan)).handle.result());
  }

  it('denies, by the rule broken, a plan Binance would refuse; never rounds it', async () => {
    await positions('BTCUSDT', '1');
    const offStep = await run(makePlan({ symbol: 'BTCUSDT', qty: '0.0625' }));
    expect(offStep.outcome).toBe('denied');
    expect(offStep.governor).toMatchObject({ granted: false, reason: 'qty_step_violation' });
    expect(offStep.timeline.at(-1)?.detail).toBe(
      'denied: Governor denied: qty_step_violation: qty 0.0625 is not a multiple of the step 0.001',
    );
    const small = await run(makePlan({ symbol: 'BTCUSDT', side: 'BUY', qty: '0.001', reduce_only: false }));
    expect(small.governor).toMatchObject({ granted: false, reason: 'below_min_notional' });
    const unlisted = await run(makePlan({ symbol: 'DOGEUSDT', qty: '1' }));
    expect(unlisted.governor).toMatchObject({ granted: false, reason: 'unknown_symbol' });
    expect(double.orders().filter((o) => o.symbol === 'DOGEUSDT' || o.origQty === '0.0625')).toEqual([]);
  });

  it('a response lost after the fill: one order, executed, exchange == ledger', async () => {
    await positions('ETHUSDT', '2');
    double.injectFault({ kind: 'lose-response-after-fill' });
    const plan = makePlan({ symbol: 'ETHUSDT', qty: '0.5' });
    const final = await run(plan);
    expect(final.outcome).toBe('executed');
    expect(doubleOrders(plan)).toHaveLength(1);
    expect(doubleAmount('ETHUSDT').eq('1.5')).toBe(true);
    expect(await h.redis.hget(h.keys.position('ETHUSDT'), 'ledger_amount')).toBe('1.5');
  });

  it('a partial fill: executed with its own detail, the ledger moved by what executed, exchange == ledger', async () => {
    await positions('ETHUSDT', '2');
    double.injectFault({ kind: 'partial-fill', fraction: 0.5 });
    const plan = makePlan({ symbol: 'ETHUSDT', qty: '0.5' });
    const final = await h.withWorker(async () => {
      const { handle } = await startPlan(h.client, h.config, plan);
      const status = await handle.result();
      const shown = await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata');
      expect(shown.currentDetails).toContain('partially filled: 0.25 of 0.5 @ 3000, then EXPIRED');
      return status;
    });
    expect(final.outcome).toBe('executed');
    expect(final.execution).toMatchObject({ status: 'EXPIRED', filled_qty: '0.25', requested_qty: '0.5' });
    expect(final.timeline.at(-1)?.detail).toMatch(/^executed: partially filled: 0\.25 of 0\.5 @ 3000, then EXPIRED;/);
    expect(doubleAmount('ETHUSDT').eq('1.75')).toBe(true);
    expect(await h.redis.hget(h.keys.position('ETHUSDT'), 'ledger_amount')).toBe('1.75');
    const audit = await h.redis.xrange(h.keys.auditStream, '-', '+');
    const ended = audit.map(([, f]) => f).find((f) => f.includes(plan.plan_id) && f.includes('partially_executed'));
    expect(ended).toBeDefined();
  });

  it('an order that expires unfilled: failed, nothing moved', async () => {
    await positions('ETHUSDT', '2');
    double.injectFault({ kind: 'expire' });
    const final = await run(makePlan({ symbol: 'ETHUSDT', qty: '0.5' }));
    expect(final.outcome).toBe('failed');
    expect(final.execution).toMatchObject({ status: 'EXPIRED', filled_qty: '0' });
    expect(doubleAmount('ETHUSDT').eq('2')).toBe(true);
    expect(await h.redis.hget(h.keys.position('ETHUSDT'), 'ledger_amount')).toBe('2');
  });

  it('429 on the order: the Execute activity waits Retry-After, says why, then places one order', async () => {
    await positions('ETHUSDT', '2');
    double.injectFault({ kind: 'rate-limit', status: 429, retryAfterS: 2, path: '/fapi/v1/order', method: 'POST' });
    const plan = makePlan({ symbol: 'ETHUSDT', qty: '0.5' });
    await h.withWorker(async () => {
      const { handle } = await startPlan(h.client, h.config, plan);
      const failure = await eventually(async () => {
        const pending = (await handle.describe()).raw.pendingActivities ?? [];
        return pending.find((a) => a.activityType?.name === 'executePlan')?.lastFailure?.message ?? undefined;
      });
      expect(failure).toMatch(/429/);
      expect((await handle.result()).outcome).toBe('executed');
    });
    expect(doubleOrders(plan)).toHaveLength(1);
  });
});

/** How long the load may take before the plans still running are reported as problems (it takes ~10 s). */
const LOAD_DEADLINE_MS = 120_000;

describe('100 plans on 10 symbols on the Binance double, every fault injected at random', () => {
  const SEED = Number(process.env.EXCHANGE_LOAD_SEED ?? 20261126);
  const START = '100';
  let h: ChainHarness;
  beforeAll(async () => {
    h = await chainHarness(loadConfig(doubleEnv()));
  });
  afterAll(() => h.close());

  it('ends with one order per executed plan, exchange == ledger on every symbol, no order on an expired permit', async () => {
    const random = seededRandom(SEED);
    for (const symbol of [...LOAD_SYMBOLS, 'BTCUSDT']) {
      const amount = symbol === 'BTCUSDT' ? '0.062' : START;
      double.setPosition(symbol, amount);
      await h.redis.hset(h.keys.position(symbol), 'ledger_amount', symbol === 'BTCUSDT' ? '0.002' : amount);
    }
    const ordersBefore = new Set(double.orders().map((o) => o.clientOrderId));
    const plans: Plan[] = LOAD_SYMBOLS.flatMap((symbol) =>
      Array.from({ length: 10 }, () => {
        const buy = random() < 0.5;
        const qty = formatDec(new Dec(Math.floor(50 + random() * 450)).div(1000)); // 0.05 .. 0.499
        return makePlan({ symbol, side: buy ? 'BUY' : 'SELL', qty, reduce_only: !buy });
      }),
    );
    const incident = makePlan({ symbol: 'BTCUSDT', side: 'SELL', qty: '0.062', reduce_only: true });

    // Five of each fault, in a seeded order, injected while the plans run.
    const kinds: Fault[] = [
      { kind: 'lose-response-after-fill' },
      { kind: 'http-5xx', status: 503, executed: true },
      { kind: 'http-5xx', status: 502 },
      { kind: 'rate-limit', status: 429, retryAfterS: 1 },
      { kind: 'timestamp' },
      { kind: 'partial-fill', fraction: 0.5 },
      { kind: 'expire' },
    ];
    const schedule = kinds.flatMap((fault) => Array.from({ length: 5 }, () => fault)).sort(() => random() - 0.5);
    const startedAt = Date.now();
    const finals = await h.withWorker(async () => {
      // The desk's incident first, in the same run: blocked, the ledger fixed, executed.
      const first = (await startPlan(h.client, h.config, incident)).handle;
      await waitForStage(h, `plan-${incident.plan_id}`, 'blocked');
      await h.redis.hset(h.keys.position('BTCUSDT'), 'ledger_amount', '0.062');
      await first.signal(retrySignal, { by: 'ops' });
      const incidentEnd = await first.result();
      // Then the load, with the faults injected while it runs.
      const handles = await Promise.all(plans.map(async (plan) => (await startPlan(h.client, h.config, plan)).handle));
      for (const fault of schedule) {
        await new Promise((r) => setTimeout(r, 20 + random() * 120));
        double.injectFault(fault);
      }
      // A plan still running at the deadline is reported as it stands, with the rest, rather than waited for.
      const deadline = Date.now() + LOAD_DEADLINE_MS;
      const ended = handles.map((handle) =>
        Promise.race([
          handle.result(),
          new Promise<void>((r) => setTimeout(r, Math.max(0, deadline - Date.now()))).then(() =>
            handle.query(statusQuery),
          ),
        ]),
      );
      return [incidentEnd, ...(await Promise.all(ended))];
    });
    const elapsedS = (Date.now() - startedAt) / 1000;

    const byId = new Map(finals.map((status) => [status.plan_id, status]));
    const orders = double.orders().filter((o) => !ordersBefore.has(o.clientOrderId));
    const problems: string[] = [];
    for (const plan of [incident, ...plans]) {
      const status = byId.get(plan.plan_id);
      const mine = orders.filter((o) => o.clientOrderId === binanceClientOrderId(plan.plan_id));
      if (mine.length > 1) problems.push(`${plan.plan_id}: ${mine.length} orders`);
      if (status?.outcome === 'executed') {
        if (mine.length !== 1) problems.push(`${plan.plan_id}: executed with ${mine.length} orders`);
        const expires = status.governor?.expires_at ?? 0;
        for (const order of mine) {
          if (order.time > expires) problems.push(`${plan.plan_id}: order at ${order.time}, permit ended ${expires}`);
        }
      } else if (!(status?.outcome === 'failed' && status.execution?.status === 'EXPIRED')) {
        // The only other ending is an order the double expired unfilled.
        problems.push(`${plan.plan_id}: ${status?.outcome ?? 'no outcome'} ${status?.last_error ?? ''}`);
      }
    }
    for (const symbol of [...LOAD_SYMBOLS, 'BTCUSDT']) {
      const exchange = doubleAmount(symbol);
      const ledger = new Dec((await h.redis.hget(h.keys.position(symbol), 'ledger_amount')) ?? 'NaN');
      const start = new Dec(symbol === 'BTCUSDT' ? '0.062' : START);
      const fills = orders
        .filter((o) => o.symbol === symbol)
        .reduce((sum, o) => (o.side === 'BUY' ? sum.add(o.executedQty) : sum.sub(o.executedQty)), new Dec(0));
      if (!exchange.eq(ledger) || !ledger.eq(start.add(fills))) {
        problems.push(
          `${symbol}: exchange ${formatDec(exchange)}, ledger ${formatDec(ledger)}, start + fills ${formatDec(start.add(fills))}`,
        );
      }
    }
    const label = (f: Fault) => `${f.kind}${'status' in f ? ` ${f.status}` : ''}${'executed' in f ? ' executed' : ''}`;
    const consumed = kinds.map((kind) => {
      const left = double.pendingFaults().filter((f) => JSON.stringify(f) === JSON.stringify(kind)).length;
      return [label(kind), 5 - left] as const;
    });
    const outcomes = Object.entries(
      finals.reduce<Record<string, number>>(
        (acc, s) => ({ ...acc, [s.outcome ?? '-']: (acc[s.outcome ?? '-'] ?? 0) + 1 }),
        {},
      ),
    );
    console.log(
      `exchange load (seed ${SEED}): ${finals.length} plans in ${elapsedS.toFixed(1)} s, outcomes ${outcomes.map(([o, n]) => `${o} ${n}`).join(', ')}, ` +
        `faults consumed ${consumed.map(([k, n]) => `${k} ${n}/5`).join(', ')}`,
    );
    expect(problems).toEqual([]);
    expect(byId.get(incident.plan_id)?.outcome).toBe('executed');
    // Every kind of fault met the chain at least once.
    for (const [kind, n] of consumed) expect(n, kind).toBeGreaterThan(0);
  }, 240_000);
});
