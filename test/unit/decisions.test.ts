import { describe, expect, it } from 'vitest';
import type { ExchangeOrder, MarketOrderRequest } from '../../activities/exchange/port';
import { fillPaperOrder } from '../../activities/exchange/paper';
import { checkPermits, type PermitCheck, type StoredPermit } from '../../activities/execute';
import {
  decidePermit,
  snapshotHolds,
  type GovernorDecision,
  type GovernorPolicy,
  type GovernorState,
} from '../../activities/governor';
import { killSwitchOn } from '../../activities/kill-switch';
import { ledgerAfterFill, settleUnappliedFill, type Fill, type Settlement } from '../../activities/ledger';
import { decideP33 } from '../../activities/p33';
import { Dec } from '../../lib/decimal';
import type {
  Approval,
  GovernorPermit,
  P33Permit,
  Plan,
  PositionSnapshot,
  Side,
  TradingMode,
} from '../../contract/types';

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

  const approval = (seen: Partial<PositionSnapshot> = {}): Approval => ({
    by: 'alice',
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
    ['in production with a holding approval', 'production', {}, { approval: approval(), positions: snapshot() }],
    ['in production with a stale approval', 'production', {}, { approval: approval(), positions: undefined }],
    ['over the max qty', 'testnet', { maxQty: '0.001' }, {}],
    ['over the max notional', 'testnet', { maxNotional: '1' }, {}],
    [
      'over both limits in production with an approval',
      'production',
      { maxQty: '0', maxNotional: '0' },
      { approval: approval(), positions: snapshot() },
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
        state: { approval: approval(), positions: snapshot() },
      }),
    ).toMatchObject(sizeDenied);
  });

  it('grants on testnet whatever approval or positions it is given', () => {
    const state = { approval: approval(), positions: snapshot({ exchange_amount: '5' }) };
    expect(decide({ state })).toMatchObject(testnetGrant);
  });

  it('asks for an approval in production when there is none', () => {
    const decision = decide({ policy: { mode: 'production' }, state: { positions: snapshot() } });
    expect(decision).toMatchObject({ kind: 'ask', reason: 'approval_required' });
    expect(decide({ policy: { mode: 'production' } })).toMatchObject({ kind: 'ask', reason: 'approval_required' });
  });

  it('grants in production on an approval whose positions still hold, naming the approver', () => {
    const decision = decide({ policy: { mode: 'production' }, state: { approval: approval(), positions: snapshot() } });
    expect(decision).toEqual({ kind: 'grant', reason: 'approved', approvedBy: 'alice', detail: 'approved by alice' });
  });

  it('asks again (approval_stale) when an approval is present but the positions are not', () => {
    const decision = decide({ policy: { mode: 'production' }, state: { approval: approval() } });
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
      state: { approval: approval(), positions: snapshot(now) },
    });
    expect(decision).toMatchObject(expected);
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

