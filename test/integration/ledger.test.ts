import { ApplicationFailure } from '@temporalio/activity';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createActivities } from '../../activities';
import { createPaperExchange } from '../../activities/exchange/paper';
import { createGovernorActivities } from '../../activities/governor';
import type { ExchangePort } from '../../activities/exchange/port';
import { startPlan } from '../../client/plans';
import { loadConfig } from '../../lib/config';
import type { Plan } from '../../contract/types';
import { reconcileLedger, resetFailedPlan } from '../../client/operations';
import type { permitChain } from '../../workflows';
import { createChainWorker } from '../../workers/worker';
import { runCli } from '../../scripts/stack/cli-runner';
import { auditOf, chainHarness, makePlan, onceWritten, setPositions, testEnv, type ChainHarness } from '../helpers';

const env = testEnv();
let h: ChainHarness;
let exchange: ExchangePort;
let layers: ReturnType<typeof createActivities>;
let governor: ReturnType<typeof createGovernorActivities>;

beforeAll(async () => {
  h = await chainHarness(loadConfig(env));
  exchange = createPaperExchange(h.redis, h.keys, Date.now);
  const deps = { redis: h.redis, config: h.config, exchange, clock: Date.now, approverKeys: new Map() };
  layers = createActivities(deps);
  governor = createGovernorActivities(deps);
});
afterAll(() => h.close());

/** Both permits in place, as the Governor and P3.3 leave them for a plan that reaches Execute. */
async function permitted(symbol: string, fields: Record<string, unknown> = {}): Promise<Plan> {
  const plan = makePlan({ symbol, qty: '1', ...fields });
  const answer = await governor.requestPermit({ plan, at: Date.now() });
  expect(answer).toMatchObject({ kind: 'permit', permit: { granted: true } });
  expect(await layers.checkPosition(plan)).toMatchObject({ allow: true });
  return plan;
}

/** The paper exchange, except that `during` runs right after the order is placed: before Execute records its fill. */
function exchangeWith(during: () => Promise<unknown>): ExchangePort {
  return {
    ...exchange,
    async placeMarketOrder(request) {
      const order = await exchange.placeMarketOrder(request);
      await during();
      return order;
    },
  };
}

function executeOver(port: ExchangePort) {
  const over = createActivities({
    redis: h.redis,
    config: h.config,
    exchange: port,
    clock: Date.now,
    approverKeys: new Map(),
  });
  return (plan: Plan) => over.executePlan(plan);
}

async function amounts(symbol: string): Promise<{ exchange: string | null; ledger: string | null }> {
  const [exchangeAmount, ledger] = await Promise.all([
    h.redis.hget(h.keys.paperPosition(symbol), 'amount'),
    h.redis.hget(h.keys.position(symbol), 'ledger_amount'),
  ]);
  return { exchange: exchangeAmount, ledger };
}

/** The activity's failure as Temporal sees it: its type, whether it is retried, its message. */
async function failureOf(call: Promise<unknown>): Promise<{ type: string; nonRetryable: boolean; message: string }> {
  const err = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof ApplicationFailure)) throw new Error(`expected an ApplicationFailure, got ${String(err)}`);
  return { type: err.type ?? '', nonRetryable: err.nonRetryable === true, message: err.message };
}

async function temporalClient(): Promise<Client> {
  return new Client({ connection: await Connection.connect({ address: h.config.temporalAddress }) });
}

describe('Execute reads and validates before it places', () => {
  it.each([
    ['ledger', (symbol: string) => h.redis.hset(h.keys.position(symbol), 'ledger_amount', 'abc')],
    ['exchange position', (symbol: string) => h.redis.hset(h.keys.paperPosition(symbol), 'amount', 'abc')],
  ])('places no order on a corrupt %s, and says what to do', async (what, spoil) => {
    const symbol = what === 'ledger' ? 'BADLEDGERUSDT' : 'BADEXCHUSDT';
    await setPositions(h, symbol, '5', '5');
    const plan = await permitted(symbol);
    await spoil(symbol);
    const failure = await failureOf(layers.executePlan(plan));
    expect(failure).toMatchObject({ type: 'CorruptAmount', nonRetryable: true });
    expect(failure.message).toContain("is not a decimal number: 'abc'; no order was placed");
    expect(failure.message).toContain(`\`permit-chain retry ${plan.plan_id}\``);
    if (what === 'ledger') expect(failure.message).toContain(`\`permit-chain reconcile ${symbol} --by NAME\``);
    expect(await h.redis.exists(h.keys.paperOrder(plan.plan_id), h.keys.execution(plan.plan_id))).toBe(0);
    expect(await h.redis.hget(h.keys.paperPosition(symbol), 'amount')).toBe(what === 'ledger' ? '5' : 'abc');
  });
});

