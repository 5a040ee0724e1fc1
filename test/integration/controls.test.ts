import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPlan } from '../../client/plans';
import { loadConfig } from '../../lib/config';
import type { permitChain } from '../../workflows';
import { redisKeys } from '../../contract/keys';
import { statusQuery } from '../../contract/messages';
import { runCli, runCliOnTerminal } from '../../scripts/stack/cli-runner';
import {
  onceWritten,
  auditOf,
  chainHarness,
  eventually,
  makePlan,
  pairs,
  setPositions,
  testEnv,
  type ChainHarness,
  waitForStage,
} from '../helpers';

const env = testEnv();
let h: ChainHarness;
beforeAll(async () => {
  h = await chainHarness(loadConfig(env));
});
afterAll(() => h.close());

/** What the CLI printed, without the line naming the worker that answered. */
function withoutWorker(stdout: string): string {
  return stdout.replace(/^answered by worker .*\n/m, '');
}

async function blockedCount(symbol: string, expected: number): Promise<void> {
  await eventually(
    async () => {
      const run = await runCli(['list', '--stage', 'blocked', '--symbol', symbol, '--json', '--limit', '100'], env);
      const { plans } = JSON.parse(run.stdout) as { plans: unknown[] };
      return plans.length === expected ? true : undefined;
    },
    30_000,
    `${expected} blocked plans on ${symbol} in visibility`,
  );
}

describe('kill switch', () => {
  it('stops the order of a plan that already holds both permits', async () => {
    await setPositions(h, 'KILLUSDT', '2', '2');
    const plan = makePlan({ symbol: 'KILLUSDT', qty: '2' });
    // The risk desk pulls the switch the moment P3.3 has allowed the plan: it holds both permits, Execute is next.
    const pulled = await onceWritten(h, h.keys.p33Permit(plan.plan_id), () => h.redis.set(h.keys.killSwitch, '1'));
    try {
      await h.withWorker(async () => {
        const { handle } = await startPlan(h.client, h.config, plan);
        const final = await handle.result();
        expect(pulled.fired()).toBe(true);
        expect(final.outcome).toBe('denied');
        expect(final.governor?.reason).toBe('kill_switch_active');
      });
    } finally {
      pulled.stop();
    }
    const audit = await auditOf(h, plan.plan_id);
    expect(audit).toContainEqual(['p33', 'allowed', 'positions_reconciled']);
    expect(audit).toContainEqual(['execute', 'refused', 'kill_switch_active']);
    expect(audit.at(-1)).toEqual(['governor', 'denied', 'kill_switch_active']);
    expect(await h.redis.exists(h.keys.paperOrder(plan.plan_id))).toBe(0);
    expect(await h.redis.hget(h.keys.paperPosition('KILLUSDT'), 'amount')).toBe('2');

    await h.withWorker(async () => {
      const on = await runCli(['kill-switch', 'on', '--by', 'risk-desk'], env);
      expect(withoutWorker(on.stdout)).toBe('kill switch on (by risk-desk)\n');
      expect(await h.redis.get(h.keys.killSwitch)).toBe('1');
      const off = await runCli(['kill-switch', 'off', '--by', 'risk-desk'], env);
      expect(off.code).toBe(0);
      expect(await h.redis.exists(h.keys.killSwitch)).toBe(0);
    });
    const operator = (await h.redis.xrange(h.keys.auditStream, '-', '+'))
      .map(([, fields]) => Object.fromEntries(pairs(fields)))
      .filter((e) => e.layer === 'operator' && e.plan_id === '-')
      .map((e) => [e.decision, e.reason]);
    expect(operator).toEqual([
      ['kill_switch_on', 'by risk-desk'],
      ['kill_switch_off', 'by risk-desk (unsigned)'],
    ]);
  });
});

