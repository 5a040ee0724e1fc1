import { execFile } from 'node:child_process';
import { createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { WorkflowHandle } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPlan } from '../../client/plans';
import { keyFingerprint } from '../../lib/approval';
import { loadConfig } from '../../lib/config';
import { temporalCliExecutable } from '../../cli/servers';
import type { Plan, PositionSnapshot } from '../../contract/types';
import { approveSignal, statusQuery } from '../../contract/messages';
import type { permitChain } from '../../workflows';
import { runCli } from '../../scripts/stack/cli-runner';
import {
  auditOf,
  chainHarness,
  eventually,
  makePlan,
  pairs,
  setPositions,
  testApprovers,
  testEnv,
  type ChainHarness,
  waitForStage,
} from '../helpers';

const run = promisify(execFile);

/**
 * Production mode: a person approves each plan, with a signature the Governor verifies. alice and bob are the
 * approvers; mallory has a key but is not on the list; eve's key is one the worker has never seen.
 */
const approvers = testApprovers('alice', 'bob', 'mallory', 'eve');
const env = testEnv({
  TRADING_MODE: 'production',
  APPROVERS: 'alice,bob',
  APPROVER_KEYS_DIR: approvers.dir,
  APPROVAL_TIMEOUT_S: '60',
});
let h: ChainHarness;
beforeAll(async () => {
  h = await chainHarness(loadConfig(env));
});
afterAll(() => h.close());

/** The fingerprint of the key the worker holds for `name` (its APPROVER_KEYS_DIR/NAME.pub). */
function fingerprintOf(name: string): string {
  return keyFingerprint(createPublicKey(readFileSync(join(approvers.dir, `${name}.pub`))));
}

/** The operator layer's audit entries of a plan, every field of each: `decision reason` → key_fingerprint (or -). */
async function operatorKeysOf(plan: Plan): Promise<string[]> {
  const entries = await h.redis.xrange(h.keys.auditStream, '-', '+');
  return entries
    .map(([, fields]) => Object.fromEntries(pairs(fields)))
    .filter((e) => e.plan_id === plan.plan_id && e.layer === 'operator')
    .map((e) => `${e.decision} ${(e.reason ?? '').split(':')[0]} ${e.key_fingerprint ?? '-'}`);
}

async function ordersOf(plan: Plan): Promise<number> {
  return h.redis.exists(h.keys.paperOrder(plan.plan_id));
}

/** Starts the plan and waits until it shows the approvers its positions. */
async function awaiting(plan: Plan): Promise<{ handle: WorkflowHandle<typeof permitChain>; shown: PositionSnapshot }> {
  const { workflowId, handle } = await startPlan(h.client, h.config, plan);
  const status = await waitForStage(h, workflowId, 'awaiting_approval');
  if (!status.awaiting) throw new Error('awaiting approval without positions to show');
  return { handle, shown: status.awaiting };
}

