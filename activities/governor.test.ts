import { describe, expect, it } from 'vitest';
import {
  decidePermit,
  needsPrice,
  snapshotHolds,
  type GovernorDecision,
  type GovernorPolicy,
  type GovernorState,
} from './governor';
import { Dec } from '../lib/decimal';
import type { SymbolRules } from './exchange/port';
import type { Plan, Approval, PositionSnapshot, TradingMode } from '../contract/types';

const NOW = 1_700_000_000_000;
const PLAN_ID = 'a1b2c3d4e5f60718';

const plan: Plan = {
  plan_id: PLAN_ID,
  action: 'EXECUTE',
  symbol: 'BTCUSDT',
  side: 'SELL',
  qty: '0.062',
  reduce_only: true,
  source: 'exit-monitor',
  created_at: NOW,
};

describe('decidePermit (Governor)', () => {
  const PRICE = '97000.5';
  const TAKEN = NOW - 1_000;

  const snapshot = (overrides: Partial<PositionSnapshot> = {}): PositionSnapshot => ({
    exchange_amount: '0.062',
    ledger_amount: '0.062',
    tolerance: '0.001',
    taken_at: TAKEN,
    ...overrides,
  });

  const approval = (seen: Partial<PositionSnapshot> = {}): Approval & { key_fingerprint: string } => ({
    by: 'alice',
    key_fingerprint: 'SHA256:alice',
    at: TAKEN,
    note: 'checked the book',
    snapshot: snapshot(seen),
    expires_at: TAKEN + 60_000,
    signature: 'c2lnbmVk',
  });

  const decide = (
    overrides: { qty?: string; policy?: Partial<GovernorPolicy>; state?: Partial<GovernorState>; price?: string } = {},
  ): GovernorDecision =>
    decidePermit(
      { ...plan, qty: overrides.qty ?? plan.qty },
      { mode: 'testnet', ...overrides.policy },
      { killSwitch: false, price: new Dec(overrides.price ?? PRICE), ...overrides.state },
    );

  const testnetGrant = { kind: 'grant', reason: 'testnet_auto_approved', approvedBy: 'auto:testnet' } as const;
  const sizeDenied = { kind: 'deny', reason: 'size_limit_exceeded' } as const;

  it('grants on testnet as auto:testnet', () => {
    expect(decide()).toEqual({ ...testnetGrant, detail: 'testnet' });
  });

  it.each<[string, string, string, object]>([
    ['exactly at the max qty', '0.062', '0.062', testnetGrant],
    ['0.00000001 above the max qty', '0.06200001', '0.062', sizeDenied],
    ['0.00000001 below the max qty', '0.06199999', '0.062', testnetGrant],
    ['at the max qty written with trailing zeros', '0.062', '0.06200000', testnetGrant],
    ['exactly at a max qty of 8 decimals', '0.00000001', '0.00000001', testnetGrant],
    ['0.00000001 above a max qty of 0', '0.00000001', '0', sizeDenied],
    ['far above the max qty', '12345678.12345678', '1', sizeDenied],
  ])('qty %s (qty %s, max qty %s)', (_name, qty, maxQty, expected) => {
    expect(decide({ qty, policy: { maxQty } })).toMatchObject(expected);
  });

  it.each<[string, string, string, string, object]>([
    // 0.12345678 × 97000.5 = 11975.36938839 exactly.
    ['exactly at the max notional', '0.12345678', PRICE, '11975.36938839', testnetGrant],
    ['0.00000001 above the max notional', '0.12345678', PRICE, '11975.36938838', sizeDenied],
    ['0.00000001 below the max notional', '0.12345678', PRICE, '11975.3693884', testnetGrant],
    ['one qty step (0.00000001) above the max notional', '0.12345679', PRICE, '11975.36938839', sizeDenied],
    ['a price 0.00000001 higher', '0.12345678', '97000.50000001', '11975.36938839', sizeDenied],
    ['a product that floats would round up (0.1 × 3 = 0.3)', '0.1', '3', '0.3', testnetGrant],
    ['a zero price', '1', '0', '0', testnetGrant],
  ])('notional %s (qty %s × price %s, max %s)', (_name, qty, price, maxNotional, expected) => {
    expect(decide({ qty, price, policy: { maxNotional } })).toMatchObject(expected);
  });

  it('names the qty and the limit in a max qty denial', () => {
    const decision = decide({ qty: '0.06200001', policy: { maxQty: '0.062' } });
    expect(decision).toEqual({ ...sizeDenied, detail: 'qty 0.06200001 > max 0.062' });
  });

  it('names the exact notional and the limit in a max notional denial', () => {
    const decision = decide({ qty: '0.12345679', policy: { maxNotional: '11975.36938839' } });
    expect(decision).toEqual({ ...sizeDenied, detail: 'notional 11975.370358395 > max 11975.36938839' });
  });

  it('checks the max qty before the max notional', () => {
    const decision = decide({ qty: '1', policy: { maxQty: '0.5', maxNotional: '1' } });
    expect(decision).toMatchObject(sizeDenied);
    expect(decision.detail.startsWith('qty ')).toBe(true);
  });

  it('denies on the max notional when the max qty holds', () => {
    const decision = decide({ qty: '0.5', policy: { maxQty: '0.5', maxNotional: '1' } });
    expect(decision).toMatchObject(sizeDenied);
    expect(decision.detail.startsWith('notional ')).toBe(true);
  });

  it.each<[string, TradingMode, Partial<GovernorPolicy>, Partial<GovernorState>]>([
    ['on testnet', 'testnet', {}, {}],
    ['in production without an approval', 'production', {}, {}],
    ['in production with a holding approval', 'production', {}, { approvals: [approval()], positions: snapshot() }],
    ['in production with a stale approval', 'production', {}, { approvals: [approval()], positions: undefined }],
    ['over the max qty', 'testnet', { maxQty: '0.001' }, {}],
    ['over the max notional', 'testnet', { maxNotional: '1' }, {}],
    [
      'over both limits in production with an approval',
      'production',
      { maxQty: '0', maxNotional: '0' },
      { approvals: [approval()], positions: snapshot() },
    ],
  ])('denies kill_switch_active first: %s', (_name, mode, policy, state) => {
    expect(decide({ policy: { mode, ...policy }, state: { ...state, killSwitch: true } })).toEqual({
      kind: 'deny',
      reason: 'kill_switch_active',
      detail: 'the kill switch is on',
    });
  });

  it('applies the size limits in production before asking for an approval', () => {
    expect(decide({ qty: '0.06200001', policy: { mode: 'production', maxQty: '0.062' } })).toMatchObject(sizeDenied);
    expect(
      decide({
        qty: '0.06200001',
        policy: { mode: 'production', maxQty: '0.062' },
        state: { approvals: [approval()], positions: snapshot() },
      }),
    ).toMatchObject(sizeDenied);
  });

  it('grants on testnet whatever approval or positions it is given', () => {
    const state = { approvals: [approval()], positions: snapshot({ exchange_amount: '5' }) };
    expect(decide({ state })).toMatchObject(testnetGrant);
  });

  it('asks for an approval in production when there is none', () => {
    const decision = decide({ policy: { mode: 'production' }, state: { positions: snapshot() } });
    expect(decision).toMatchObject({ kind: 'ask', reason: 'approval_required' });
    expect(decide({ policy: { mode: 'production' } })).toMatchObject({ kind: 'ask', reason: 'approval_required' });
  });

  it('grants in production on an approval whose positions still hold, naming the approver', () => {
    const decision = decide({
      policy: { mode: 'production' },
      state: { approvals: [approval()], positions: snapshot() },
    });
    expect(decision).toEqual({ kind: 'grant', reason: 'approved', approvedBy: 'alice', detail: 'approved by alice' });
  });

  it('asks again (approval_stale) when an approval is present but the positions are not', () => {
    const decision = decide({ policy: { mode: 'production' }, state: { approvals: [approval()] } });
    expect(decision).toMatchObject({ kind: 'ask', reason: 'approval_stale' });
    expect(decision.detail).toContain('alice');
  });

  const stale = { kind: 'ask', reason: 'approval_stale' } as const;
  const approved = { kind: 'grant', reason: 'approved', approvedBy: 'alice' } as const;

  it.each<[string, Partial<PositionSnapshot>, object]>([
    ['no drift', {}, approved],
    ['exchange up exactly the tolerance', { exchange_amount: '0.063' }, approved],
    ['exchange down exactly the tolerance', { exchange_amount: '0.061' }, approved],
    ['exchange up 0.00000001 more than the tolerance', { exchange_amount: '0.06300001' }, stale],
    ['exchange down 0.00000001 more than the tolerance', { exchange_amount: '0.06099999' }, stale],
    ['ledger up exactly the tolerance', { ledger_amount: '0.063' }, approved],
    ['ledger down exactly the tolerance', { ledger_amount: '0.061' }, approved],
    ['ledger up 0.00000001 more than the tolerance', { ledger_amount: '0.06300001' }, stale],
    ['ledger down 0.00000001 more than the tolerance', { ledger_amount: '0.06099999' }, stale],
    ['both exactly at the tolerance', { exchange_amount: '0.063', ledger_amount: '0.061' }, approved],
    ['exchange at, ledger above the tolerance', { exchange_amount: '0.063', ledger_amount: '0.06099999' }, stale],
    ['the position flipped to a short', { exchange_amount: '-0.062', ledger_amount: '-0.062' }, stale],
    ['a later snapshot time only', { taken_at: NOW + 60_000 }, approved],
  ])('in production, positions now with %s since the approval (tolerance 0.001)', (_name, now, expected) => {
    const decision = decide({
      policy: { mode: 'production' },
      state: { approvals: [approval()], positions: snapshot(now) },
    });
    expect(decision).toMatchObject(expected);
  });
});

