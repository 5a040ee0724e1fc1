import { describe, expect, it } from 'vitest';
import { checkPermits, type PermitCheck, type StoredPermit } from './execute';
import type { GovernorPermit, P33Permit } from '../contract/types';

const NOW = 1_700_000_000_000;
const PLAN_ID = 'a1b2c3d4e5f60718';

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