describe('decideP33 (Position State Brain)', () => {
  const decide = (
    order: { side: Side; qty: string; reduce_only: boolean },
    exchange: string,
    ledger: string | Dec,
    tolerance: string,
  ) =>
    decideP33(order, {
      exchangeAmount: new Dec(exchange),
      ledgerAmount: typeof ledger === 'string' ? new Dec(ledger) : ledger,
      tolerance: new Dec(tolerance),
    });

  // A small reduce-only SELL that every long position below passes, so only the discrepancy decides.
  const smallSell = { side: 'SELL', qty: '0.001', reduce_only: true } as const;

  it.each<[string, string, string, boolean, string]>([
    ['exactly at the tolerance', '0.003', '0.002', true, '0.001'],
    ['0.00000001 above the tolerance', '0.00300001', '0.002', false, '0.00100001'],
    ['0.00000001 below the tolerance', '0.00299999', '0.002', true, '0.00099999'],
    ['exactly at the tolerance, ledger above the exchange', '0.001', '0.002', true, '0.001'],
    ['0.00000001 above the tolerance, ledger above the exchange', '0.001', '0.00200001', false, '0.00100001'],
    ['no discrepancy', '0.062', '0.062', true, '0'],
  ])('with a discrepancy %s (exchange %s, ledger %s, tolerance 0.001) allows: %s', (_n, ex, led, allow, diff) => {
    const decision = decide(smallSell, ex, led, '0.001');
    expect(decision.allow).toBe(allow);
    expect(decision.reason).toBe(allow ? 'positions_reconciled' : 'reconcile_required_qty_mismatch');
    expect(decision.discrepancy.toFixed()).toBe(diff);
  });

  it('denies the reported incident: exchange 0.062, ledger 0.002, SELL 0.062 reduce-only', () => {
    const decision = decide({ side: 'SELL', qty: '0.062', reduce_only: true }, '0.062', '0.002', '0.001');
    expect(decision.allow).toBe(false);
    expect(decision.reason).toBe('reconcile_required_qty_mismatch');
    expect(decision.discrepancy.toFixed()).toBe('0.06');
  });

  it('allows the incident once the ledger is reconciled to 0.062', () => {
    const decision = decide({ side: 'SELL', qty: '0.062', reduce_only: true }, '0.062', '0.062', '0.001');
    expect(decision).toMatchObject({ allow: true, reason: 'positions_reconciled' });
  });

  it.each<[string, Side, string, string, boolean, string]>([
    ['SELL against a short', 'SELL', '0.01', '-0.05', false, 'reduce_only_wrong_side'],
    ['BUY against a long', 'BUY', '0.01', '0.05', false, 'reduce_only_wrong_side'],
    ['SELL larger than the long', 'SELL', '0.07', '0.062', false, 'reduce_only_exceeds_position'],
    ['SELL 0.00000001 larger than the long', 'SELL', '0.06200001', '0.062', false, 'reduce_only_exceeds_position'],
    ['SELL exactly the long', 'SELL', '0.062', '0.062', true, 'positions_reconciled'],
    ['SELL part of the long', 'SELL', '0.02', '0.062', true, 'positions_reconciled'],
    ['BUY exactly the short', 'BUY', '0.05', '-0.05', true, 'positions_reconciled'],
    ['BUY larger than the short', 'BUY', '0.06', '-0.05', false, 'reduce_only_exceeds_position'],
    ['SELL with no position', 'SELL', '0.01', '0', false, 'reduce_only_exceeds_position'],
  ])('reduce-only %s', (_name, side, qty, position, allow, reason) => {
    const decision = decide({ side, qty, reduce_only: true }, position, position, '0');
    expect(decision.allow).toBe(allow);
    expect(decision.reason).toBe(reason);
  });

  it.each<[string, Side, string, string]>([
    ['SELL against a short', 'SELL', '0.01', '-0.05'],
    ['BUY against a long', 'BUY', '0.01', '0.05'],
    ['SELL larger than the long', 'SELL', '1', '0.062'],
    ['SELL with no position', 'SELL', '0.01', '0'],
  ])('not reduce-only, ignores the reduce-only checks: %s', (_name, side, qty, position) => {
    const decision = decide({ side, qty, reduce_only: false }, position, position, '0');
    expect(decision).toMatchObject({ allow: true, reason: 'positions_reconciled' });
  });

  it('not reduce-only, still denies a mismatch', () => {
    const decision = decide({ side: 'BUY', qty: '1', reduce_only: false }, '0.062', '0.002', '0.001');
    expect(decision).toMatchObject({ allow: false, reason: 'reconcile_required_qty_mismatch' });
  });

  it('compares 8-decimal quantities exactly where floats would not: exchange 0.3, ledger 0.1 + 0.2', () => {
    expect(0.1 + 0.2).not.toBe(0.3); // the float sum this test guards against
    const ledger = new Dec('0.1').add(new Dec('0.2'));
    const decision = decide({ side: 'SELL', qty: '0.3', reduce_only: true }, '0.3', ledger, '0');
    expect(decision.allow).toBe(true);
    expect(decision.reason).toBe('positions_reconciled');
    expect(decision.discrepancy.isZero()).toBe(true);
  });

  it.each<[string, string, string, boolean]>([
    ['12345678.12345678', '12345678.12345677', '0.00000001', true],
    ['12345678.12345678', '12345678.12345677', '0', false],
    ['0.00000001', '0', '0', false],
    ['0.00000001', '0', '0.00000001', true],
  ])('exchange %s, ledger %s, tolerance %s: allows %s', (exchange, ledger, tolerance, allow) => {
    expect(decide({ side: 'BUY', qty: '1', reduce_only: false }, exchange, ledger, tolerance).allow).toBe(allow);
  });
});