describe('a fill recorded while the ledger turned bad is counted exactly once', () => {
  /** SELL 1 from 5 on both sides; `during` runs between the order and the record of its fill. */
  async function placing(symbol: string, during: (plan: Plan) => Promise<unknown>) {
    await setPositions(h, symbol, '5', '5');
    const plan = await permitted(symbol);
    return { plan, execute: executeOver(exchangeWith(() => during(plan))) };
  }

  /** The ledger turns corrupt between the order and the record of its fill: the first call fails. */
  async function unappliedFill(symbol: string) {
    const { plan, execute } = await placing(symbol, () =>
      h.redis.hset(h.keys.position(symbol), 'ledger_amount', 'abc'),
    );
    return { plan, execute, first: await failureOf(execute(plan)) };
  }

  it('records the fill unapplied, and fails with what to do', async () => {
    const { plan, first } = await unappliedFill('FLIPUSDT');
    expect(first).toMatchObject({ type: 'CorruptAmount', nonRetryable: true });
    expect(first.message).toBe(
      `ledger_amount of FLIPUSDT is not a decimal number: 'abc'; the fill of plan ${plan.plan_id} (SELL 1 FLIPUSDT) ` +
        `is on the exchange but not in the ledger, which was 5 before it: run \`permit-chain reconcile FLIPUSDT ` +
        `--by NAME\` (the ledger becomes the exchange's amount, which includes the fill) or set ledger_amount to 4 ` +
        `(5 moved by the fill), then \`permit-chain retry ${plan.plan_id}\``,
    );
    expect(await amounts('FLIPUSDT')).toEqual({ exchange: '4', ledger: 'abc' });
    expect(await h.redis.hgetall(h.keys.execution(plan.plan_id))).toMatchObject({
      client_order_id: plan.plan_id,
      status: 'FILLED',
      filled_qty: '1',
      ledger_applied: '0',
      ledger_before: '5',
    });
    expect(await h.redis.smembers(h.keys.unappliedFills('FLIPUSDT'))).toEqual([plan.plan_id]);
    expect((await auditOf(h, plan.plan_id)).filter(([layer]) => layer === 'execute')).toEqual([
      [
        'execute',
        'fill_unapplied',
        'filled 1 @ 1, not in the ledger: ledger_amount was 5 before the order and changed before the fill was recorded',
      ],
    ]);
  });

  it.each([
    ['set back to its value before the fill', '5', '1', ['execute', 'fill_applied', 'filled 1 @ 1, ledger 5 -> 4']],
    [
      'set to the value after the fill',
      '4',
      'hand_set',
      ['execute', 'fill_already_in_ledger', 'filled 1 @ 1, already counted in ledger 4'],
    ],
  ])('applies it once when the ledger is %s', async (_case, handSet, applied, audit) => {
    const symbol = `HAND${handSet}USDT`;
    const { plan, execute } = await unappliedFill(symbol);
    await h.redis.hset(h.keys.position(symbol), 'ledger_amount', handSet);
    const results = await Promise.all([1, 2, 3].map(() => execute(plan)));
    expect(results.map((r) => r.placed && r.ledger_amount)).toEqual(['4', '4', '4']);
    expect(await execute(plan)).toEqual(results[0]);
    expect(await amounts(symbol)).toEqual({ exchange: '4', ledger: '4' });
    expect(await h.redis.hget(h.keys.execution(plan.plan_id), 'ledger_applied')).toBe(applied);
    expect(await h.redis.exists(h.keys.unappliedFills(symbol))).toBe(0);
    expect((await auditOf(h, plan.plan_id)).filter(([, decision]) => decision !== 'fill_unapplied').at(-1)).toEqual(
      audit,
    );
  });

  it('accounts for it in a reconcile, which then moves nothing more', async () => {
    const { plan, execute } = await unappliedFill('RECFLIPUSDT');
    const client = await temporalClient();
    try {
      const deps = { redis: h.redis, config: h.config, exchange, clock: Date.now, approverKeys: new Map() };
      const result = await reconcileLedger(deps, client, 'RECFLIPUSDT', 'alice');
      expect(result).toEqual({ before: "'abc'", after: '4', fills: [plan.plan_id], orders: [] });
      // Nothing left to account for: a second reconcile only writes the same amount.
      expect(await reconcileLedger(deps, client, 'RECFLIPUSDT', 'alice')).toEqual({
        before: '4',
        after: '4',
        fills: [],
        orders: [],
      });
    } finally {
      await client.connection.close();
    }
    expect(await h.redis.hget(h.keys.execution(plan.plan_id), 'ledger_applied')).toBe('reconcile');
    expect(await execute(plan)).toMatchObject({ placed: true, ledger_amount: '4' });
    expect(await execute(plan)).toMatchObject({ placed: true, ledger_amount: '4' });
    expect(await amounts('RECFLIPUSDT')).toEqual({ exchange: '4', ledger: '4' });
    expect(await auditOf(h, plan.plan_id)).toContainEqual([
      'operator',
      'fill_reconciled',
      "by alice: ledger set to the exchange's 4, which includes this fill",
    ]);
    const reconciles = (await h.redis.xrange(h.keys.auditStream, '-', '+'))
      .map(([, fields]) => fields)
      .filter((fields) => fields.includes('reconcile') && fields.some((f) => f.startsWith('RECFLIPUSDT')));
    expect(reconciles[0]).toContain(
      `RECFLIPUSDT ledger 'abc' -> 4 by alice; accounts for 1 unapplied fill(s): ${plan.plan_id}`,
    );
  });

  it('refuses to guess on any other ledger value, and names reconcile', async () => {
    const { plan, execute } = await unappliedFill('GUESSUSDT');
    await h.redis.hset(h.keys.position('GUESSUSDT'), 'ledger_amount', '7');
    const conflict = await failureOf(execute(plan));
    expect(conflict).toMatchObject({ type: 'LedgerConflict', nonRetryable: true });
    expect(conflict.message).toBe(
      `ledger_amount of GUESSUSDT is 7, neither 5 (before the fill) nor 4 (after it): not guessing which fills it ` +
        `counts; the fill of plan ${plan.plan_id} (SELL 1 GUESSUSDT) is on the exchange but not in the ledger, ` +
        `which was 5 before it: run \`permit-chain reconcile GUESSUSDT --by NAME\` (the ledger becomes the ` +
        `exchange's amount, which includes the fill) or set ledger_amount to 4 (5 moved by the fill), then ` +
        `\`permit-chain retry ${plan.plan_id}\``,
    );
    expect(await amounts('GUESSUSDT')).toEqual({ exchange: '4', ledger: '7' });
    const client = await temporalClient();
    try {
      const deps = { redis: h.redis, config: h.config, exchange, clock: Date.now, approverKeys: new Map() };
      expect((await reconcileLedger(deps, client, 'GUESSUSDT', 'bob')).fills).toEqual([plan.plan_id]);
    } finally {
      await client.connection.close();
    }
    expect(await execute(plan)).toMatchObject({ placed: true, ledger_amount: '4' });
    expect(await amounts('GUESSUSDT')).toEqual({ exchange: '4', ledger: '4' });
  });

  it('takes a hand-set value that already counts the fill, set while the order was being placed', async () => {
    const { plan, execute } = await placing('HANDRACEUSDT', () =>
      h.redis.hset(h.keys.position('HANDRACEUSDT'), 'ledger_amount', '4'),
    );
    expect(await execute(plan)).toMatchObject({ placed: true, ledger_amount: '4' });
    expect(await execute(plan)).toMatchObject({ placed: true, ledger_amount: '4' });
    expect(await amounts('HANDRACEUSDT')).toEqual({ exchange: '4', ledger: '4' });
    expect(await h.redis.hget(h.keys.execution(plan.plan_id), 'ledger_applied')).toBe('hand_set');
  });

  it('adds its fill to another plan’s equal fill that moved the ledger meanwhile, instead of taking it for its own', async () => {
    // Both plans hold their permits (a symbol lease that ran out lets two plans that far); the other one's whole
    // Execute runs while this one's order is being placed.
    await setPositions(h, 'TWOFILLSUSDT', '5', '5');
    const other = await permitted('TWOFILLSUSDT');
    const { plan, execute } = await placing('TWOFILLSUSDT', () => layers.executePlan(other));
    expect(await execute(plan)).toMatchObject({ placed: true, ledger_amount: '3' });
    expect(await layers.executePlan(other)).toMatchObject({ placed: true, ledger_amount: '3' });
    expect(await amounts('TWOFILLSUSDT')).toEqual({ exchange: '3', ledger: '3' });
    for (const p of [plan, other]) {
      expect(await h.redis.hget(h.keys.execution(p.plan_id), 'ledger_applied')).toBe('1');
    }
    // Its post-trade check saw this plan's order on the exchange and not yet in the ledger (3 vs 4), and said so.
    const otherAudit = (await auditOf(h, other.plan_id)).filter(([layer]) => layer === 'execute');
    expect(otherAudit.filter(([, decision]) => decision !== 'post_trade_mismatch')).toEqual([
      ['execute', 'executed', 'filled 1 @ 1'],
    ]);
    expect(otherAudit.find(([, decision]) => decision === 'post_trade_mismatch')?.[2]).toMatch(
      /^exchange 3 vs ledger 4/,
    );
  });

  it('records an order found after a crash even on a corrupt ledger, and a reconcile accounts for it', async () => {
    await setPositions(h, 'CRASHBADUSDT', '5', '5');
    const plan = await permitted('CRASHBADUSDT');
    // The worker placed the order and died; meanwhile the ledger turned corrupt.
    await exchange.placeMarketOrder({
      symbol: 'CRASHBADUSDT',
      side: 'SELL',
      qty: '1',
      reduceOnly: true,
      clientOrderId: plan.plan_id,
    });
    await h.redis.hset(h.keys.position('CRASHBADUSDT'), 'ledger_amount', 'abc');
    const failure = await failureOf(layers.executePlan(plan));
    expect(failure.type).toBe('CorruptAmount');
    expect(failure.message).toContain("the ledger's value before it is unknown ('abc'): run `permit-chain reconcile");
    expect(await h.redis.hget(h.keys.execution(plan.plan_id), 'ledger_applied')).toBe('0');
    // A hand-set value cannot be matched with a fill whose ledger before is unknown: only a reconcile settles it.
    await h.redis.hset(h.keys.position('CRASHBADUSDT'), 'ledger_amount', '4');
    expect((await failureOf(layers.executePlan(plan))).type).toBe('LedgerConflict');
    const client = await temporalClient();
    try {
      const deps = { redis: h.redis, config: h.config, exchange, clock: Date.now, approverKeys: new Map() };
      expect((await reconcileLedger(deps, client, 'CRASHBADUSDT', 'alice')).fills).toEqual([plan.plan_id]);
    } finally {
      await client.connection.close();
    }
    expect(await layers.executePlan(plan)).toMatchObject({ placed: true, ledger_amount: '4' });
    expect(await amounts('CRASHBADUSDT')).toEqual({ exchange: '4', ledger: '4' });
  });
});