describe('kill switch set by hand', () => {
  // An operator's `redis-cli SET quantum:governor:kill_switch true` stops trading just like `kill-switch on`.
  it.each(['true', 'on'])('denies permits and stops Execute while the key holds %j', async (value) => {
    const symbol = `KILL${value.toUpperCase()}USDT`;
    await setPositions(h, symbol, '3', '3');
    const blocked = makePlan({ symbol, qty: '2' });
    const fresh = makePlan({ symbol, qty: '1' });
    // Set by hand the moment P3.3 has allowed the first plan: that plan holds both permits when it reaches Execute.
    const pulled = await onceWritten(h, h.keys.p33Permit(blocked.plan_id), () => h.redis.set(h.keys.killSwitch, value));
    await h.withWorker(async () => {
      try {
        const final = await (await startPlan(h.client, h.config, blocked)).handle.result();
        expect(pulled.fired()).toBe(true);
        expect(final.outcome).toBe('denied');
        expect(final.governor?.reason).toBe('kill_switch_active');
        // A new plan gets no permit.
        const denied = await (await startPlan(h.client, h.config, fresh)).handle.result();
        expect(denied.outcome).toBe('denied');
        expect(denied.governor?.reason).toBe('kill_switch_active');
      } finally {
        pulled.stop();
        await h.redis.del(h.keys.killSwitch);
      }
    });
    expect(await auditOf(h, blocked.plan_id)).toContainEqual(['execute', 'refused', 'kill_switch_active']);
    expect(await h.redis.exists(h.keys.paperOrder(blocked.plan_id), h.keys.paperOrder(fresh.plan_id))).toBe(0);
    expect(await h.redis.hget(h.keys.paperPosition(symbol), 'amount')).toBe('3');
  });
});

describe('per-symbol serialization', () => {
  it('runs 5 plans for one symbol one at a time, each against the ledger the last one left', async () => {
    await setPositions(h, 'SERUSDT', '5', '5');
    const plans = Array.from({ length: 5 }, () => makePlan({ symbol: 'SERUSDT', qty: '1' }));
    const finals = await h.withWorker(async () => {
      const started = await Promise.all(plans.map((plan) => startPlan(h.client, h.config, plan)));
      return Promise.all(started.map((s) => s.handle.result()));
    });
    expect(finals.map((f) => f.outcome)).toEqual(Array(5).fill('executed'));
    // Each P3.3 saw the ledger after the previous fill: 5, 4, 3, 2, 1, never the same amount twice.
    expect(finals.map((f) => f.p33?.ledger_amount).sort()).toEqual(['1', '2', '3', '4', '5']);
    expect(await h.redis.hget(h.keys.position('SERUSDT'), 'ledger_amount')).toBe('0');
    expect(await h.redis.hget(h.keys.paperPosition('SERUSDT'), 'amount')).toBe('0');
    // And in the audit stream, each plan's P3.3 approval is followed by its own fill before the next P3.3.
    const ids = new Set(plans.map((p) => p.plan_id));
    const sequence = (await h.redis.xrange(h.keys.auditStream, '-', '+'))
      .map(([, fields]) => Object.fromEntries(pairs(fields)))
      .filter((e) => ids.has(e.plan_id ?? '') && ['p33', 'execute'].includes(e.layer ?? ''))
      .map((e) => `${e.layer}:${e.plan_id}`);
    expect(sequence).toHaveLength(10);
    for (let i = 0; i < 10; i += 2) {
      expect(sequence[i]?.startsWith('p33:')).toBe(true);
      expect(sequence[i + 1]).toBe(`execute:${sequence[i]?.slice(4)}`);
    }
    expect(await h.redis.exists(h.keys.symbolLock('SERUSDT'))).toBe(0);
  });

  it('frees a symbol whose holder crashed once the lease runs out', async () => {
    await setPositions(h, 'LEASEUSDT', '1', '1');
    // A plan that died holding the symbol: its lease has 5 s left (long enough for a loaded machine to start the
    // plan before it runs out, which the test needs to see the plan wait).
    await h.redis.set(h.keys.symbolLock('LEASEUSDT'), 'deaddeaddeaddead', 'PX', 5000);
    const plan = makePlan({ symbol: 'LEASEUSDT', qty: '1' });
    await h.withWorker(async () => {
      const { workflowId, handle } = await startPlan(h.client, h.config, plan);
      const waiting = await eventually(async () => {
        const status = await handle.query(statusQuery);
        return status.timeline.find((t) =>
          t.detail.startsWith('in line for LEASEUSDT: plan deaddeaddeaddead holds it'),
        );
      });
      expect(waiting.stage).toBe('governor');
      expect((await handle.result()).outcome).toBe('executed');
      expect(workflowId).toBe(`plan-${plan.plan_id}`);
    });
  });
});