describe('decidePermit: four eyes (APPROVAL_QUORUM)', () => {
  // 0.062 × 97000.5 = 6014.031
  const PRICE = new Dec('97000.5');
  const shown: PositionSnapshot = {
    exchange_amount: '0.062',
    ledger_amount: '0.062',
    tolerance: '0.001',
    taken_at: NOW,
  };
  const signed = (by: string, seen: Partial<PositionSnapshot> = {}, key = `SHA256:${by}`) => ({
    by,
    at: NOW,
    snapshot: { ...shown, ...seen },
    expires_at: NOW + 60_000,
    signature: 'c2lnbmVk',
    key_fingerprint: key,
  });
  const decide = (quorum: GovernorPolicy['quorum'], approvals: ReturnType<typeof signed>[], positions = shown) =>
    decidePermit(
      plan,
      { mode: 'production', ...(quorum ? { quorum } : {}) },
      { killSwitch: false, price: PRICE, positions, approvals },
    );

  it.each<[string, GovernorPolicy['quorum'], ReturnType<typeof signed>[], object]>([
    ['no rule, one signature', undefined, [signed('alice')], { kind: 'grant', approvedBy: 'alice' }],
    ['quorum 1, one signature', { count: 1 }, [signed('alice')], { kind: 'grant', approvedBy: 'alice' }],
    [
      'quorum 2, one signature',
      { count: 2 },
      [signed('alice')],
      { kind: 'ask', reason: 'approval_required', required: 2, counted: ['alice'], shown },
    ],
    [
      'quorum 2, two distinct approvers, in signing order',
      { count: 2 },
      [signed('bob'), signed('alice')],
      { kind: 'grant', reason: 'approved', approvedBy: 'bob,alice', detail: 'approved by bob,alice' },
    ],
    [
      'quorum 2, the same approver twice',
      { count: 2 },
      [signed('alice'), signed('alice')],
      { kind: 'ask', reason: 'approval_required', required: 2, counted: ['alice'] },
    ],
    [
      'quorum 2, two names with one key',
      { count: 2 },
      [signed('alice'), signed('bob', {}, 'SHA256:alice')],
      { kind: 'ask', reason: 'approval_required', counted: ['alice'] },
    ],
    [
      'quorum 2, two signatures over different positions',
      { count: 2 },
      [signed('alice'), signed('bob', { ledger_amount: '0.061' })],
      { kind: 'ask', reason: 'approval_required', counted: ['alice'] },
    ],
    [
      'quorum 2, the same positions shown at another time',
      { count: 2 },
      [signed('alice'), signed('bob', { taken_at: NOW + 1 })],
      { kind: 'ask', reason: 'approval_required', counted: ['alice'] },
    ],
    ['quorum 2, none', { count: 2 }, [], { kind: 'ask', reason: 'approval_required', required: 2, counted: [] }],
    [
      'quorum 3, three distinct',
      { count: 3 },
      [signed('alice'), signed('bob'), signed('carol')],
      { kind: 'grant', approvedBy: 'alice,bob,carol' },
    ],
    [
      'quorum 2 above a notional of 6014.03 (the plan is 6014.031)',
      { count: 2, aboveNotional: '6014.03' },
      [signed('alice')],
      { kind: 'ask', required: 2 },
    ],
    [
      'quorum 2 above a notional exactly the plan’s (6014.031): one is enough',
      { count: 2, aboveNotional: '6014.031' },
      [signed('alice')],
      { kind: 'grant', approvedBy: 'alice' },
    ],
    [
      'quorum 2 above a notional of 10000: a small plan needs one',
      { count: 2, aboveNotional: '10000' },
      [],
      { kind: 'ask', required: 1 },
    ],
  ])('%s', (_name, quorum, approvals, expected) => {
    expect(decide(quorum, approvals)).toMatchObject(expected);
  });

  it('says which signature did not count and why', () => {
    const decision = decide({ count: 2 }, [signed('alice'), signed('bob', { ledger_amount: '0.061' })]);
    expect(decision.detail).toBe(
      '1 of 2 distinct approvers signed (alice); bob not counted: signed other positions ' +
        '(exchange 0.062, ledger 0.061) than alice (exchange 0.062, ledger 0.062)',
    );
  });

  it('asks the whole quorum again (approval_stale) once the positions moved, keeping no signature', () => {
    const moved = { ...shown, ledger_amount: '0.002' };
    expect(decide({ count: 2 }, [signed('alice'), signed('bob')], moved)).toMatchObject({
      kind: 'ask',
      reason: 'approval_stale',
      counted: [],
      detail: 'positions moved since alice, bob approved',
    });
  });

  it('needs the price for a threshold, in production only', () => {
    const quorum = { count: 2, aboveNotional: '1000' };
    expect(needsPrice(plan, { mode: 'production', quorum }, undefined)).toBe(true);
    expect(needsPrice(plan, { mode: 'testnet', quorum }, undefined)).toBe(false);
    expect(needsPrice(plan, { mode: 'production', quorum: { count: 2 } }, undefined)).toBe(false);
    expect(needsPrice(plan, { mode: 'production', quorum: { count: 1, aboveNotional: '1' } }, undefined)).toBe(false);
    expect(() =>
      decidePermit(plan, { mode: 'production', quorum }, { killSwitch: false, positions: shown, approvals: [] }),
    ).toThrow(/needs the price/);
  });
});

