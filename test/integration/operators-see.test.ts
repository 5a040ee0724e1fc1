import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkflowUpdateFailedError, type WorkflowHandle } from '@temporalio/client';
import { startPlan } from '../../client/plans';
import { loadConfig } from '../../lib/config';
import { approvePlanUpdate, approveSignal, planWorkflowId, statusQuery } from '../../contract/messages';
import type { ChainStatus, Plan } from '../../contract/types';
import type { permitChain } from '../../workflows';
import { runCli, startCli, type CliProcess } from '../../scripts/stack/cli-runner';
import {
  chainHarness,
  eventually,
  logLines,
  makePlan,
  setPositions,
  testApprovers,
  testEnv,
  waitForStage,
  type ChainHarness,
} from '../helpers';

/** Current details, as the Web UI shows them (the SDK's metadata query). */
async function details(handle: WorkflowHandle): Promise<string> {
  return (await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata')).currentDetails ?? '';
}

interface RetryJson {
  retried?: number;
  moved: { plan_id: string; stage: string }[];
  still_blocked: {
    plan_id: string;
    symbol: string;
    exchange: string;
    ledger: string;
    tolerance: string;
    reason: string;
    looked: boolean;
  }[];
}

describe('retry and retry-stuck report what moved and what is still blocked', () => {
  const env = testEnv();
  let h: ChainHarness;
  beforeAll(async () => {
    h = await chainHarness(loadConfig(env));
  });
  afterAll(() => h.close());

  async function blockedAll(plans: Plan[]): Promise<void> {
    await eventually(
      async () => {
        const stages = await Promise.all(
          plans.map(
            async (p) => (await h.client.workflow.getHandle(planWorkflowId(p.plan_id)).query(statusQuery)).stage,
          ),
        );
        return stages.every((stage) => stage === 'blocked') ? true : undefined;
      },
      60_000,
      `${plans.length} plans blocked`,
    );
  }

  it('retry-stuck with the positions still apart: 0 moved, 10 still blocked, the positions named', async () => {
    await setPositions(h, 'APARTUSDT', '2', '1');
    const plans = Array.from({ length: 10 }, () => makePlan({ symbol: 'APARTUSDT', qty: '0.1' }));
    await h.withWorker(async () => {
      await Promise.all(plans.map((plan) => startPlan(h.client, h.config, plan)));
      await blockedAll(plans);
      // The visibility store must list them too: retry-stuck finds the plans there.
      await eventually(async () => {
        const run = await runCli(['list', '--stage', 'blocked', '--symbol', 'APARTUSDT', '--json'], env);
        return (JSON.parse(run.stdout) as { plans: unknown[] }).plans.length === 10 ? true : undefined;
      }, 30_000);
      const before = Date.now();

      const run = await runCli(['retry-stuck', '--symbol', 'APARTUSDT', '--by', 'ops', '--json'], env);
      expect(run.code).toBe(0);
      const report = JSON.parse(run.stdout) as RetryJson;
      expect(report.retried).toBe(10);
      expect(report.moved).toEqual([]);
      expect(report.still_blocked).toHaveLength(10);
      expect(report.still_blocked.map((p) => p.plan_id).sort()).toEqual(plans.map((p) => p.plan_id).sort());
      for (const blocked of report.still_blocked) {
        expect(blocked).toMatchObject({
          symbol: 'APARTUSDT',
          exchange: '2',
          ledger: '1',
          tolerance: '0.001',
          reason: 'reconcile_required_qty_mismatch',
          looked: true,
        });
      }

      const text = await runCli(['retry-stuck', '--symbol', 'APARTUSDT', '--by', 'ops'], env);
      expect(text.stdout).toMatch(/^retried 10 blocked plan\(s\): 0 moved, 10 still blocked\n/);
      expect(text.stdout).toContain(
        '  blocked  10 on APARTUSDT: reconcile_required_qty_mismatch, exchange 2 vs ledger 1, tolerance 0.001: ',
      );

      // Each plan's timeline answers the retry, and states no re-check time that a later look would make stale; the
      // details and the status carry the new next re-check.
      for (const plan of plans) {
        const handle = h.client.workflow.getHandle(planWorkflowId(plan.plan_id));
        const status: ChainStatus = await handle.query(statusQuery);
        expect(status.timeline.some((t) => t.detail.includes('next re-check'))).toBe(false);
        expect(status.timeline.at(-1)?.detail).toBe(
          'looked again after the retry by ops: still blocked: reconcile_required_qty_mismatch, exchange 2 vs ' +
            'ledger 1, tolerance 0.001',
        );
        expect(status.next_look_at).toBeGreaterThan(before);
        const shown = await details(handle);
        const time = new Date(status.next_look_at ?? 0).toISOString().slice(11, 19);
        expect(shown).toContain(`tolerance 0.001; next re-check ${time} UTC`);
      }
      // `status` shows the next re-check and the next step, as the details do.
      const cli = await runCli(['status', plans[0]?.plan_id ?? ''], env);
      expect(cli.stdout).toContain(`  re-check  next at `);
      expect(cli.stdout).toContain(`  next      bring the ledger to the exchange's position: permit-chain reconcile`);
      await Promise.all(plans.map((p) => runCli(['cancel', p.plan_id, '--by', 'ops', '--reason', 'test over'], env)));
    });
  });

  it('a retry that moves a plan reports it moved', async () => {
    await setPositions(h, 'MOVEUSDT', '2', '1');
    const plan = makePlan({ symbol: 'MOVEUSDT', qty: '1' });
    await h.withWorker(async () => {
      const { handle } = await startPlan(h.client, h.config, plan);
      await blockedAll([plan]);
      // Fixed behind the chain's back: nothing wakes the plan but the retry.
      await h.redis.hset(h.keys.position('MOVEUSDT'), 'ledger_amount', '2');
      const run = await runCli(['retry', plan.plan_id, '--by', 'ops', '--json'], env);
      expect(run.code).toBe(0);
      const report = JSON.parse(run.stdout) as RetryJson;
      expect(report.still_blocked).toEqual([]);
      expect(report.moved.map((p) => p.plan_id)).toEqual([plan.plan_id]);
      expect((await handle.result()).outcome).toBe('executed');
    });
  });
});

describe('approvals: what the operator sees, and the worker logs', () => {
  const approvers = testApprovers('alice', 'bob', 'eve');
  const env = testEnv({
    TRADING_MODE: 'production',
    APPROVERS: 'alice,bob',
    APPROVER_KEYS_DIR: approvers.dir,
    APPROVAL_TIMEOUT_S: '120',
    LOG_LEVEL: 'info',
  });
  let h: ChainHarness;
  let worker: CliProcess;
  beforeAll(async () => {
    h = await chainHarness(loadConfig(env));
    // The worker as deployed: its own process, its JSON log on stdout.
    worker = startCli(['worker'], env);
    await worker.waitFor(/"msg":"worker: production mode/);
  });
  afterAll(async () => {
    await worker?.stop('SIGTERM');
    await h?.close();
  });

  async function awaitingPlan(symbol: string): Promise<{ plan: Plan; handle: WorkflowHandle<typeof permitChain> }> {
    await setPositions(h, symbol, '1', '1');
    const plan = makePlan({ symbol, qty: '0.5' });
    const { workflowId, handle } = await startPlan(h.client, h.config, plan);
    await waitForStage(h, workflowId, 'awaiting_approval');
    return { plan, handle };
  }

  it('an unsigned approve signal leaves a timeline line and a details line; status names the command and the approvers', async () => {
    const { plan, handle } = await awaitingPlan('SEEUSDT');

    const status = await runCli(['status', plan.plan_id], env);
    expect(status.stdout).toContain(`  next      awaiting approval by alice, bob: an approver signs, before `);
    expect(status.stdout).toContain(`permit-chain approve ${plan.plan_id} --by NAME --key FILE`);
    expect(status.stdout).toContain('  approvals 1 of alice, bob needed');

    // As the Web UI's signal form sends it: a name, no signature.
    await handle.signal(approveSignal, { by: 'alice' } as never);
    const refused = await eventually(async () => {
      const s = await handle.query(statusQuery);
      return s.timeline.find((t) => t.detail.startsWith('approval by alice refused: '));
    });
    expect(refused.stage).toBe('awaiting_approval');
    const shown = await details(handle);
    expect(shown).toContain(refused.detail);
    expect(shown).toContain(`**Next:** awaiting approval by alice, bob: an approver signs`);
    // What the operator reads: a reason, no stack trace, no source path.
    expect(refused.detail).not.toMatch(/\n\s+at |\.(ts|js|cjs):\d+/);

    // The worker's log: one line for the wait, one for the refusal (warn), each with the plan id and who.
    const lines = await eventually(() => {
      const mine = logLines(worker.output()).filter(
        (l) => l.plan_id === plan.plan_id && l.msg.startsWith('operator: '),
      );
      return Promise.resolve(mine.some((l) => l.msg === 'operator: approval refused') ? mine : undefined);
    });
    expect(lines.filter((l) => l.msg === 'operator: awaiting approval')).toEqual([
      expect.objectContaining({ level: 'info', who: 'alice, bob', required: 1 }),
    ]);
    expect(lines.filter((l) => l.msg === 'operator: approval refused')).toEqual([
      expect.objectContaining({
        level: 'warn',
        who: 'alice',
        why: refused.detail.replace('approval by alice refused: ', ''),
      }),
    ]);

    // The same, as an update (what `permit-chain approve` sends): it fails with the reason, and no stack trace of the
    // workflow's code (source paths) reaches the caller or the Web UI.
    const failed = await handle.executeUpdate(approvePlanUpdate, { args: [{ by: 'bob' } as never] }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(failed).toBeInstanceOf(WorkflowUpdateFailedError);
    const cause = (failed as WorkflowUpdateFailedError).cause;
    expect(cause?.message).toMatch(/\S/);
    expect(cause?.stack ?? '').not.toMatch(/\.ts|\.js|\bat /);
    await runCli(['cancel', plan.plan_id, '--by', 'ops', '--reason', 'test over'], env);
  });

  it('a forged approval is refused with a reason and no stack trace; the worker logs refusals, approvals, retries and cancels', async () => {
    const { plan, handle } = await awaitingPlan('LOGUSDT');
    // eve signs as alice with her own key: the worker holds alice's, the signature does not verify.
    const forged = await runCli(['approve', plan.plan_id, '--by', 'alice', '--key', approvers.keyFile('eve')], env);
    expect(forged.stdout).toMatch(/^refused: /);
    for (const out of [forged.stdout, forged.stderr]) {
      expect(out).not.toMatch(/\n\s+at |\.(ts|js|cjs):\d+|node_modules/);
    }
    const approved = await runCli(['approve', plan.plan_id, '--by', 'bob', '--key', approvers.keyFile('bob')], env);
    expect(approved.stdout).toBe('accepted: approved by bob\n');
    expect((await handle.result()).outcome).toBe('executed');

    const other = await awaitingPlan('LOG2USDT');
    await runCli(['retry', other.plan.plan_id, '--by', 'carol'], env);
    await runCli(['cancel', other.plan.plan_id, '--by', 'dave', '--reason', 'not now'], env);
    expect((await other.handle.result()).outcome).toBe('cancelled');

    const of = (planId: string) =>
      logLines(worker.output())
        .filter((l) => l.plan_id === planId && l.msg.startsWith('operator: '))
        .map((l) => `${l.level} ${l.msg} ${String(l.who)}`);
    await eventually(() => Promise.resolve(of(other.plan.plan_id).length >= 3 ? true : undefined));
    expect(of(plan.plan_id)).toEqual([
      'info operator: awaiting approval alice, bob',
      'warn operator: approval refused alice',
      'info operator: approval accepted bob',
    ]);
    expect(of(other.plan.plan_id)).toEqual([
      'info operator: awaiting approval alice, bob',
      'info operator: retry requested carol',
      'info operator: cancel requested dave',
    ]);
  });
});
