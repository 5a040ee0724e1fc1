import { describe, expect, it } from 'vitest';
import { formatRetryReport, type StillBlockedPlan } from '../../client/retry-report';

function blocked(planId: string, ledger: string, looked = true): StillBlockedPlan {
  return {
    plan_id: planId,
    symbol: 'BTCUSDT',
    exchange: '0.062',
    ledger,
    tolerance: '0.001',
    reason: 'reconcile_required_qty_mismatch',
    looked,
  };
}

describe('formatRetryReport', () => {
  it('groups the still blocked plans by the positions they saw, and says which had not looked again', () => {
    const text = formatRetryReport({
      moved: [{ plan_id: 'aaaaaaaaaaaaaaaa', stage: 'done', outcome: 'executed' }],
      stillBlocked: [
        blocked('bbbbbbbbbbbbbbbb', '0.002'),
        blocked('cccccccccccccccc', '0.002', false),
        blocked('dddddddddddddddd', '0.01'),
      ],
      notBlocked: [{ plan_id: 'eeeeeeeeeeeeeeee', stage: 'awaiting_approval' }],
      unknown: [],
    });
    expect(text.split('\n')).toEqual([
      '1 moved, 3 still blocked',
      '  moved    aaaaaaaaaaaaaaaa  now executed',
      '  blocked  2 on BTCUSDT: reconcile_required_qty_mismatch, exchange 0.062 vs ledger 0.002, tolerance 0.001: ' +
        'bbbbbbbbbbbbbbbb, cccccccccccccccc',
      '           1 of them had not looked again within the wait: shown as before',
      '  blocked  1 on BTCUSDT: reconcile_required_qty_mismatch, exchange 0.062 vs ledger 0.01, tolerance 0.001: ' +
        'dddddddddddddddd',
      '  waiting  eeeeeeeeeeeeeeee  awaiting_approval: not blocked, the retry changes nothing yet',
    ]);
  });
});