describe('checkPermits (Execute gate)', () => {
  const MARGIN_MS = 5_000;

  const governorPermit = (overrides: Partial<GovernorPermit> = {}): GovernorPermit => ({
    plan_id: PLAN_ID,
    symbol: 'BTCUSDT',
    granted: true,
    mode: 'testnet',
    reason: 'testnet_auto_approved',
    approved_by: 'auto:testnet',
    issued_at: NOW,
    expires_at: NOW + 60_000,
    ...overrides,
  });

  const p33Permit = (overrides: Partial<P33Permit> = {}): P33Permit => ({
    plan_id: PLAN_ID,
    symbol: 'BTCUSDT',
    allow: true,
    reason: 'positions_reconciled',
    exchange_amount: '0.062',
    ledger_amount: '0.062',
    discrepancy: '0',
    tolerance: '0.001',
    evaluated_at: NOW + 10,
    ...overrides,
  });

  const stored = (permit: GovernorPermit | P33Permit | null, pttlMs: number): StoredPermit => ({
    json: permit === null ? null : JSON.stringify(permit),
    pttlMs,
  });

  const live = MARGIN_MS + 1;
  const refused = (reason: string, layer: 'governor' | 'p33') => ({ ok: false, reason, layer });

  it.each<[string, StoredPermit, StoredPermit, { ok: true } | ReturnType<typeof refused>]>([
    ['both permits 1 ms more than the margin', stored(governorPermit(), live), stored(p33Permit(), live), { ok: true }],
    [
      'governor permit with exactly the margin left',
      stored(governorPermit(), MARGIN_MS),
      stored(p33Permit(), live),
      refused('permit_expiring', 'governor'),
    ],
    [
      'p33 permit with exactly the margin left',
      stored(governorPermit(), live),
      stored(p33Permit(), MARGIN_MS),
      refused('permit_expiring', 'p33'),
    ],
    [
      'governor permit missing',
      { json: null, pttlMs: -2 },
      stored(p33Permit(), live),
      refused('permit_missing', 'governor'),
    ],
    [
      'p33 permit missing',
      stored(governorPermit(), live),
      { json: null, pttlMs: -2 },
      refused('permit_missing', 'p33'),
    ],
    [
      'governor permit with PTTL -2',
      stored(governorPermit(), -2),
      stored(p33Permit(), live),
      refused('permit_missing', 'governor'),
    ],
    [
      'governor permit with no expiry (PTTL -1)',
      stored(governorPermit(), -1),
      stored(p33Permit(), live),
      refused('permit_missing', 'governor'),
    ],
    [
      'p33 permit with no expiry (PTTL -1)',
      stored(governorPermit(), live),
      stored(p33Permit(), -1),
      refused('permit_missing', 'p33'),
    ],
    [
      'governor permit for another plan',
      stored(governorPermit({ plan_id: 'ffffffffffffffff' }), live),
      stored(p33Permit(), live),
      refused('permit_missing', 'governor'),
    ],
    [
      'p33 permit for another plan',
      stored(governorPermit(), live),
      stored(p33Permit({ plan_id: 'ffffffffffffffff' }), live),
      refused('permit_missing', 'p33'),
    ],
    [
      'governor permit that is not JSON',
      { json: '{not json', pttlMs: live },
      stored(p33Permit(), live),
      refused('permit_missing', 'governor'),
    ],
    [
      'governor permit not granted',
      stored(governorPermit({ granted: false, reason: 'kill_switch_active', approved_by: null }), live),
      stored(p33Permit(), live),
      refused('permit_denied', 'governor'),
    ],
    [
      'p33 permit not allowed',
      stored(governorPermit(), live),
      stored(p33Permit({ allow: false, reason: 'reconcile_required_qty_mismatch', ledger_amount: '0.002' }), live),
      refused('permit_denied', 'p33'),
    ],
  ])('%s', (_name, governor, p33, expected) => {
    const check: PermitCheck = checkPermits(PLAN_ID, { killSwitch: false, governor, p33 }, MARGIN_MS);
    if (expected.ok) {
      expect(check).toEqual({ ok: true });
      return;
    }
    expect(check.ok).toBe(false);
    if (check.ok) return;
    expect(check.reason).toBe(expected.reason);
    expect(check.detail.startsWith(`${expected.layer} permit `)).toBe(true);
  });

  it('names the deny reason in the detail', () => {
    const check = checkPermits(
      PLAN_ID,
      {
        killSwitch: false,
        governor: stored(governorPermit(), live),
        p33: stored(p33Permit({ allow: false, reason: 'reduce_only_exceeds_position' }), live),
      },
      MARGIN_MS,
    );
    expect(check).toEqual({
      ok: false,
      reason: 'permit_denied',
      detail: 'p33 permit denied: reduce_only_exceeds_position',
    });
  });

  it.each<[number, boolean]>([
    [1, true],
    [0, false],
  ])('with a margin of 0, a permit with %i ms left passes: %s', (pttlMs, ok) => {
    const gate = { killSwitch: false, governor: stored(governorPermit(), pttlMs), p33: stored(p33Permit(), pttlMs) };
    expect(checkPermits(PLAN_ID, gate, 0).ok).toBe(ok);
  });

  it('refuses while the kill switch is on, even with both permits fresh and granted', () => {
    const fresh = { governor: stored(governorPermit(), live), p33: stored(p33Permit(), live) };
    expect(checkPermits(PLAN_ID, { killSwitch: false, ...fresh }, MARGIN_MS)).toEqual({ ok: true });
    expect(checkPermits(PLAN_ID, { killSwitch: true, ...fresh }, MARGIN_MS)).toEqual({
      ok: false,
      reason: 'kill_switch_active',
      detail: 'the kill switch is on',
    });
  });
});

