import { createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPlan } from '../../client/plans';
import type { WhatIfReport } from '../../client/what-if';
import { keyFingerprint } from '../../lib/approval';
import { loadConfig, type ChainConfig } from '../../lib/config';
import type { ChainStatus, Plan, PositionSnapshot } from '../../contract/types';
import { approvePlanUpdate, approveSignal, rejectPlanUpdate, statusQuery } from '../../contract/messages';
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

/**
 * Four eyes on the real dev server: production mode with APPROVAL_QUORUM=2 among alice, bob and carol. A plan waits
 * until two distinct approvers have signed the positions it shows; a rejection by any one of them ends it.
 */
const approvers = testApprovers('alice', 'bob', 'carol');
const env = testEnv({
  TRADING_MODE: 'production',
  APPROVERS: 'alice,bob,carol',
  APPROVER_KEYS_DIR: approvers.dir,
  APPROVAL_TIMEOUT_S: '120',
  APPROVAL_QUORUM: '2',
});
let h: ChainHarness;
beforeAll(async () => {
  h = await chainHarness(loadConfig(env));
});
afterAll(() => h.close());

function fingerprintOf(name: string): string {
  return keyFingerprint(createPublicKey(readFileSync(join(approvers.dir, `${name}.pub`))));
}

/** The operator layer's audit entries of a plan: `decision reason key_fingerprint` (or `-`). */
async function operatorEntriesOf(plan: Plan): Promise<string[]> {
  const entries = await h.redis.xrange(h.keys.auditStream, '-', '+');
  return entries
    .map(([, fields]) => Object.fromEntries(pairs(fields)))
    .filter((e) => e.plan_id === plan.plan_id && e.layer === 'operator')
    .map((e) => `${e.decision} ${e.reason ?? ''} ${e.key_fingerprint ?? '-'}`);
}

async function permitOf(plan: Plan): Promise<Record<string, unknown> | null> {
  const raw = await h.redis.get(h.keys.permit(plan.plan_id));
  return raw === null ? null : (JSON.parse(raw) as Record<string, unknown>);
}

async function awaiting(
  plan: Plan,
  config: ChainConfig = h.config,
): Promise<{ handle: WorkflowHandle<typeof permitChain>; shown: PositionSnapshot }> {
  const { workflowId, handle } = await startPlan(h.client, config, plan);
  const status = await waitForStage(h, workflowId, 'awaiting_approval');
  if (!status.awaiting) throw new Error('awaiting approval without positions to show');
  return { handle, shown: status.awaiting };
}

/** The approval a CLI call gives, as an operator types it. */
function approve(plan: Plan, name: string, cliEnv: Record<string, string> = env) {
  return runCli(['approve', plan.plan_id, '--by', name, '--key', approvers.keyFile(name)], cliEnv);
}

