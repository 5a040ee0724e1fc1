import type { Client } from '@temporalio/client';
import type { Redis } from 'ioredis';
import { exchangeFor } from '../activities/exchange';
import { formatDec } from '../lib/decimal';
import { connectTemporal, startPlan } from '../client/plans';
import type { ChainConfig } from '../lib/config';
import { closeOnFailure, connectRedis } from '../lib/connections';
import { redisKeys } from '../contract/keys';
import { parsePlan } from '../lib/plan';
import type { ChainStatus } from '../contract/types';
import { retrySignal, statusQuery } from '../contract/messages';
import type { permitChain } from '../workflows';
import type { Output } from './output';

const SYMBOL = 'BTCUSDT';
const EXCHANGE_AMOUNT = '0.062';
const STALE_LEDGER_AMOUNT = '0.002';
/** The demo waits this long for each step; the chain itself takes milliseconds. */
const STEP_TIMEOUT_MS = 60_000;

async function waitForStatus(
  client: Client,
  workflowId: string,
  done: (status: ChainStatus) => boolean,
): Promise<ChainStatus> {
  const handle = client.workflow.getHandle(workflowId);
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  for (;;) {
    const status = await handle.query(statusQuery);
    if (done(status)) return status;
    if (Date.now() > deadline) throw new Error(`demo: plan stuck in stage ${status.stage} for ${STEP_TIMEOUT_MS} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface DemoResult {
  plan_id: string;
  workflow_id: string;
  outcome: string | undefined;
  exchange_amount: string | null;
  ledger_amount: string | null;
  /** Submit → blocked: Governor, Apply and P3.3's denial. */
  first_pass_ms: number;
  /** The ledger fixed → executed: the position watcher wakes the plan, which asks again and executes. */
  fix_to_executed_ms: number;
  /** Whether the plan needed a `retry` (no position watcher woke it within WATCHER_GRACE_MS). */
  retried: boolean;
}

/** Where the demo sets the exchange's side of the incident: it never trades anywhere real. */
interface DemoVenue {
  name: string;
  setPosition(symbol: string, amount: string): Promise<void>;
  /** The command a person would type to do the same. */
  shown(symbol: string, amount: string): string;
}

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);

/**
 * The paper exchange (a Redis hash), or the Binance double (its control endpoint, on this machine only). Any other
 * exchange would be a real one, where the demo's order would be a real trade: refused.
 */
async function demoVenue(config: ChainConfig, redis: Redis): Promise<DemoVenue> {
  const keys = redisKeys(config.keyPrefix);
  if (config.exchange === 'paper') {
    return {
      name: 'paper',
      setPosition: async (symbol, amount) => void (await redis.hset(keys.paperPosition(symbol), 'amount', amount)),
      shown: (symbol, amount) => `redis-cli HSET ${keys.paperPosition(symbol)} amount ${amount}`,
    };
  }
  const base = config.binance?.baseUrl ?? '';
  const refusal =
    `demo: EXCHANGE=${config.exchange} at ${base || '(no BINANCE_BASE_URL)'} is not the Binance double on this ` +
    `machine: the demo's order would be a real trade. Run it on paper, or with \`permit-chain dev --exchange binance-double\``;
  const url = URL.canParse(base) ? new URL(base) : undefined;
  if (!url || !LOOPBACK_HOSTS.has(url.hostname)) throw new Error(refusal);
  const ping = await fetch(`${base}/double/v1/ping`).catch(() => undefined);
  if (!ping?.ok) throw new Error(refusal);
  return {
    name: `the Binance double at ${base}`,
    async setPosition(symbol, amount) {
      const query = new URLSearchParams({ symbol, amount });
      const answer = await fetch(`${base}/double/v1/position?${query.toString()}`, { method: 'POST' });
      if (!answer.ok) throw new Error(`demo: the double refused the position: ${await answer.text()}`);
    },
    shown: (symbol, amount) => `curl -X POST '${base}/double/v1/position?symbol=${symbol}&amount=${amount}'`,
  };
}

/** How long the demo gives the position watcher before it retries the plan itself, as an operator would. */
const WATCHER_GRACE_MS = 5_000;

/**
 * The existing system's reported incident, on the running stack: exchange 0.062 BTC, ledger 0.002, a reduce-only
 * SELL 0.062 → P3.3 denies `reconcile_required_qty_mismatch` → the ledger is set to 0.062 (the desk's one command)
 * → the position watcher wakes the plan → executed, and the exchange and the ledger are both 0.
 */
export async function runDemo(config: ChainConfig, out: Output): Promise<DemoResult> {
  const keys = redisKeys(config.keyPrefix);
  const redis = await connectRedis(config);
  const client = await connectTemporal(config).catch(closeOnFailure(redis));
  try {
    const venue = await demoVenue(config, redis);
    out.line(
      `1. the incident: exchange (${venue.name}) holds ${EXCHANGE_AMOUNT} ${SYMBOL}, the ledger says ${STALE_LEDGER_AMOUNT}`,
    );
    out.line(`   ${venue.shown(SYMBOL, EXCHANGE_AMOUNT)}`);
    out.line(`   redis-cli HSET ${keys.position(SYMBOL)} ledger_amount ${STALE_LEDGER_AMOUNT}`);
    await venue.setPosition(SYMBOL, EXCHANGE_AMOUNT);
    await redis.hset(keys.position(SYMBOL), 'ledger_amount', STALE_LEDGER_AMOUNT, 'updated_at', String(Date.now()));

    const plan = parsePlan({
      action: 'EXECUTE',
      symbol: SYMBOL,
      side: 'SELL',
      qty: EXCHANGE_AMOUNT,
      reduce_only: true,
      source: 'demo',
      reason: 'exit monitor: close position',
      created_at: Date.now(),
    });
    const submittedAt = Date.now();
    const { workflowId } = await startPlan(client, config, plan);
    out.line(
      `2. plan SELL ${EXCHANGE_AMOUNT} ${SYMBOL} reduce-only submitted: plan ${plan.plan_id}, workflow ${workflowId}`,
    );

    const blocked = await waitForStatus(client, workflowId, (s) => s.stage === 'blocked' || s.stage === 'done');
    const firstPassMs = Date.now() - submittedAt;
    if (blocked.stage !== 'blocked')
      throw new Error(`demo: expected the plan to be blocked, it ended ${blocked.outcome}`);
    out.line(
      `3. Governor granted, Apply published ${blocked.apply?.stream_id}, P3.3 denied: ${blocked.p33?.reason} ` +
        `(exchange ${blocked.p33?.exchange_amount} vs ledger ${blocked.p33?.ledger_amount}, tolerance ${blocked.p33?.tolerance}) in ${firstPassMs} ms`,
    );

    out.line(
      `4. the operator reconciles the ledger: redis-cli HSET ${keys.position(SYMBOL)} ledger_amount ${EXCHANGE_AMOUNT}`,
    );
    await redis.hset(keys.position(SYMBOL), 'ledger_amount', EXCHANGE_AMOUNT, 'updated_at', String(Date.now()));

    const fixedAt = Date.now();
    const handle = client.workflow.getHandle<typeof permitChain>(workflowId);
    const ended = handle.result();
    const woken = await Promise.race([
      ended.then(() => true),
      new Promise<false>((resolve) => setTimeout(() => resolve(false), WATCHER_GRACE_MS)),
    ]);
    if (woken) {
      out.line(`5. the position watcher wakes the plan: no retry needed`);
    } else {
      out.line(`5. no position watcher woke it: the operator retries, permit-chain retry ${plan.plan_id}`);
      await handle.signal(retrySignal, { by: 'demo' });
    }
    const final: ChainStatus = await ended;
    const fixMs = Date.now() - fixedAt;

    const [exchangeAmount, ledgerAmount] = await Promise.all([
      exchangeFor(config, redis)
        .getPosition(SYMBOL)
        .then((amount) => formatDec(amount)),
      redis.hget(keys.position(SYMBOL), 'ledger_amount'),
    ]);
    out.line(
      `6. ${final.outcome}: order ${final.execution?.order_id} ${final.execution?.status} ${final.execution?.filled_qty} @ ${final.execution?.avg_price} ` +
        `in ${fixMs} ms after the fix`,
    );
    const result: DemoResult = {
      plan_id: plan.plan_id,
      workflow_id: workflowId,
      outcome: final.outcome,
      exchange_amount: exchangeAmount,
      ledger_amount: ledgerAmount,
      first_pass_ms: firstPassMs,
      fix_to_executed_ms: fixMs,
      retried: !woken,
    };
    if (final.outcome !== 'executed')
      throw new Error(`demo: the plan ended ${final.outcome}: ${final.last_error ?? ''}`);
    out.result(`7. exchange ${exchangeAmount}, ledger ${ledgerAmount}: demo done`, result);
    return result;
  } finally {
    await client.connection.close();
    redis.disconnect();
  }
}