describe('ledgerAfterFill', () => {
  const order = (side: Side, status: ExchangeOrder['status'], filledQty: string) => ({
    side,
    status,
    filled_qty: filledQty,
  });

  it.each<[string, Side, ExchangeOrder['status'], string, string]>([
    ['0.002', 'BUY', 'FILLED', '0.06', '0.062'],
    ['0.062', 'SELL', 'FILLED', '0.062', '0'],
    ['0', 'SELL', 'FILLED', '0.5', '-0.5'],
    ['-0.5', 'BUY', 'FILLED', '0.2', '-0.3'],
    ['0.1', 'BUY', 'FILLED', '0.2', '0.3'],
    ['12345678.12345678', 'SELL', 'FILLED', '0.00000001', '12345678.12345677'],
    ['0.062', 'SELL', 'REJECTED', '0', '0.062'],
    ['0.062', 'BUY', 'REJECTED', '0.062', '0.062'],
  ])('ledger %s after %s %s of %s is %s', (ledger, side, status, filledQty, expected) => {
    const after = ledgerAfterFill(new Dec(ledger), order(side, status, filledQty));
    expect(after.toFixed()).toBe(expected);
    expect(after.eq(new Dec(expected))).toBe(true);
  });
});

describe('settleUnappliedFill (a fill recorded but not in the ledger)', () => {
  const fill = (side: Side, filledQty: string, status = 'FILLED'): Fill => ({ side, status, filled_qty: filledQty });
  const sell1 = fill('SELL', '1');

  it.each<[string, string, Fill, string | null, Settlement]>([
    ['ledger still at its value before the fill', '5', sell1, '5', { kind: 'apply', ledger: '4' }],
    ['same value written differently', '5', sell1, '5.000', { kind: 'apply', ledger: '4' }],
    ['a BUY from a short position', '-0.5', fill('BUY', '0.2'), '-0.5', { kind: 'apply', ledger: '-0.3' }],
    ['an absent ledger before and now is zero', '', fill('BUY', '0.062'), null, { kind: 'apply', ledger: '0.062' }],
    ['smallest fill, unchanged ledger', '0', fill('BUY', '0.00000001'), '0', { kind: 'apply', ledger: '0.00000001' }],
    ['hand-set to the value after the fill', '5', sell1, '4', { kind: 'counted' }],
    ['hand-set to the value after, written differently', '5', sell1, '4.0', { kind: 'counted' }],
    ['hand-set after the smallest fill', '0', fill('BUY', '0.00000001'), '0.00000001', { kind: 'counted' }],
    ['the fill the other way round is not this fill', '5', sell1, '6', { kind: 'conflict' }],
    ['one satoshi short of the value after', '5', sell1, '4.00000001', { kind: 'conflict' }],
    ['one satoshi past the value after', '5', sell1, '3.99999999', { kind: 'conflict' }],
    ['one satoshi off the value before', '5', sell1, '5.00000001', { kind: 'conflict' }],
    ['anything else', '5', sell1, '7', { kind: 'conflict' }],
    ['the value before is not known', 'abc', sell1, '4', { kind: 'conflict' }],
    ['ledger not a decimal', '5', sell1, 'abc', { kind: 'corrupt' }],
    ['ledger not a decimal, value before unknown', 'abc', sell1, 'abc', { kind: 'corrupt' }],
    ['ledger a number Redis might hold but we do not read', '5', sell1, '1e3', { kind: 'corrupt' }],
    ['a rejected order has nothing to apply', '5', fill('SELL', '0', 'REJECTED'), '7', { kind: 'counted' }],
    ['a rejected order, even on a corrupt ledger', '5', fill('SELL', '0', 'REJECTED'), 'abc', { kind: 'counted' }],
  ])('%s: before %s, ledger now %s', (_case, before, filled, current, expected) => {
    expect(settleUnappliedFill(before, filled, current)).toEqual(expected);
  });
});