describe('the issue’s race on the real dev server', () => {
  it('places nothing when the ledger turns bad right after P3.3; the documented fix then counts the fill once', async () => {
    await setPositions(h, 'RACEUSDT', '5', '5');
    const plan = makePlan({ symbol: 'RACEUSDT', side: 'SELL', qty: '1' });
    // Keyspace notifications reach this subscriber as P3.3's permit is written, long before Temporal has even
    // scheduled Execute (a workflow task and an activity task later): the flip lands in between every time.
    const flip = await onceWritten(h, h.keys.p33Permit(plan.plan_id), () =>
      h.redis.hset(h.keys.position('RACEUSDT'), 'ledger_amount', 'abc'),
    );
    try {
      await h.withWorker(async () => {
        const { handle } = await startPlan(h.client, h.config, plan);
        const failed = await handle.result();
        expect(flip.fired()).toBe(true);
        expect(failed.outcome).toBe('failed');
        expect(failed.last_error).toBe(
          `executePlan: ledger_amount of RACEUSDT is not a decimal number: 'abc'; no order was placed. Set it ` +
            `(\`redis-cli HSET ${h.keys.position('RACEUSDT')} ledger_amount AMOUNT\`) or run \`permit-chain ` +
            `reconcile RACEUSDT --by NAME\`, then \`permit-chain retry ${plan.plan_id}\``,
        );
        expect(await h.redis.exists(h.keys.paperOrder(plan.plan_id), h.keys.execution(plan.plan_id))).toBe(0);

        // The operator's fix: the ledger set by hand to what the exchange shows, then `permit-chain retry`.
        const shown = await h.redis.hget(h.keys.paperPosition('RACEUSDT'), 'amount');
        await h.redis.hset(h.keys.position('RACEUSDT'), 'ledger_amount', shown ?? '');
        const retry = await runCli(['retry', plan.plan_id, '--by', 'ops'], env);
        expect(retry.code).toBe(0);
        const rerun = await h.client.workflow.getHandle<typeof permitChain>(handle.workflowId).result();
        expect(rerun.outcome).toBe('executed');
      });
    } finally {
      flip.stop();
    }
    expect(await h.redis.exists(h.keys.paperOrder(plan.plan_id))).toBe(1);
    expect(await amounts('RACEUSDT')).toEqual({ exchange: '4', ledger: '4' });
  });

  it('fails with what to do when the ledger turns bad while the order is placed; hand-set and retry count it once', async () => {
    await setPositions(h, 'WINDOWUSDT', '5', '5');
    const plan = makePlan({ symbol: 'WINDOWUSDT', side: 'SELL', qty: '1' });
    let flips = 0;
    const port = exchangeWith(async () => {
      flips += 1;
      if (flips === 1) await h.redis.hset(h.keys.position('WINDOWUSDT'), 'ledger_amount', 'abc');
    });
    const connection = await NativeConnection.connect({ address: h.config.temporalAddress });
    try {
      const worker = await createChainWorker({
        config: h.config,
        redis: h.redis,
        connection,
        workflowBundle: { codePath: inject('workflowBundlePath') },
        exchange: port,
      });
      await worker.runUntil(async () => {
        const { handle } = await startPlan(h.client, h.config, plan);
        const failed = await handle.result();
        expect(failed.outcome).toBe('failed');
        expect(failed.last_error).toContain(
          `executePlan: ledger_amount of WINDOWUSDT is not a decimal number: 'abc'; the fill of plan ${plan.plan_id} ` +
            `(SELL 1 WINDOWUSDT) is on the exchange but not in the ledger, which was 5 before it: run ` +
            `\`permit-chain reconcile WINDOWUSDT --by NAME\``,
        );
        expect(await amounts('WINDOWUSDT')).toEqual({ exchange: '4', ledger: 'abc' });

        // The fix the message offers: the ledger set by hand to the value that counts the fill, then retry.
        await h.redis.hset(h.keys.position('WINDOWUSDT'), 'ledger_amount', '4');
        await resetFailedPlan(h.client, h.redis, h.keys, plan.plan_id, 'ops');
        const rerun = await h.client.workflow.getHandle<typeof permitChain>(handle.workflowId).result();
        expect(rerun.outcome).toBe('executed');
        expect(rerun.execution).toMatchObject({ client_order_id: plan.plan_id, filled_qty: '1' });
      });
    } finally {
      await connection.close();
    }
    expect(flips).toBe(1);
    expect(await amounts('WINDOWUSDT')).toEqual({ exchange: '4', ledger: '4' });
    expect(await h.redis.hget(h.keys.execution(plan.plan_id), 'ledger_applied')).toBe('hand_set');
  });
});