describe('signed approvals (production mode) on the real dev server', () => {
  it('executes a plan approved with a signed approval, and records who approved it', async () => {
    await setPositions(h, 'BTCUSDT', '0.062', '0.062');
    const plan = makePlan({ symbol: 'BTCUSDT', qty: '0.062' });
    await h.withWorker(async () => {
      const { handle, shown } = await awaiting(plan);
      expect(shown).toMatchObject({ exchange_amount: '0.062', ledger_amount: '0.062', tolerance: '0.001' });
      expect(await h.redis.exists(h.keys.permit(plan.plan_id))).toBe(0);
      // The Web UI's current details end with how to approve, ready to copy.
      const metadata = await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata');
      expect(metadata.currentDetails).toMatch(/^\*\*awaiting_approval\*\* · SELL 0\.062 BTCUSDT/);
      expect(metadata.currentDetails).toContain(
        `**Next:** awaiting approval by alice, bob: an approver signs, before `,
      );
      expect(metadata.currentDetails).toContain(`\`permit-chain approve ${plan.plan_id} --by NAME --key FILE\``);
      await handle.signal(approveSignal, approvers.sign(plan.plan_id, 'alice', shown, { note: 'checked the book' }));
      const final = await handle.result();
      expect(final.outcome).toBe('executed');
      expect(final.approval).toMatchObject({ by: 'alice', note: 'checked the book', snapshot: shown });
      expect(final.timeline.some((t) => t.detail === 'approved by alice: checked the book')).toBe(true);
      // Once the plan moved on, the next step is gone from its details.
      const after = await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata');
      expect(after.currentDetails).toMatch(/^\*\*done\*\*/);
      expect(after.currentDetails).not.toContain('**Next:**');
    });
    const permit = JSON.parse((await h.redis.get(h.keys.permit(plan.plan_id))) ?? '{}') as Record<string, unknown>;
    expect(permit).toMatchObject({ granted: true, mode: 'production', reason: 'approved', approved_by: 'alice' });
    expect((await auditOf(h, plan.plan_id)).slice(0, 3)).toEqual([
      ['governor', 'approval_requested', 'approval_required'],
      ['operator', 'approved', 'alice: checked the book'],
      ['governor', 'granted', 'approved by alice'],
    ]);
    // The approval's entry names the key that verified it: alice's, as the worker printed it at start.
    expect(await operatorKeysOf(plan)).toEqual([`approved alice ${fingerprintOf('alice')}`]);
    expect(await ordersOf(plan)).toBe(1);
  });

  it('ends rejected with no order when rejected from the CLI with a key', async () => {
    await setPositions(h, 'ETHUSDT', '1', '1');
    const plan = makePlan({ symbol: 'ETHUSDT', qty: '1' });
    await h.withWorker(async () => {
      const { handle } = await awaiting(plan);
      const rejected = await runCli(
        ['reject', plan.plan_id, '--by', 'bob', '--reason', 'not today', '--key', approvers.keyFile('bob')],
        env,
      );
      expect(rejected.stdout).toBe('accepted: rejected by bob\n');
      expect(rejected.code).toBe(0);
      const final = await handle.result();
      expect(final.outcome).toBe('rejected');
      expect(final.timeline.at(-1)?.detail).toBe('rejected: rejected by bob: not today');
    });
    expect(await ordersOf(plan)).toBe(0);
    expect(await h.redis.exists(h.keys.applyDedupe(plan.plan_id), h.keys.applyPublished(plan.plan_id))).toBe(0);
    expect(await operatorKeysOf(plan)).toEqual([`rejected bob ${fingerprintOf('bob')}`]);
  });

  it('ends expired when nobody decides within APPROVAL_TIMEOUT_S', async () => {
    const impatient = loadConfig({ ...env, APPROVAL_TIMEOUT_S: '2', TASK_QUEUE: `${env.TASK_QUEUE}-impatient` });
    await setPositions(h, 'SOLUSDT', '1', '1');
    const plan = makePlan({ symbol: 'SOLUSDT', qty: '1' });
    const final = await h.withWorker(
      async () => (await startPlan(h.client, impatient, plan)).handle.result(),
      undefined,
      { config: impatient },
    );
    expect(final.outcome).toBe('expired');
    expect(final.timeline.at(-1)?.detail).toBe('expired: no approval within 2s');
    expect(await ordersOf(plan)).toBe(0);
  });

  it('refuses every decision that does not prove itself, says why, and keeps waiting', async () => {
    await setPositions(h, 'ADAUSDT', '5', '5');
    const plan = makePlan({ symbol: 'ADAUSDT', qty: '5' });
    const other = makePlan({ symbol: 'ADAUSDT', qty: '5' });
    await h.withWorker(async () => {
      const { handle, shown } = await awaiting(plan);
      const refused = await runCli(
        ['approve', plan.plan_id, '--by', 'mallory', '--key', approvers.keyFile('mallory')],
        env,
      );
      expect(refused.stdout).toBe('refused: not an approver\n');
      expect(refused.code).toBe(3);
      // The refused update is a failed update in the history (red in the Web UI), not a completed one.
      const { events } = await handle.fetchHistory();
      const completed = (events ?? []).filter((e) => e.workflowExecutionUpdateCompletedEventAttributes);
      expect(completed).toHaveLength(1);
      const outcome = completed[0]?.workflowExecutionUpdateCompletedEventAttributes?.outcome;
      expect(outcome?.success).toBeFalsy();
      expect(outcome?.failure?.message).toBe('not an approver');
      expect(outcome?.failure?.applicationFailureInfo?.type).toBe('Refused');

      const aliceSigned = approvers.sign(plan.plan_id, 'alice', shown);
      const attempts = [
        // unsigned, as anyone with access to Temporal could send it (the Web UI, temporal workflow signal)
        { by: 'alice' },
        // eve signs and claims to be alice
        { ...approvers.sign(plan.plan_id, 'eve', shown), by: 'alice' },
        // alice's signature of another plan
        approvers.sign(other.plan_id, 'alice', shown),
        // alice's signature that ran out
        approvers.sign(plan.plan_id, 'alice', shown, { now: Date.now() - 600_000, lifeMs: 60_000 }),
        // alice signed positions the plan never showed
        approvers.sign(plan.plan_id, 'alice', { ...shown, ledger_amount: '4' }),
        // a valid signature with its note altered on the way
        { ...approvers.sign(plan.plan_id, 'alice', shown, { note: 'ok' }), note: 'ok, and double it' },
        // an expiry moved later after signing
        { ...aliceSigned, expires_at: aliceSigned.expires_at + 60_000 },
      ];
      // Sent by name with any JSON, as the Web UI's signal form or `temporal workflow signal` would.
      for (const attempt of attempts) await handle.signal<[unknown]>('approve', attempt);
      // A rejection must prove itself too: an unsigned one would let anyone stop a plan.
      await handle.signal<[unknown]>('reject', { by: 'bob', reason: 'unsigned' });
      const still = await eventually(async () => {
        const status = await handle.query(statusQuery);
        const refusals = status.timeline.filter((t) => / refused: /.test(t.detail));
        return refusals.length >= 9 ? status : undefined;
      });
      expect(still.stage).toBe('awaiting_approval');
      expect(still.approval).toBeUndefined();
      expect(await h.redis.exists(h.keys.permit(plan.plan_id))).toBe(0);

      const accepted = await runCli(
        ['approve', plan.plan_id, '--by', 'bob', '--note', 'ok', '--key', approvers.keyFile('bob')],
        env,
      );
      expect(accepted.stdout).toBe('accepted: approved by bob\n');
      expect((await handle.result()).outcome).toBe('executed');
      const late = await runCli(['approve', plan.plan_id, '--by', 'alice', '--key', approvers.keyFile('alice')], env);
      expect(late.stdout).toBe('refused: plan has already ended\n');
      expect(late.code).toBe(3);
    });
    // The signals are checked side by side, so their audit lines come in any order.
    const refusals = (await auditOf(h, plan.plan_id))
      .filter(([, decision]) => (decision ?? '').endsWith('_refused'))
      .map(([layer, decision, reason]) => `${layer} ${decision} ${reason}`.replace(/expired at \S+/, 'expired at T'))
      .sort();
    const forged =
      "operator approval_refused alice: signature does not verify with alice's key for this plan, decision and the positions shown";
    expect(refusals).toEqual(
      [
        'operator approval_refused mallory: not an approver',
        'operator approval_refused alice: unsigned: sign it with permit-chain approve --key',
        ...Array.from({ length: 5 }, () => forged),
        'operator approval_refused alice: signature expired at T',
        'operator rejection_refused bob: unsigned: sign it with permit-chain approve --key',
      ].sort(),
    );
    // Only the decision a key verified carries a fingerprint: bob's approval, not the refusals (eve's key included).
    const keyed = (await operatorKeysOf(plan)).filter((line) => !line.endsWith(' -'));
    expect(keyed).toEqual([`approved bob ${fingerprintOf('bob')}`]);
    expect(await ordersOf(plan)).toBe(1);
  });

  it('takes an approval printed by permit-chain approve --print and sent with the official temporal CLI', async () => {
    await setPositions(h, 'DOTUSDT', '4', '4');
    const plan = makePlan({ symbol: 'DOTUSDT', qty: '4' });
    const cli = temporalCliExecutable();
    if (cli.type !== 'existing-path') throw new Error('no Temporal CLI in .tools: run scripts/setup.sh');
    await h.withWorker(async () => {
      const { handle } = await awaiting(plan);
      const printed = await runCli(
        [
          'approve',
          plan.plan_id,
          '--by',
          'alice',
          '--note',
          'via temporal',
          '--key',
          approvers.keyFile('alice'),
          '--print',
        ],
        env,
      );
      expect(printed.code).toBe(0);
      const payload = printed.stdout.trim();
      const signed = JSON.parse(payload) as Record<string, unknown>;
      expect(signed).toMatchObject({ by: 'alice', note: 'via temporal' });
      expect(typeof signed.signature).toBe('string');
      await run(cli.path, [
        'workflow',
        'signal',
        '--address',
        h.config.temporalAddress,
        '-w',
        handle.workflowId,
        '--name',
        'approve',
        '--input',
        payload,
      ]);
      const final = await handle.result();
      expect(final.outcome).toBe('executed');
      expect(final.approval).toMatchObject({ by: 'alice', note: 'via temporal' });
    });
  });
});

