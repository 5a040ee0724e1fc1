import { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import { createActivities } from '../../activities';
import { createPaperExchange } from '../../activities/exchange/paper';
import { startPlan } from '../../lib/chain-client';
import { redisKeys } from '../../lib/keys';
import { registerSearchAttributes } from '../../lib/search-attributes';
import { testServerExecutable } from '../../lib/servers';
import { retrySignal, statusQuery } from '../../workflows/messages';
import { auditOf, makePlan, quietRuntime, setPositions, testConfig } from '../helpers';

/**
 * The chain's timers at their real lengths (TTL 60 s, margin 5 s, re-check 30 s; plan age 10 min), on the
 * time-skipping test server: ten minutes of a blocked plan pass in a few seconds. The activities still talk to the
 * real Redis.
 */
const config = testConfig({ PLAN_MAX_AGE_S: '600' });
const keys = redisKeys(config.keyPrefix);
let env: TestWorkflowEnvironment;
let redis: Redis;

beforeAll(async () => {
  quietRuntime();
  env = await TestWorkflowEnvironment.createTimeSkipping({ server: { executable: testServerExecutable() } });
  await registerSearchAttributes(env.connection, 'default');
  redis = new Redis(config.redisUrl);
});
afterAll(async () => {
  redis.disconnect();
  await env?.teardown();
});

async function withWorker<T>(fn: () => Promise<T>): Promise<T> {
  const exchange = createPaperExchange(redis, keys, Date.now);
  const worker = await Worker.create({
    connection: env.nativeConnection,
    taskQueue: config.taskQueue,
    workflowBundle: { codePath: inject('workflowBundlePath') },
    activities: createActivities({ redis, config, exchange, clock: Date.now }),
  });
  return worker.runUntil(fn);
}

describe('permitChain with time skipping', () => {
  it('re-issues the permit while blocked and ends expired after PLAN_MAX_AGE_S', async () => {
    await setPositions({ redis, keys }, 'XRPUSDT', '100', '90');
    const plan = makePlan({ symbol: 'XRPUSDT', qty: '10' });
    const final = await withWorker(async () => {
      const { handle } = await startPlan(env.client, config, plan);
      return handle.result();
    });
    expect(final.outcome).toBe('expired');
    expect(final.p33?.reason).toBe('reconcile_required_qty_mismatch');
    // A permit lives 55 s for the chain (60 s less the 5 s margin); re-checks every 30 s notice it has run out, so
    // each permit serves 60 s of blocking: ten minutes blocked ask the Governor 10 times.
    expect(final.attempts).toBe(10);
    const governor = (await auditOf({ redis, keys }, plan.plan_id)).filter(([layer]) => layer === 'governor');
    expect(governor).toHaveLength(final.attempts);
    expect(await redis.exists(keys.execution(plan.plan_id))).toBe(0);
  });

  it('asks the Governor again when retried after its permit expired, then executes', async () => {
    await setPositions({ redis, keys }, 'ADAUSDT', '50', '40');
    const plan = makePlan({ symbol: 'ADAUSDT', qty: '50' });
    const final = await withWorker(async () => {
      const { handle } = await startPlan(env.client, config, plan);
      await env.sleep('10s');
      const blocked = await handle.query(statusQuery);
      expect(blocked.stage).toBe('blocked');
      expect(blocked.attempts).toBe(1);
      await env.sleep('70s');
      await redis.hset(keys.position('ADAUSDT'), 'ledger_amount', '50');
      await handle.signal(retrySignal, { by: 'ops' });
      return handle.result();
    });
    expect(final.outcome).toBe('executed');
    expect(final.attempts).toBe(2);
    expect(await redis.hget(keys.position('ADAUSDT'), 'ledger_amount')).toBe('0');
  });
});