describe('stuck plans', () => {
  it('wakes 20 blocked plans with one retry-stuck after the ledger is reconciled, and all execute', async () => {
    await setPositions(h, 'STUCKUSDT', '2', '1');
    const plans = Array.from({ length: 20 }, () => makePlan({ symbol: 'STUCKUSDT', qty: '0.1' }));
    await h.withWorker(async () => {
      const started = await Promise.all(plans.map((plan) => startPlan(h.client, h.config, plan)));
      await blockedCount('STUCKUSDT', 20);
      await h.redis.hset(h.keys.position('STUCKUSDT'), 'ledger_amount', '2');
      const run = await runCli(['retry-stuck', '--symbol', 'STUCKUSDT', '--by', 'ops', '--json'], env);
      expect(JSON.parse(run.stdout)).toMatchObject({ retried: 20 });
      const finals = await Promise.all(started.map((s) => s.handle.result()));
      expect(finals.map((f) => f.outcome)).toEqual(Array(20).fill('executed'));
    });
    expect(await h.redis.hget(h.keys.position('STUCKUSDT'), 'ledger_amount')).toBe('0');
    expect(await h.redis.hget(h.keys.paperPosition('STUCKUSDT'), 'amount')).toBe('0');
  });

  it('retry-stuck --older-than leaves younger plans alone', async () => {
    await setPositions(h, 'YOUNGUSDT', '2', '1');
    const plan = makePlan({ symbol: 'YOUNGUSDT', qty: '1' });
    await h.withWorker(async () => {
      const { handle } = await startPlan(h.client, h.config, plan);
      await blockedCount('YOUNGUSDT', 1);
      const run = await runCli(['retry-stuck', '--symbol', 'YOUNGUSDT', '--older-than', '1h', '--json'], env);
      expect(JSON.parse(run.stdout)).toMatchObject({ retried: 0 });
      const cancel = await runCli(['cancel', plan.plan_id, '--by', 'ops', '--reason', 'test over'], env);
      expect(cancel.stdout).toBe('accepted: cancel accepted from ops\n');
      expect((await handle.result()).outcome).toBe('cancelled');
    });
  });

  it('reconcile sets the ledger to the exchange, audits it, and wakes the symbol’s blocked plans', async () => {
    await setPositions(h, 'RECUSDT', '0.062', '0.002');
    const plans = [makePlan({ symbol: 'RECUSDT', qty: '0.031' }), makePlan({ symbol: 'RECUSDT', qty: '0.031' })];
    await h.withWorker(async () => {
      const started = await Promise.all(plans.map((plan) => startPlan(h.client, h.config, plan)));
      await blockedCount('RECUSDT', 2);
      const run = await runCli(['reconcile', 'RECUSDT', '--by', 'alice', '--yes'], env);
      expect(withoutWorker(run.stdout)).toBe(
        "RECUSDT ledger 0.002 -> 0.062 (the exchange's amount); woke 2 blocked plan(s); by alice (unsigned)\n",
      );
      const finals = await Promise.all(started.map((s) => s.handle.result()));
      expect(finals.map((f) => f.outcome)).toEqual(['executed', 'executed']);
    });
    expect(await h.redis.hget(h.keys.position('RECUSDT'), 'ledger_amount')).toBe('0');
    const reconciles = (await h.redis.xrange(h.keys.auditStream, '-', '+'))
      .map(([, fields]) => Object.fromEntries(pairs(fields)))
      .filter((e) => e.decision === 'reconcile');
    expect(reconciles.map((e) => e.reason)).toEqual(['RECUSDT ledger 0.002 -> 0.062 by alice (unsigned)']);
  });

  it('reconcile waits while a plan holds the symbol between its fill and its ledger update', async () => {
    await setPositions(h, 'HELDUSDT', '1', '3');
    // A plan past P3.3 holds the symbol for 3 s more; its fill may not be in the ledger yet.
    const freeAt = Date.now() + 3000;
    await h.redis.set(h.keys.symbolLock('HELDUSDT'), 'beefbeefbeefbeef', 'PX', 3000);
    const run = await h.withWorker(() => runCli(['reconcile', 'HELDUSDT', '--by', 'alice', '--yes'], env));
    expect(withoutWorker(run.stdout)).toBe(
      "HELDUSDT ledger 3 -> 1 (the exchange's amount); woke 0 blocked plan(s); by alice (unsigned)\n",
    );
    const [written] = (await h.redis.xrange(h.keys.auditStream, '-', '+'))
      .map(([, fields]) => Object.fromEntries(pairs(fields)))
      .filter((e) => e.decision === 'reconcile' && e.reason?.startsWith('HELDUSDT'));
    // The ledger was written only once the holder's lease had run out, not while it held the symbol.
    expect(Date.parse(written?.at ?? '')).toBeGreaterThanOrEqual(freeAt - 5);
    expect(await h.redis.exists(h.keys.symbolLock('HELDUSDT'), h.keys.symbolLine('HELDUSDT'))).toBe(0);
  });
  it('cancels a plan before its order, and refuses to cancel one that has ended', async () => {
    await setPositions(h, 'CANUSDT', '3', '1');
    const plan = makePlan({ symbol: 'CANUSDT', qty: '1' });
    await h.withWorker(async () => {
      const { workflowId, handle } = await startPlan(h.client, h.config, plan);
      await waitForStage(h, workflowId, 'blocked');
      const run = await runCli(['cancel', plan.plan_id, '--by', 'alice', '--reason', 'stale signal'], env);
      expect(run.code).toBe(0);
      const final = await handle.result();
      expect(final.outcome).toBe('cancelled');
      expect(final.timeline.at(-1)?.detail).toBe('cancelled: cancelled by alice: stale signal');
      const again = await runCli(['cancel', plan.plan_id, '--by', 'alice', '--reason', 'again'], env);
      expect(again.stdout).toBe('refused: plan has already ended\n');
      expect(again.code).toBe(3);
    });
    expect(await h.redis.exists(h.keys.paperOrder(plan.plan_id))).toBe(0);
    expect(await auditOf(h, plan.plan_id)).toContainEqual(['operator', 'cancel_requested', 'alice: stale signal']);
  });

  it('runs a failed plan again with retry (Temporal reset) once its data is fixed', async () => {
    await setPositions(h, 'FAILUSDT', '1', 'garbage');
    const plan = makePlan({ symbol: 'FAILUSDT', qty: '1' });
    await h.withWorker(async () => {
      const { handle } = await startPlan(h.client, h.config, plan);
      const failed = await handle.result();
      expect(failed.outcome).toBe('failed');
      expect(failed.last_error).toBe("checkPosition: ledger_amount of FAILUSDT is not a decimal number: 'garbage'");

      await h.redis.hset(h.keys.position('FAILUSDT'), 'ledger_amount', '1');
      const run = await runCli(['retry', plan.plan_id, '--by', 'alice'], env);
      expect(run.stdout).toMatch(
        new RegExp(`^plan ${plan.plan_id} runs again from its start \\(reset, run [0-9a-f-]+\\)\\n$`),
      );
      const rerun = await h.client.workflow.getHandle<typeof permitChain>(handle.workflowId).result();
      expect(rerun.outcome).toBe('executed');
      await eventually(async () => {
        const again = await runCli(['list', '--outcome', 'executed', '--symbol', 'FAILUSDT', '--json'], env);
        return (JSON.parse(again.stdout) as { plans: unknown[] }).plans.length === 1 ? true : undefined;
      });
      const notFailed = await runCli(['retry', plan.plan_id], env);
      expect(notFailed.stderr).toBe(
        `permit-chain: plan ${plan.plan_id} ended executed: only a failed plan runs again\n`,
      );
    });
    expect(await auditOf(h, plan.plan_id)).toContainEqual(['operator', 'reset', 'retry of a failed plan by alice']);
    expect(await h.redis.exists(h.keys.paperOrder(plan.plan_id))).toBe(1);
  });
});

