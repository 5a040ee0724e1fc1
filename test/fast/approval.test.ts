import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { approveSignal, rejectSignal } from '../../contract/messages';
import { type FastServer, ageOf, fastPlan, reached, startFastServer, timelineOf, until } from './harness';
import { MemoryChain } from './memory-activities';

/**
 * Production mode, fast: a person approves, refuses or lets the time run out; the in-memory Governor verifies each
 * decision (a known approver, the token of {@link MemoryChain.sign}) and decides with the product's decidePermit.
 */
let fast: FastServer;
beforeAll(async () => {
  fast = await startFastServer();
});
afterAll(async () => {
  await fast?.teardown();
});

const production = { mode: 'production' as const, approvers: ['alice'] };

describe('manual approval, fast', () => {
  it('granted: alice approves what she is shown, the Governor grants on her approval, one order', async () => {
    const world = new MemoryChain(production);
    world.setPositions('BTCUSDT', '1', '1');
    const plan = fastPlan({ qty: '1' });
    const { asked, final } = await fast.run(world, async (start) => {
      const handle = await start(plan);
      const asked = await reached(handle, 'awaiting_approval');
      await handle.signal(approveSignal, world.sign(plan.plan_id, 'alice', { note: 'checked the ledger' }));
      return { asked, final: await handle.result() };
    });
    expect(asked.awaiting).toMatchObject({ exchange_amount: '1', ledger_amount: '1', tolerance: '0.001' });
    expect(asked.timeline.at(-1)?.detail).toMatch(
      /^awaiting approval of SELL 1 BTCUSDT: exchange 1, ledger 1, tolerance 0\.001; until \S+ UTC$/,
    );
    expect(asked.next_step).toContain('approve');
    expect(final.outcome).toBe('executed');
    expect(final.governor).toMatchObject({ granted: true, reason: 'approved', approved_by: 'alice' });
    expect(timelineOf(final)).toContain('awaiting_approval: approved by alice: checked the ledger');
    expect(world.auditOf(plan.plan_id).slice(0, 3)).toEqual([
      'governor approval_requested',
      'operator approved',
      'governor granted',
    ]);
    expect(world.count('executePlan')).toBe(1);
  });

  it('refused: an approval that does not verify is refused and the plan waits on; alice rejects it', async () => {
    const world = new MemoryChain(production);
    world.setPositions('ETHUSDT', '3', '3');
    const plan = fastPlan({ symbol: 'ETHUSDT', qty: '3' });
    const { afterRefusal, final } = await fast.run(world, async (start) => {
      const handle = await start(plan);
      await reached(handle, 'awaiting_approval');
      await handle.signal(approveSignal, { ...world.sign(plan.plan_id, 'alice'), signature: 'forged' });
      await handle.signal(approveSignal, world.sign(plan.plan_id, 'mallory'));
      const afterRefusal = await until(handle, (status) => status.timeline.length >= 4, 'both refusals noted');
      await handle.signal(rejectSignal, world.sign(plan.plan_id, 'alice', { reason: 'size looks wrong' }));
      return { afterRefusal, final: await handle.result() };
    });
    expect(afterRefusal.stage).toBe('awaiting_approval');
    expect(timelineOf(afterRefusal).slice(-2)).toEqual([
      'awaiting_approval: approval by alice refused: the signature does not verify',
      'awaiting_approval: approval by mallory refused: mallory is not an approver',
    ]);
    expect(afterRefusal.approvals).toBeUndefined();
    expect(final.outcome).toBe('rejected');
    expect(final.timeline.at(-1)?.detail).toBe('rejected: rejected by alice: size looks wrong');
    expect(world.auditOf(plan.plan_id)).toEqual([
      'governor approval_requested',
      'operator approval_refused',
      'operator approval_refused',
      'operator rejected',
    ]);
    expect(world.count('publishPlan') + world.count('executePlan')).toBe(0);
  });

  it('expired: nobody decides within APPROVAL_TIMEOUT_S (600 s), the plan ends expired without an order', async () => {
    const world = new MemoryChain(production);
    world.setPositions('BTCUSDT', '1', '1');
    const plan = fastPlan({ qty: '1' });
    const final = await fast.run(world, async (start) => (await start(plan)).result());
    expect(final.outcome).toBe('expired');
    expect(final.timeline.at(-1)?.detail).toBe('expired: no approval within 600s');
    expect(ageOf(final)).toBeGreaterThanOrEqual(600_000);
    expect(world.count('publishPlan') + world.count('executePlan')).toBe(0);
    expect(world.ended).toEqual(['expired']);
  });
});
