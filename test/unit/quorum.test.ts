import { describe, expect, it } from 'vitest';
import { Dec } from '../../lib/decimal';
import { approvedByOf, quorumProgressLine, quorumRuleText, requiredApprovals, tallySignatures } from '../../lib/quorum';
import type { PositionSnapshot } from '../../contract/types';

const shown: PositionSnapshot = { exchange_amount: '5', ledger_amount: '5', tolerance: '0.001', taken_at: 1000 };
const sig = (by: string, key = `SHA256:${by}`, seen: Partial<PositionSnapshot> = {}) => ({
  by,
  key_fingerprint: key,
  snapshot: { ...shown, ...seen },
});

describe('requiredApprovals', () => {
  it.each<[string, { count: number; aboveNotional?: string } | undefined, string | undefined, number]>([
    ['no rule', undefined, undefined, 1],
    ['quorum 1', { count: 1 }, undefined, 1],
    ['quorum 2 for every plan', { count: 2 }, undefined, 2],
    ['quorum 2 for every plan, whatever the notional', { count: 2 }, '0.01', 2],
    ['quorum 2 above 1000, notional 1000.00000001', { count: 2, aboveNotional: '1000' }, '1000.00000001', 2],
    ['quorum 2 above 1000, notional exactly 1000', { count: 2, aboveNotional: '1000' }, '1000', 1],
    ['quorum 2 above 1000, notional 999.99999999', { count: 2, aboveNotional: '1000' }, '999.99999999', 1],
    ['quorum 3 above 0, any notional', { count: 3, aboveNotional: '0' }, '0.00000001', 3],
    ['quorum 1 above 1000: one, with no notional needed', { count: 1, aboveNotional: '1000' }, undefined, 1],
  ])('%s → %i', (_name, rule, notional, required) => {
    expect(requiredApprovals(rule, notional === undefined ? undefined : new Dec(notional))).toBe(required);
  });

  it('needs the notional when a threshold decides', () => {
    expect(() => requiredApprovals({ count: 2, aboveNotional: '1000' }, undefined)).toThrow(/needs the notional/);
  });
});

describe('tallySignatures', () => {
  it.each<[string, ReturnType<typeof sig>[], string[], string[]]>([
    ['none', [], [], []],
    ['one', [sig('alice')], ['alice'], []],
    ['two distinct, in signing order', [sig('bob'), sig('alice')], ['bob', 'alice'], []],
    ['the same name twice', [sig('alice'), sig('alice')], ['alice'], ['alice has already signed']],
    [
      'the same key under two names',
      [sig('alice'), sig('bob', 'SHA256:alice')],
      ['alice'],
      ['signed with the key alice'],
    ],
    [
      'other positions',
      [sig('alice'), sig('bob', undefined, { ledger_amount: '4' })],
      ['alice'],
      ['signed other positions (exchange 5, ledger 4) than alice (exchange 5, ledger 5)'],
    ],
    [
      'the first signature sets the positions: later ones over others do not count',
      [sig('alice', undefined, { exchange_amount: '6' }), sig('bob'), sig('carol')],
      ['alice'],
      ['signed other positions', 'signed other positions'],
    ],
    ['a third after a refused one', [sig('alice'), sig('alice'), sig('carol')], ['alice', 'carol'], ['already signed']],
  ])('%s', (_name, signatures, counted, refused) => {
    const tally = tallySignatures(signatures);
    expect(tally.counted.map((s) => s.by)).toEqual(counted);
    expect(tally.refused).toHaveLength(refused.length);
    refused.forEach((why, i) => expect(tally.refused[i]?.why).toContain(why));
    expect(tally.snapshot).toEqual(signatures[0]?.snapshot);
  });
});

describe('the rule as the worker states it', () => {
  it.each<[string, { count: number; aboveNotional?: string } | undefined, string]>([
    ['no rule', undefined, 'one signature per plan'],
    ['quorum 1', { count: 1, aboveNotional: '5' }, 'one signature per plan'],
    ['quorum 2', { count: 2 }, 'quorum 2'],
    ['quorum 2 above a notional', { count: 2, aboveNotional: '10000' }, 'quorum 2 above notional 10000'],
  ])('%s', (_name, rule, text) => {
    expect(quorumRuleText(rule)).toBe(text);
  });
});

describe('approved_by and the progress line', () => {
  it('joins the names in signing order with a comma', () => {
    expect(approvedByOf(['alice'])).toBe('alice');
    expect(approvedByOf(['bob', 'alice'])).toBe('bob,alice');
  });

  it.each<[string, number, { by: string; key_fingerprint?: string }[], string]>([
    ['nobody yet, quorum 2', 2, [], '2 of alice, bob, carol needed'],
    ['nobody yet, quorum 1', 1, [], '1 of alice, bob, carol needed'],
    [
      'alice signed, quorum 2',
      2,
      [{ by: 'alice', key_fingerprint: 'SHA256:abc' }],
      'approved by alice (SHA256:abc); 1 more of bob, carol needed',
    ],
    [
      'alice and carol signed, quorum 2',
      2,
      [
        { by: 'alice', key_fingerprint: 'SHA256:abc' },
        { by: 'carol', key_fingerprint: 'SHA256:def' },
      ],
      'approved by alice (SHA256:abc), carol (SHA256:def)',
    ],
    ['without a fingerprint', 3, [{ by: 'bob' }], 'approved by bob; 2 more of alice, carol needed'],
  ])('%s', (_name, required, signed, line) => {
    expect(quorumProgressLine(required, signed, ['alice', 'bob', 'carol'])).toBe(line);
  });
});