describe('reconcile shows what it changes, and changes it only when told to', () => {
  // A key prefix of their own: the permits of the tests above expire on their own clock, which would read as writes.
  const renv = testEnv();
  const keys = redisKeys(renv.KEY_PREFIX);
  /** A worker on this describe's prefix and task queue: reconcile runs there. */
  const inWorker = <T>(fn: () => Promise<T>): Promise<T> => h.withWorker(fn, undefined, { config: loadConfig(renv) });
  /** Every key of this describe's prefix with its value (DUMP) and time to live: equal snapshots, nothing written. */
  async function snapshot(): Promise<Map<string, string>> {
    const all = new Map<string, string>();
    for (const key of (await h.redis.keys(`${renv.KEY_PREFIX}:*`)).sort()) {
      const [dump, ttl] = await Promise.all([h.redis.dumpBuffer(key), h.redis.pttl(key)]);
      all.set(key, `${dump?.toString('hex') ?? ''} ${ttl > 0 ? 'expires' : ttl}`);
    }
    return all;
  }

  /** The incident on `symbol` with a fill on the exchange that the ledger has not counted. */
  async function mismatchWithUnappliedFill(symbol: string): Promise<string> {
    const planId = makePlan({ symbol }).plan_id;
    await setPositions({ redis: h.redis, keys }, symbol, '0.062', '0.002');
    await h.redis.hset(keys.execution(planId), {
      status: 'FILLED',
      side: 'SELL',
      filled_qty: '1',
      ledger_applied: '0',
    });
    await h.redis.sadd(keys.unappliedFills(symbol), planId);
    return planId;
  }

  function reconciles(symbol: string): Promise<Record<string, string>[]> {
    return h.redis
      .xrange(keys.auditStream, '-', '+')
      .then((entries) =>
        entries
          .map(([, fields]) => Object.fromEntries(pairs(fields)))
          .filter((e) => e.decision === 'reconcile' && e.reason?.startsWith(`${symbol} `)),
      );
  }

  it('--dry-run shows the ledger before and after, the exchange and the unapplied fills, and writes nothing', () =>
    inWorker(async () => {
      const planId = await mismatchWithUnappliedFill('DRYUSDT');
      const before = await snapshot();
      const json = await runCli(['reconcile', 'DRYUSDT', '--by', 'alice', '--dry-run', '--json'], renv);
      expect(json.code).toBe(0);
      expect(JSON.parse(json.stdout)).toEqual({
        symbol: 'DRYUSDT',
        by: 'alice',
        exchange_amount: '0.062',
        ledger_before: '0.002',
        ledger_after: '0.062',
        fills_to_account: 1,
        plan_ids: [planId],
        unrecorded_orders: [],
        applied: false,
        worker: expect.objectContaining({ task_queue: renv.TASK_QUEUE, exchange: 'paper' }) as unknown,
      });
      const text = await runCli(['reconcile', 'DRYUSDT', '--by', 'alice', '--dry-run'], renv);
      expect(text.code).toBe(0);
      expect(withoutWorker(text.stdout)).toBe(
        'reconcile DRYUSDT by alice:\n' +
          '  ledger     0.002 -> 0.062\n' +
          "  exchange   0.062 (the ledger becomes the exchange's amount)\n" +
          `  unapplied  1 fill(s) it accounts for: ${planId}\n` +
          'dry run: nothing changed\n',
      );
      expect(await snapshot()).toEqual(before);

      // Without --yes or --dry-run, off a terminal: one line (one JSON object with --json), exit 2, nothing written.
      const why = 'reconcile: this changes the ledger: pass --yes to do it (or --dry-run to see what it would change)';
      for (const [args, shown] of [
        [[], `permit-chain: ${why}\n`],
        [['--json'], `${JSON.stringify({ error: why, exit_code: 2 })}\n`],
      ] as const) {
        const refused = await runCli(['reconcile', 'DRYUSDT', '--by', 'alice', ...args], renv);
        expect(refused.code).toBe(2);
        expect(refused.stdout).toBe('');
        expect(refused.stderr).toBe(shown);
      }
      const both = await runCli(['reconcile', 'DRYUSDT', '--by', 'alice', '--dry-run', '--yes'], renv);
      expect(both.code).toBe(2);
      expect(await snapshot()).toEqual(before);
      expect(await reconciles('DRYUSDT')).toEqual([]);

      const applied = await runCli(['reconcile', 'DRYUSDT', '--by', 'alice', '--yes'], renv);
      expect(withoutWorker(applied.stdout)).toBe(
        "DRYUSDT ledger 0.002 -> 0.062 (the exchange's amount); accounted for 1 unapplied fill(s); woke 0 blocked " +
          'plan(s); by alice (unsigned)\n',
      );
      expect(await h.redis.hget(keys.position('DRYUSDT'), 'ledger_amount')).toBe('0.062');
      expect(await h.redis.hget(keys.execution(planId), 'ledger_applied')).toBe('reconcile');
      expect(await h.redis.exists(keys.unappliedFills('DRYUSDT'))).toBe(0);
      expect((await reconciles('DRYUSDT')).map((e) => e.reason)).toEqual([
        `DRYUSDT ledger 0.002 -> 0.062 by alice (unsigned); accounts for 1 unapplied fill(s): ${planId}`,
      ]);
    }));

  it('on a terminal asks y/N: no changes nothing, yes changes what was shown', () =>
    inWorker(async () => {
      const planId = await mismatchWithUnappliedFill('ASKUSDT');
      const before = await snapshot();
      const prompt = /apply\? \[y\/N\] /;
      const args = ['reconcile', 'ASKUSDT', '--by', 'alice'];
      const declined = await runCliOnTerminal(args, renv, prompt, () => Promise.resolve('n\n'));
      expect(declined.output).toContain('  ledger     0.002 -> 0.062\n');
      expect(declined.output).toContain(`  unapplied  1 fill(s) it accounts for: ${planId}\n`);
      expect(declined.output).toMatch(/nothing changed\n$/);
      expect(declined.code).toBe(1);
      expect(await snapshot()).toEqual(before);

      const accepted = await runCliOnTerminal(args, renv, prompt, () => Promise.resolve('y\n'));
      expect(accepted.code).toBe(0);
      expect(accepted.output).toContain(
        "ASKUSDT ledger 0.002 -> 0.062 (the exchange's amount); accounted for 1 unapplied fill(s); woke 0 blocked " +
          'plan(s); by alice (unsigned)\n',
      );
      expect(await h.redis.hget(keys.position('ASKUSDT'), 'ledger_amount')).toBe('0.062');
      expect(await h.redis.hget(keys.execution(planId), 'ledger_applied')).toBe('reconcile');
    }));

  it('on a terminal, a ledger or exchange that moves between the look and the yes changes nothing', () =>
    inWorker(async () => {
      const prompt = /apply\? \[y\/N\] /;
      await mismatchWithUnappliedFill('MOVEUSDT');
      const ledgerMoved = await runCliOnTerminal(['reconcile', 'MOVEUSDT', '--by', 'alice'], renv, prompt, async () => {
        await h.redis.hset(keys.position('MOVEUSDT'), 'ledger_amount', '0.01');
        return 'y\n';
      });
      expect(ledgerMoved.code).toBe(2);
      expect(ledgerMoved.output).toContain('permit-chain: reconcile: MOVEUSDT changed since it was shown');
      expect(await h.redis.hget(keys.position('MOVEUSDT'), 'ledger_amount')).toBe('0.01');

      const exchangeMoved = await runCliOnTerminal(
        ['reconcile', 'MOVEUSDT', '--by', 'alice'],
        renv,
        prompt,
        async () => {
          await h.redis.hset(keys.paperPosition('MOVEUSDT'), 'amount', '0.07');
          return 'y\n';
        },
      );
      expect(exchangeMoved.code).toBe(2);
      expect(exchangeMoved.output).toContain(
        "permit-chain: reconcile: the exchange's MOVEUSDT changed since it was shown",
      );
      expect(await h.redis.hget(keys.position('MOVEUSDT'), 'ledger_amount')).toBe('0.01');
      expect(await h.redis.exists(keys.unappliedFills('MOVEUSDT'))).toBe(1);
      expect(await reconciles('MOVEUSDT')).toEqual([]);
    }));
});