async function details(handle: WorkflowHandle): Promise<string> {
  return (await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata')).currentDetails ?? '';
}

describe('APPROVAL_QUORUM=2 (production mode, signed approvals)', () => {
  it('waits after one signature, does not count the same approver twice, and executes on a second approver', async () => {
    await setPositions(h, 'BTCUSDT', '0.062', '0.062');
    const plan = makePlan({ symbol: 'BTCUSDT', qty: '0.062' });
    await h.withWorker(async () => {
      const { handle } = await awaiting(plan);
      expect(await details(handle)).toContain('**Approvals:** 2 of alice, bob, carol needed');
      expect(await details(handle)).toContain(
        '**Next:** awaiting approval by alice, bob, carol: 2 distinct approvers sign, each once, before ',
      );

      const first = await approve(plan, 'alice');
      expect(first.stdout).toBe('accepted: approved by alice (1 of 2)\n');
      expect(first.code).toBe(0);
      const one = await handle.query(statusQuery);
      expect(one.stage).toBe('awaiting_approval');
      expect(one.approvals?.map((a) => [a.by, a.key_fingerprint])).toEqual([['alice', fingerprintOf('alice')]]);
      expect(one.quorum).toEqual({ required: 2, approvers: ['alice', 'bob', 'carol'] });
      expect(await permitOf(plan)).toBeNull();
      const progress = `approved by alice (${fingerprintOf('alice')}); 1 more of bob, carol needed`;
      expect(await details(handle)).toContain(`**Approvals:** ${progress}`);
      const status = await runCli(['status', plan.plan_id], env);
      expect(status.stdout).toContain(`  approvals ${progress}\n`);

      // alice again, with a fresh signature: still one approver.
      const again = await approve(plan, 'alice');
      expect(again.stdout).toBe('refused: alice has already signed: each approver counts once\n');
      expect(again.code).toBe(3);
      expect((await handle.query(statusQuery)).stage).toBe('awaiting_approval');
      expect(await permitOf(plan)).toBeNull();

      const second = await approve(plan, 'bob');
      expect(second.stdout).toBe('accepted: approved by bob (2 of 2)\n');
      const final = await handle.result();
      expect(final.outcome).toBe('executed');
      expect(final.approvals?.map((a) => a.by)).toEqual(['alice', 'bob']);
      expect(final.governor).toMatchObject({ granted: true, reason: 'approved', approved_by: 'alice,bob' });
    });
    expect(await permitOf(plan)).toMatchObject({ granted: true, approved_by: 'alice,bob' });
    expect(await auditOf(h, plan.plan_id)).toContainEqual(['governor', 'granted', 'approved by alice,bob']);
    expect(await operatorEntriesOf(plan)).toEqual([
      `approved alice ${fingerprintOf('alice')}`,
      'approval_refused alice: alice has already signed: each approver counts once -',
      `approved bob ${fingerprintOf('bob')}`,
    ]);
    expect(await h.redis.exists(h.keys.paperOrder(plan.plan_id))).toBe(1);
  });

  it('ends rejected when one approver rejects after another approved, with no order', async () => {
    await setPositions(h, 'ETHUSDT', '1', '1');
    const plan = makePlan({ symbol: 'ETHUSDT', qty: '1' });
    await h.withWorker(async () => {
      const { handle, shown } = await awaiting(plan);
      const approved = await handle.executeUpdate(approvePlanUpdate, {
        args: [approvers.sign(plan.plan_id, 'alice', shown)],
      });
      expect(approved).toEqual({ accepted: true, detail: 'approved by alice (1 of 2)' });
      const rejected = await handle.executeUpdate(rejectPlanUpdate, {
        args: [approvers.sign(plan.plan_id, 'carol', shown, { kind: 'reject', reason: 'too big' })],
      });
      expect(rejected).toEqual({ accepted: true, detail: 'rejected by carol' });
      const final = await handle.result();
      expect(final.outcome).toBe('rejected');
      expect(final.timeline.at(-1)?.detail).toBe('rejected: rejected by carol: too big');
    });
    expect(await permitOf(plan)).toBeNull();
    expect(await h.redis.exists(h.keys.paperOrder(plan.plan_id), h.keys.applyPublished(plan.plan_id))).toBe(0);
  });

  it('does not combine signatures over different positions: after the positions moved, both sign again', async () => {
    await setPositions(h, 'SOLUSDT', '5', '5');
    const plan = makePlan({ symbol: 'SOLUSDT', qty: '5' });
    await h.withWorker(async () => {
      const { handle, shown } = await awaiting(plan);
      const alicesFirst = approvers.sign(plan.plan_id, 'alice', shown);
      await handle.executeUpdate(approvePlanUpdate, { args: [alicesFirst] });
      // The positions move while the plan waits; bob signs what it still shows, completing the quorum.
      await setPositions(h, 'SOLUSDT', '6', '6');
      await handle.executeUpdate(approvePlanUpdate, { args: [approvers.sign(plan.plan_id, 'bob', shown)] });
      // The Governor finds the positions moved since both signed: it asks the whole quorum again, over the new ones.
      const asked = await eventually(async () => {
        const status = await handle.query(statusQuery);
        return status.stage === 'awaiting_approval' && status.awaiting?.ledger_amount === '6' ? status : undefined;
      });
      expect(asked.approvals).toBeUndefined();
      expect(asked.timeline.at(-1)?.detail).toMatch(
        /^positions moved since the approvals; awaiting approval by 2 distinct approvers of SELL 5 SOLUSDT: exchange 6, ledger 6/,
      );
      const moved = asked.awaiting as PositionSnapshot;
      // alice's signature over the old positions is refused, and does not count with bob's over the new ones.
      await handle.signal(approveSignal, alicesFirst);
      const bob = await handle.executeUpdate(approvePlanUpdate, { args: [approvers.sign(plan.plan_id, 'bob', moved)] });
      expect(bob).toEqual({ accepted: true, detail: 'approved by bob (1 of 2)' });
      const waiting = await eventually(async () => {
        const status = await handle.query(statusQuery);
        return status.timeline.some((t) => t.detail.startsWith('approval by alice refused: ')) ? status : undefined;
      });
      expect(waiting.stage).toBe('awaiting_approval');
      expect(waiting.approvals?.map((a) => a.by)).toEqual(['bob']);
      expect(waiting.timeline.find((t) => t.detail.startsWith('approval by alice refused: '))?.detail).toBe(
        "approval by alice refused: signature does not verify with alice's key for this plan, decision and the " +
          'positions shown',
      );
      await handle.executeUpdate(approvePlanUpdate, { args: [approvers.sign(plan.plan_id, 'alice', moved)] });
      const final = await handle.result();
      expect(final.outcome).toBe('executed');
      expect(final.governor?.approved_by).toBe('bob,alice');
    });
    const governor = (await auditOf(h, plan.plan_id)).filter(([layer]) => layer === 'governor');
    expect(governor.map(([, decision, reason]) => `${decision}:${reason}`)).toEqual([
      'approval_requested:approval_required',
      'approval_requested:approval_stale',
      'granted:approved by bob,alice',
    ]);
  });

  it('needs one signature for a plan at or below APPROVAL_QUORUM_ABOVE_NOTIONAL, two above it', async () => {
    const above = loadConfig({ ...env, APPROVAL_QUORUM_ABOVE_NOTIONAL: '1000', TASK_QUEUE: `${env.TASK_QUEUE}-above` });
    // The paper exchange fills at 100: 10 ADA is a notional of 1000 (at the threshold), 10.1 is 1010.
    await h.redis.set(h.keys.paperPrice('ADAUSDT'), '100');
    await setPositions(h, 'ADAUSDT', '30', '30');
    const small = makePlan({ symbol: 'ADAUSDT', qty: '10' });
    const big = makePlan({ symbol: 'ADAUSDT', qty: '10.1' });
    const [smallFinal, bigOne, bigFinal] = await h.withWorker(
      async () => {
        const s = await awaiting(small, above);
        expect(await details(s.handle)).toContain('**Approvals:** 1 of alice, bob, carol needed');
        await s.handle.executeUpdate(approvePlanUpdate, { args: [approvers.sign(small.plan_id, 'carol', s.shown)] });
        const smallResult = await s.handle.result();
        const b = await awaiting(big, above);
        const reply = await b.handle.executeUpdate(approvePlanUpdate, {
          args: [approvers.sign(big.plan_id, 'carol', b.shown)],
        });
        expect(reply.detail).toBe('approved by carol (1 of 2)');
        const one = await b.handle.query(statusQuery);
        await b.handle.executeUpdate(approvePlanUpdate, { args: [approvers.sign(big.plan_id, 'alice', b.shown)] });
        return [smallResult, one, await b.handle.result()] as [ChainStatus, ChainStatus, ChainStatus];
      },
      undefined,
      { config: above },
    );
    expect(smallFinal.outcome).toBe('executed');
    expect(smallFinal.governor?.approved_by).toBe('carol');
    expect(bigOne.stage).toBe('awaiting_approval');
    expect(bigOne.quorum?.required).toBe(2);
    expect(bigFinal.outcome).toBe('executed');
    expect(bigFinal.governor?.approved_by).toBe('carol,alice');
  });
});

describe('a quorum that grows while the plan waits', () => {
  it('keeps the first signature and asks for a second when the price lifts the plan above the threshold', async () => {
    const above = loadConfig({ ...env, APPROVAL_QUORUM_ABOVE_NOTIONAL: '1000', TASK_QUEUE: `${env.TASK_QUEUE}-lift` });
    await h.redis.set(h.keys.paperPrice('LINKUSDT'), '50');
    await setPositions(h, 'LINKUSDT', '10', '10');
    const plan = makePlan({ symbol: 'LINKUSDT', qty: '10' });
    const final = await h.withWorker(
      async () => {
        // Asked at 50: a notional of 500 needs one signature.
        const { handle, shown } = await awaiting(plan, above);
        expect((await handle.query(statusQuery)).quorum?.required).toBe(1);
        // At 200 the plan is 2000 when the Governor decides on alice's signature: one more is needed.
        await h.redis.set(h.keys.paperPrice('LINKUSDT'), '200');
        await handle.executeUpdate(approvePlanUpdate, { args: [approvers.sign(plan.plan_id, 'alice', shown)] });
        const again = await eventually(async () => {
          const status = await handle.query(statusQuery);
          return status.stage === 'awaiting_approval' && status.quorum?.required === 2 ? status : undefined;
        });
        // alice's signature still counts: the positions shown are the ones she signed.
        expect(again.awaiting).toEqual(shown);
        expect(again.approvals?.map((a) => a.by)).toEqual(['alice']);
        expect(await details(handle)).toContain(
          `**Approvals:** approved by alice (${fingerprintOf('alice')}); 1 more of bob, carol needed`,
        );
        const bob = await handle.executeUpdate(approvePlanUpdate, {
          args: [approvers.sign(plan.plan_id, 'bob', shown)],
        });
        expect(bob.detail).toBe('approved by bob (2 of 2)');
        return handle.result();
      },
      undefined,
      { config: above },
    );
    expect(final.outcome).toBe('executed');
    expect(final.governor?.approved_by).toBe('alice,bob');
    const governor = (await auditOf(h, plan.plan_id)).filter(([layer]) => layer === 'governor');
    expect(governor.map(([, decision, reason]) => `${decision}:${reason}`)).toEqual([
      'approval_requested:approval_required',
      'approval_requested:approval_required',
      'granted:approved by alice,bob',
    ]);
  });
});

describe('what-if re-decides the quorum', () => {
  type WhatIfJson = WhatIfReport & { proposed: Record<string, string> };
  async function whatIf(...args: string[]): Promise<WhatIfJson> {
    const run = await runCli(['what-if', '--json', '--since', '10m', ...args], env);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    return JSON.parse(run.stdout) as WhatIfJson;
  }

  it('flips a grant by two approvers to awaiting a third under a quorum of 3, and nothing under the rule it ran', async () => {
    await setPositions(h, 'DOTUSDT', '4', '4');
    const plan = makePlan({ symbol: 'DOTUSDT', qty: '4' });
    await h.withWorker(async () => {
      const { handle, shown } = await awaiting(plan);
      for (const name of ['carol', 'bob']) {
        await handle.executeUpdate(approvePlanUpdate, { args: [approvers.sign(plan.plan_id, name, shown)] });
      }
      expect((await handle.result()).outcome).toBe('executed');
    });
    const same = await whatIf();
    expect(same.proposed).toMatchObject({ APPROVAL_QUORUM: '2' });
    expect(same.flips.filter((f) => f.plan_id === plan.plan_id)).toEqual([]);

    const three = await whatIf('--approval-quorum', '3');
    expect(three.proposed).toMatchObject({ APPROVAL_QUORUM: '3', APPROVERS: 'alice,bob,carol' });
    expect(three.flips.find((f) => f.plan_id === plan.plan_id)).toMatchObject({
      layer: 'governor',
      before: { decision: 'granted', reason: 'approved' },
      after: { decision: 'approval_required', reason: 'approval_required' },
      why: '2 of 3 distinct approvers signed (carol, bob); quorum 3, the plan ran under quorum 2',
    });
    // Without bob among the approvers, carol alone is short of the plan's own quorum.
    const withoutBob = await whatIf('--approvers', 'alice,carol');
    expect(withoutBob.flips.find((f) => f.plan_id === plan.plan_id)?.why).toBe(
      'bob not among the proposed approvers; 1 of 2 distinct approvers signed (carol)',
    );
    // A quorum larger than the proposed approvers is the worker's own refusal, naming the flag.
    const refused = await runCli(['what-if', '--since', '10m', '--approval-quorum', '4'], env);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(
      '--approval-quorum: APPROVAL_QUORUM 4 needs at least that many names in APPROVERS',
    );
  });
});