describe('killSwitchOn (fails safe)', () => {
  it.each<[string | null, boolean]>([
    [null, false],
    ['0', false],
    ['1', true],
    ['true', true],
    ['on', true],
    ['', true],
    ['off', true],
    ['false', true],
    ['00', true],
    [' 0', true],
  ])('%j is %s', (raw, on) => {
    expect(killSwitchOn(raw)).toBe(on);
  });
});

describe('fillPaperOrder', () => {
  const request = (overrides: Partial<MarketOrderRequest> = {}): MarketOrderRequest => ({
    symbol: 'BTCUSDT',
    side: 'SELL',
    qty: '0.062',
    reduceOnly: true,
    clientOrderId: PLAN_ID,
    ...overrides,
  });

  it('fills a market order at the price, under the client order id', () => {
    const { order, newPosition } = fillPaperOrder(request(), new Dec('0.062'), '101.5', NOW);
    expect(order).toEqual<ExchangeOrder>({
      order_id: `paper-${PLAN_ID}`,
      client_order_id: PLAN_ID,
      symbol: 'BTCUSDT',
      side: 'SELL',
      qty: '0.062',
      reduce_only: true,
      status: 'FILLED',
      filled_qty: '0.062',
      avg_price: '101.5',
      placed_at: NOW,
    });
    expect(newPosition.toFixed()).toBe('0');
  });

  it('rejects a reduce-only order larger than the position and leaves the position as it was', () => {
    const position = new Dec('0.062');
    const { order, newPosition } = fillPaperOrder(request({ qty: '0.07' }), position, '101.5', NOW);
    expect(order).toEqual<ExchangeOrder>({
      order_id: `paper-${PLAN_ID}`,
      client_order_id: PLAN_ID,
      symbol: 'BTCUSDT',
      side: 'SELL',
      qty: '0.07',
      reduce_only: true,
      status: 'REJECTED',
      filled_qty: '0',
      avg_price: '0',
      reject_reason: 'reduce_only_rejected',
      placed_at: NOW,
    });
    expect(newPosition.toFixed()).toBe('0.062');
    expect(ledgerAfterFill(new Dec('0.062'), order).toFixed()).toBe('0.062');
  });

  it.each<[string, Side, string, boolean, string, ExchangeOrder['status'], string]>([
    ['reduce-only SELL larger than the long', 'SELL', '0.07', true, '0.062', 'REJECTED', '0.062'],
    ['reduce-only SELL 0.00000001 larger than the long', 'SELL', '0.06200001', true, '0.062', 'REJECTED', '0.062'],
    ['reduce-only SELL against a short', 'SELL', '0.01', true, '-0.05', 'REJECTED', '-0.05'],
    ['reduce-only BUY against a long', 'BUY', '0.01', true, '0.05', 'REJECTED', '0.05'],
    ['reduce-only SELL with no position', 'SELL', '0.01', true, '0', 'REJECTED', '0'],
    ['reduce-only SELL exactly the long', 'SELL', '0.062', true, '0.062', 'FILLED', '0'],
    ['reduce-only BUY exactly the short', 'BUY', '0.05', true, '-0.05', 'FILLED', '0'],
    ['BUY of 0.00000001', 'BUY', '0.00000001', false, '0.062', 'FILLED', '0.06200001'],
    ['SELL of part of the long', 'SELL', '0.1', false, '0.3', 'FILLED', '0.2'],
    ['SELL that flips a long to a short', 'SELL', '0.1', false, '0.062', 'FILLED', '-0.038'],
    ['BUY that flips a short to a long', 'BUY', '1', false, '-0.25', 'FILLED', '0.75'],
    ['BUY from no position', 'BUY', '0.5', false, '0', 'FILLED', '0.5'],
  ])('%s: %s %s (reduce-only %s) on %s is %s, position %s', (_n, side, qty, reduceOnly, position, status, after) => {
    const { order, newPosition } = fillPaperOrder(request({ side, qty, reduceOnly }), new Dec(position), '1', NOW);
    expect(order.status).toBe(status);
    expect(order.filled_qty).toBe(status === 'FILLED' ? qty : '0');
    expect(newPosition.toFixed()).toBe(after);
  });

  it('reports the filled quantity in canonical form', () => {
    const { order } = fillPaperOrder(request({ side: 'BUY', qty: '0.0620', reduceOnly: false }), new Dec(0), '1', NOW);
    expect(order.qty).toBe('0.0620');
    expect(order.filled_qty).toBe('0.062');
  });
});
