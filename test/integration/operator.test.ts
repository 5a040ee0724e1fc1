import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPlan } from '../../lib/chain-client';
import { chainSettings, loadConfig } from '../../lib/config';
import { temporalCliExecutable } from '../../lib/servers';
import type { Plan } from '../../lib/types';
import { PERMIT_CHAIN_WORKFLOW, approveSignal, planWorkflowId, statusQuery } from '../../workflows/messages';
import type { permitChain } from '../../workflows';
import { runCli } from '../cli-runner';
import { auditOf, chainHarness, makePlan, setPositions, testEnv, type ChainHarness, waitForStage } from '../helpers';

const run = promisify(execFile);

/** Production mode: a person approves each plan; only alice and bob may. */
const env = testEnv({ TRADING_MODE: 'production', APPROVERS: 'alice,bob', APPROVAL_TIMEOUT_S: '2' });
let h: ChainHarness;
beforeAll(async () => {
  h = await chainHarness(loadConfig(env));
});
afterAll(() => h.close());

async function ordersOf(plan: Plan): Promise<number> {
  return h.redis.exists(h.keys.paperOrder(plan.plan_id));
}

describe('manual approval (production mode) on the real dev server', () => {
  it('executes a plan approved by signal, and records who approved it', async () => {
    await setPositions(h, 'BTCUSDT', '0.062', '0.062');
    const plan = makePlan({ symbol: 'BTCUSDT', qty: '0.062' });
    await h.withWorker(async () => {
      const { workflowId, handle } = await startPlan(h.client, h.config, plan);
      const waiting = await waitForStage(h, workflowId, 'awaiting_approval');
      expect(waiting.awaiting).toMatchObject({ exchange_amount: '0.062', ledger_amount: '0.062', tolerance: '0.001' });
      expect(await h.redis.exists(h.keys.permit(plan.plan_id))).toBe(0);
      await handle.signal(approveSignal, { by: 'alice', note: 'checked the book' });
      const final = await handle.result();
      expect(final.outcome).toBe('executed');
      expect(final.approval).toMatchObject({
        by: 'alice',
        note: 'checked the book',
        snapshot: { ledger_amount: '0.062' },
      });
      expect(final.timeline.some((t) => t.detail === 'approved by alice: checked the book')).toBe(true);
    });
    const permit = JSON.parse((await h.redis.get(h.keys.permit(plan.plan_id))) ?? '{}') as Record<string, unknown>;
    expect(permit).toMatchObject({ granted: true, mode: 'production', reason: 'approved', approved_by: 'alice' });
    const audit = await auditOf(h, plan.plan_id);
    expect(audit.slice(0, 3)).toEqual([
      ['governor', 'approval_requested', 'approval_required'],
      ['operator', 'approved', 'alice: checked the book'],
      ['governor', 'granted', 'approved by alice'],
    ]);
    expect(await ordersOf(plan)).toBe(1);
  });

  it('ends rejected with no order when rejected from the CLI', async () => {
    await setPositions(h, 'ETHUSDT', '1', '1');
    const plan = makePlan({ symbol: 'ETHUSDT', qty: '1' });
    await h.withWorker(async () => {
      const { workflowId, handle } = await startPlan(h.client, h.config, plan);
      await waitForStage(h, workflowId, 'awaiting_approval');
      const run = await runCli(['reject', plan.plan_id, '--by', 'bob', '--reason', 'not today'], env);
      expect(run.stdout).toBe('accepted: rejected by bob\n');
      expect(run.code).toBe(0);
      const final = await handle.result();
      expect(final.outcome).toBe('rejected');
      expect(final.timeline.at(-1)?.detail).toBe('rejected: rejected by bob: not today');
    });
    expect(await ordersOf(plan)).toBe(0);
    expect(await h.redis.exists(h.keys.applyDedupe(plan.plan_id))).toBe(0);
  });

  it('ends expired when nobody decides within APPROVAL_TIMEOUT_S', async () => {
    await setPositions(h, 'SOLUSDT', '1', '1');
    const plan = makePlan({ symbol: 'SOLUSDT', qty: '1' });
    const final = await h.withWorker(async () => (await startPlan(h.client, h.config, plan)).handle.result());
    expect(final.outcome).toBe('expired');
    expect(final.timeline.at(-1)?.detail).toBe('expired: no approval within 2s');
    expect(await ordersOf(plan)).toBe(0);
  });

  it('changes nothing on an approval from outside APPROVERS, and says so at once', async () => {
    await setPositions(h, 'ADAUSDT', '5', '5');
    const plan = makePlan({ symbol: 'ADAUSDT', qty: '5' });
    const patient = loadConfig({ ...env, APPROVAL_TIMEOUT_S: '60' });
    await h.withWorker(async () => {
      const { workflowId, handle } = await startPlan(h.client, patient, plan);
      await waitForStage(h, workflowId, 'awaiting_approval');
      const refused = await runCli(['approve', plan.plan_id, '--by', 'mallory'], env);
      expect(refused.stdout).toBe('refused: not an approver\n');
      expect(refused.code).toBe(3);
      await handle.signal(approveSignal, { by: 'eve' });
      const still = await handle.query(statusQuery);
      expect(still.stage).toBe('awaiting_approval');
      expect(still.approval).toBeUndefined();
      expect(await h.redis.exists(h.keys.permit(plan.plan_id))).toBe(0);

      const accepted = await runCli(['approve', plan.plan_id, '--by', 'bob', '--note', 'ok'], env);
      expect(accepted.stdout).toBe('accepted: approved by bob\n');
      expect((await handle.result()).outcome).toBe('executed');
      const late = await runCli(['approve', plan.plan_id, '--by', 'alice'], env);
      expect(late.stdout).toBe('refused: plan has already ended\n');
    });
    const refusals = (await auditOf(h, plan.plan_id)).filter(([, decision]) => decision === 'approval_refused');
    expect(refusals).toEqual([
      ['operator', 'approval_refused', 'mallory: not an approver'],
      ['operator', 'approval_refused', 'eve: not an approver'],
    ]);
  });

  it('keeps an approval that arrives before the plan asks for it', async () => {
    await setPositions(h, 'XRPUSDT', '10', '10');
    const plan = makePlan({ symbol: 'XRPUSDT', qty: '10' });
    await h.withWorker(async () => {
      const handle = await h.client.workflow.signalWithStart<typeof permitChain, [{ by: string }]>(
        PERMIT_CHAIN_WORKFLOW,
        {
          workflowId: planWorkflowId(plan.plan_id),
          taskQueue: h.config.taskQueue,
          args: [{ plan, settings: chainSettings(h.config) }],
          signal: approveSignal,
          signalArgs: [{ by: 'alice' }],
        },
      );
      const final = await h.client.workflow.getHandle<typeof permitChain>(handle.workflowId).result();
      expect(final.outcome).toBe('executed');
      expect(final.governor?.approved_by).toBe('alice');
    });
  });

  it('takes an approval sent with the official temporal CLI', async () => {
    await setPositions(h, 'DOTUSDT', '4', '4');
    const plan = makePlan({ symbol: 'DOTUSDT', qty: '4' });
    const cli = temporalCliExecutable();
    if (cli.type !== 'existing-path') throw new Error('no Temporal CLI in .tools: run scripts/setup.sh');
    await h.withWorker(async () => {
      const { workflowId, handle } = await startPlan(h.client, h.config, plan);
      await waitForStage(h, workflowId, 'awaiting_approval');
      await run(cli.path, [
        'workflow',
        'signal',
        '--address',
        h.config.temporalAddress,
        '-w',
        workflowId,
        '--name',
        'approve',
        '--input',
        '{"by":"alice","note":"via temporal"}',
      ]);
      const final = await handle.result();
      expect(final.outcome).toBe('executed');
      expect(final.approval).toMatchObject({ by: 'alice', note: 'via temporal' });
    });
  });
});