describe('snapshotHolds', () => {
  const snap = (exchange: string, ledger: string, tolerance: string, takenAt = NOW): PositionSnapshot => ({
    exchange_amount: exchange,
    ledger_amount: ledger,
    tolerance,
    taken_at: takenAt,
  });

  it.each<[string, PositionSnapshot, PositionSnapshot, boolean]>([
    ['identical', snap('0.062', '0.062', '0.001'), snap('0.062', '0.062', '0.001'), true],
    ['exchange drift exactly the tolerance', snap('0.062', '0.002', '0.001'), snap('0.063', '0.002', '0.001'), true],
    [
      'exchange drift 0.00000001 above the tolerance',
      snap('0.062', '0.002', '0.001'),
      snap('0.06300001', '0.002', '0.001'),
      false,
    ],
    [
      'exchange drift down 0.00000001 above the tolerance',
      snap('0.062', '0.002', '0.001'),
      snap('0.06099999', '0.002', '0.001'),
      false,
    ],
    ['ledger drift exactly the tolerance', snap('0.062', '0.002', '0.001'), snap('0.062', '0.001', '0.001'), true],
    [
      'ledger drift 0.00000001 above the tolerance',
      snap('0.062', '0.002', '0.001'),
      snap('0.062', '0.00099999', '0.001'),
      false,
    ],
    [
      'ledger drift up 0.00000001 above the tolerance',
      snap('0.062', '0.002', '0.001'),
      snap('0.062', '0.00300001', '0.001'),
      false,
    ],
    ['any drift with a tolerance of 0', snap('0.062', '0.002', '0'), snap('0.062', '0.00200001', '0'), false],
    ['no drift with a tolerance of 0', snap('0.062', '0.002', '0'), snap('0.0620', '0.00200', '0'), true],
    [
      '8-decimal amounts drifting exactly 0.00000001',
      snap('12345678.12345678', '-12345678.12345678', '0.00000001'),
      snap('12345678.12345677', '-12345678.12345679', '0.00000001'),
      true,
    ],
    ['through zero, exactly at the tolerance', snap('0.0005', '0', '0.001'), snap('-0.0005', '0', '0.001'), true],
    ['through zero, above the tolerance', snap('0.0005', '0', '0.001'), snap('-0.00050001', '0', '0.001'), false],
    ['a mismatch the approver saw, unchanged', snap('0.062', '0.002', '0.001'), snap('0.062', '0.002', '0.001'), true],
  ])('%s: %s', (_name, seen, now, holds) => {
    expect(snapshotHolds(seen, now)).toBe(holds);
  });

  it('uses the tolerance now, not the one the approver saw', () => {
    expect(snapshotHolds(snap('0.062', '0.062', '1'), snap('0.063', '0.062', '0.001'))).toBe(true);
    expect(snapshotHolds(snap('0.062', '0.062', '1'), snap('0.063', '0.062', '0.0009'))).toBe(false);
    expect(snapshotHolds(snap('0.062', '0.062', '0'), snap('0.5', '0.062', '1'))).toBe(true);
  });

  it('ignores when each snapshot was taken', () => {
    expect(snapshotHolds(snap('1', '1', '0', NOW), snap('1', '1', '0', NOW + 3_600_000))).toBe(true);
  });
});

