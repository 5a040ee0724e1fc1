import { describe, expect, it } from 'vitest';
import { chaosViolations, involvedPlans, type ChaosEnding, type FedPlan } from '../../scripts/chaos/chaos-check';
import { seededRandom } from '../../scripts/stack/seeded-random';

const A = 'aaaaaaaaaaaaaaaa';
const B = 'bbbbbbbbbbbbbbbb';
const D = 'dddddddddddddddd';
const plans: FedPlan[] = [
  { planId: A, symbol: 'XUSDT', outcome: 'executed' },
  { planId: B, symbol: 'XUSDT', outcome: 'executed' },
  { planId: D, symbol: 'XUSDT', outcome: 'denied' },
];
const order = (planId: string, side: string, qty: string, time = 1_000) => ({
  planId,
  clientOrderId: planId,
  symbol: 'XUSDT',
  side,
  status: 'FILLED',
  executedQty: qty,
  time,
});

/** A run that went right: A sold 0.5, B bought 0.25, D was denied; 100 → 99.75 on both sides. */
function good(): ChaosEnding {
  return {
    outcomes: new Map([
      [A, 'executed'],
      [B, 'executed'],
      [D, 'denied'],
    ]),
    permitExpiresAt: new Map([
      [A, 2_000],
      [B, 2_000],
    ]),
    workflows: 3,
    applyEntries: [A, B],
    orders: [order(A, 'SELL', '0.500'), order(B, 'BUY', '0.25')],
    positions: new Map([['XUSDT', { start: '100', exchange: '99.75', ledger: '99.750' }]]),
    intake: { pending: 0, lag: 0 },
    malformed: ['1-0'],
    deadLettered: ['1-0'],
  };
}

describe('the chaos run invariants', () => {
  it('find nothing wrong in a run that went right', () => {
    expect(chaosViolations(plans, good())).toEqual([]);
  });

  it('name the plan with a second order (an Execute that resent blindly) and the symbol it moved', () => {
    const ending = { ...good(), orders: [...good().orders, order(A, 'SELL', '0.5', 1_500)] };
    ending.positions = new Map([['XUSDT', { start: '100', exchange: '99.25', ledger: '99.75' }]]);
    const found = chaosViolations(plans, ending);
    expect(found.map((v) => v.text)).toEqual([
      `plan ${A} has 2 orders, expected 1`,
      'XUSDT: exchange 99.25 != ledger 99.75',
      'XUSDT: ledger moved -0.25 from 100, fills -0.75',
    ]);
    expect(involvedPlans(found)).toEqual([A]);
  });

  it('name a plan not ended, ended otherwise, with two Apply entries, or ordering after its deadline', () => {
    const ending = good();
    ending.outcomes = new Map([
      [A, undefined],
      [B, 'executed'],
      [D, 'executed'],
    ]);
    ending.applyEntries = [A, B, B];
    ending.orders = [order(A, 'SELL', '0.5'), order(B, 'BUY', '0.25', 2_001)];
    const texts = chaosViolations(plans, ending).map((v) => v.text);
    expect(texts).toContain(`plan ${A} has not ended`);
    expect(texts).toContain(`plan ${D} ended executed, designed to end denied`);
    expect(texts).toContain(`plan ${B} has 2 Apply entries, expected 1`);
    expect(texts).toContain(`plan ${D} has 0 Apply entries, expected 1`);
    expect(
      texts.some((t) => t.startsWith(`plan ${B}: order placed at`) && t.includes("after its permit's deadline")),
    ).toBe(true);
  });

  it('catch a ledger one step off, pending entries, a malformed entry not dead-lettered, and a good one that was', () => {
    const ending = good();
    ending.positions = new Map([['XUSDT', { start: '100', exchange: '99.75', ledger: '99.751' }]]);
    ending.intake = { pending: 2, lag: 1 };
    ending.malformed = ['1-0', '2-0'];
    ending.deadLettered = ['1-0', '3-0'];
    expect(chaosViolations(plans, ending).map((v) => v.text)).toEqual([
      'XUSDT: exchange 99.75 != ledger 99.751',
      'XUSDT: ledger moved -0.249 from 100, fills -0.25',
      "2 entries pending in the intake's consumer group",
      'intake group lag 1: entries never read',
      'malformed entry 2-0 was not dead-lettered',
      'entry 3-0 was dead-lettered, not malformed',
    ]);
  });

  it('replay the same schedule from the same seed', () => {
    const draw = (seed: number) => Array.from({ length: 5 }, seededRandom(seed));
    expect(draw(42)).toEqual(draw(42));
    expect(draw(42)).not.toEqual(draw(43));
  });
});