describe("the worker's rules, whatever the submitter's environment", () => {
  it('waits for approval and accepts the worker’s approvers for a plan submitted from a shell without them', async () => {
    await setPositions(h, 'LINKUSDT', '3', '3');
    // An operator's shell: none of the worker's production settings.
    const shell = {
      REDIS_URL: env.REDIS_URL,
      TEMPORAL_ADDRESS: env.TEMPORAL_ADDRESS,
      KEY_PREFIX: env.KEY_PREFIX,
      TASK_QUEUE: env.TASK_QUEUE,
    };
    await h.withWorker(async () => {
      const submitted = await runCli(['submit', '--symbol', 'LINKUSDT', '--side', 'SELL', '--qty', '3'], shell);
      expect(submitted.code).toBe(0);
      const planId = /plan_id (\w+)/.exec(submitted.stdout)?.[1] ?? '';
      const status = await waitForStage(h, `plan-${planId}`, 'awaiting_approval');
      expect(status.mode).toBe('production');
      const approved = await runCli(['approve', planId, '--by', 'alice', '--key', approvers.keyFile('alice')], shell);
      expect(approved.stdout).toBe('accepted: approved by alice\n');
      const final = await h.client.workflow.getHandle<typeof permitChain>(`plan-${planId}`).result();
      expect(final.outcome).toBe('executed');
    });
  });

  it('does not let a submitter who names themselves an approver approve', async () => {
    await setPositions(h, 'AVAXUSDT', '2', '2');
    const mallorysShell = { ...env, TRADING_MODE: 'production', APPROVERS: 'mallory' };
    await h.withWorker(async () => {
      const submitted = await runCli(['submit', '--symbol', 'AVAXUSDT', '--side', 'SELL', '--qty', '2'], mallorysShell);
      const planId = /plan_id (\w+)/.exec(submitted.stdout)?.[1] ?? '';
      await waitForStage(h, `plan-${planId}`, 'awaiting_approval');
      const approved = await runCli(
        ['approve', planId, '--by', 'mallory', '--key', approvers.keyFile('mallory')],
        mallorysShell,
      );
      expect(approved.stdout).toBe('refused: not an approver\n');
      const handle = h.client.workflow.getHandle<typeof permitChain>(`plan-${planId}`);
      expect((await handle.query(statusQuery)).stage).toBe('awaiting_approval');
      await runCli(['cancel', planId, '--by', 'test', '--reason', 'done'], env);
      expect((await handle.result()).outcome).toBe('cancelled');
    });
  });
});