describe('decidePermit: the exchange’s trading rules (Binance)', () => {
  const rules: SymbolRules = {
    symbol: 'BTCUSDT',
    step_size: '0.001',
    min_qty: '0.001',
    max_qty: '120',
    min_notional: '100',
  };
  const testnet: GovernorPolicy = { mode: 'testnet' };
  const decide = (over: Partial<Plan>, state: Partial<GovernorState> = {}) =>
    decidePermit({ ...plan, ...over }, testnet, { killSwitch: false, rules, price: new Dec('60000'), ...state });

  it.each<[string, Partial<Plan>, GovernorDecision['reason']]>([
    ['on the step', { qty: '0.062' }, 'testnet_auto_approved'],
    ['on the step, padded', { qty: '0.0620' }, 'testnet_auto_approved'],
    ['off the step: denied, never rounded', { qty: '0.0625' }, 'qty_step_violation'],
    ['below the minimum quantity', { qty: '0.0005' }, 'qty_step_violation'],
    ['above the maximum quantity', { qty: '120.001' }, 'above_max_qty'],
    ['at the maximum quantity', { qty: '120' }, 'testnet_auto_approved'],
    ['below the minimum notional, opening', { qty: '0.001', reduce_only: false, side: 'BUY' }, 'below_min_notional'],
    ['below the minimum notional, reduce-only (Binance allows it)', { qty: '0.001' }, 'testnet_auto_approved'],
    ['at the minimum notional exactly', { qty: '0.002', reduce_only: false }, 'testnet_auto_approved'],
  ])('%s', (_case, over, reason) => {
    expect(decide(over).reason).toBe(reason);
  });

  it('names the rule and the numbers in the denial', () => {
    expect(decide({ qty: '0.0625' })).toEqual({
      kind: 'deny',
      reason: 'qty_step_violation',
      detail: 'qty 0.0625 is not a multiple of the step 0.001',
    });
    expect(decide({ qty: '0.001', reduce_only: false }).detail).toBe('notional 60 (qty 0.001 × mark 60000) < min 100');
  });

  it('below the minimum quantity with a step that fits is its own reason', () => {
    const coarse = { ...rules, step_size: '0.0001', min_qty: '0.001' };
    expect(decide({ qty: '0.0005' }, { rules: coarse }).reason).toBe('below_min_qty');
  });

  it('denies a symbol the exchange does not list', () => {
    expect(decide({}, { rules: 'unknown' })).toEqual({
      kind: 'deny',
      reason: 'unknown_symbol',
      detail: 'the exchange does not list BTCUSDT',
    });
  });

  it('the kill switch comes first; the rules before the size limits', () => {
    expect(decide({ qty: '0.0625' }, { killSwitch: true }).reason).toBe('kill_switch_active');
    const limited = decidePermit(
      { ...plan, qty: '0.0625' },
      { mode: 'testnet', maxQty: '0.01' },
      {
        killSwitch: false,
        rules,
        price: new Dec('60000'),
      },
    );
    expect(limited.reason).toBe('qty_step_violation');
  });

  it('reads the price only when a notional rule or limit applies', () => {
    expect(needsPrice(plan, testnet, rules)).toBe(false); // reduce-only: no minimum notional
    expect(needsPrice({ ...plan, reduce_only: false }, testnet, rules)).toBe(true);
    expect(needsPrice(plan, { mode: 'testnet', maxNotional: '1000' }, undefined)).toBe(true);
    expect(needsPrice({ ...plan, reduce_only: false }, testnet, undefined)).toBe(false); // paper: no rules
    expect(needsPrice({ ...plan, reduce_only: false }, testnet, 'unknown')).toBe(false);
  });
});
