import { describe, expect, it } from 'vitest';
import {
  findViolations,
  type ChainSnapshot,
  type ExpectedPlan,
  type OrderRecord,
  type Positions,
} from '../../scripts/stack/invariants';

// The cluster test's checker (scripts/stack/invariants.ts), fed snapshots with one thing broken each: it must name it.

const plans: ExpectedPlan[] = [
  { planId: 'a000000000000001', symbol: 'AAAUSDT', outcome: 'executed' },
  { planId: 'a000000000000002', symbol: 'AAAUSDT', outcome: 'executed' },
  { planId: 'b000000000000001', symbol: 'BBBUSDT', outcome: 'executed' },
  { planId: 'd000000000000001', symbol: 'BBBUSDT', outcome: 'denied' },
];
const baseline = new Map<string, Positions>([
  ['AAAUSDT', { exchange: '10', ledger: '10' }],
  ['BBBUSDT', { exchange: '-1', ledger: '-1' }],
]);
const orders: OrderRecord[] = [
  { client_order_id: 'a000000000000001', symbol: 'AAAUSDT', side: 'SELL', status: 'FILLED', filled_qty: '0.1' },
  { client_order_id: 'a000000000000002', symbol: 'AAAUSDT', side: 'BUY', status: 'FILLED', filled_qty: '0.00000003' },
  { client_order_id: 'b000000000000001', symbol: 'BBBUSDT', side: 'BUY', status: 'FILLED', filled_qty: '0.2' },
];

function clean(): ChainSnapshot {
  return {
    outcomes: new Map(plans.map((plan) => [plan.planId, plan.outcome])),
    workflows: 4,
    applyEntries: ['a000000000000001', 'b000000000000001', 'a000000000000002'],
    orders,
    positions: new Map([
      ['AAAUSDT', { exchange: '9.90000003', ledger: '9.90000003' }],
      ['BBBUSDT', { exchange: '-0.8', ledger: '-0.8' }],
    ]),
    intake: { pending: 0, lag: 0, deadLettered: 0 },
  };
}

describe('findViolations (the cluster test checker)', () => {
  it('finds nothing wrong in a run that lost and duplicated nothing', () => {
    expect(findViolations(plans, baseline, clean())).toEqual([]);
  });

  it.each<[string, (s: ChainSnapshot) => ChainSnapshot, RegExp[]]>([
    [
      'a duplicated order: the same client order id twice, and the exchange moved twice',
      (s) => ({
        ...s,
        orders: [...s.orders, { ...(orders[2] as OrderRecord) }],
        positions: new Map([...s.positions, ['BBBUSDT', { exchange: '-0.6', ledger: '-0.8' }]]),
      }),
      [/plan b000000000000001 \(executed\) has 2 orders, expected 1/, /BBBUSDT: exchange -0\.6 != ledger -0\.8/],
    ],
    [
      'a lost order: the plan says executed, the exchange has nothing',
      (s) => ({ ...s, orders: s.orders.slice(1) }),
      [
        /plan a000000000000001 \(executed\) has 0 orders, expected 1/,
        /AAAUSDT: exchange moved -0\.09999997, fills 0\.00000003/,
      ],
    ],
    [
      'a duplicated Apply entry',
      (s) => ({ ...s, applyEntries: [...s.applyEntries, 'a000000000000002'] }),
      [/plan a000000000000002 \(executed\) has 2 Apply entries, expected 1/],
    ],
    [
      'a lost Apply entry',
      (s) => ({ ...s, applyEntries: s.applyEntries.slice(1) }),
      [/plan a000000000000001 \(executed\) has 0 Apply entries/],
    ],
    [
      'a denied plan that published and ordered',
      (s) => ({
        ...s,
        applyEntries: [...s.applyEntries, 'd000000000000001'],
        orders: [
          ...s.orders,
          { client_order_id: 'd000000000000001', symbol: 'BBBUSDT', side: 'BUY', status: 'REJECTED', filled_qty: '0' },
        ],
      }),
      [
        /plan d000000000000001 \(denied\) has 1 Apply entries, expected 0/,
        /plan d000000000000001 \(denied\) has 1 orders/,
      ],
    ],
    [
      'an order of no plan of the run',
      (s) => ({
        ...s,
        orders: [
          ...s.orders,
          { client_order_id: 'ffffffffffffffff', symbol: 'AAAUSDT', side: 'BUY', status: 'FILLED', filled_qty: '1' },
        ],
      }),
      [/1 orders of unknown plan ffffffffffffffff/, /AAAUSDT: exchange moved -0\.09999997, fills 0\.90000003/],
    ],
    [
      'the ledger off by one satoshi (exact decimals, no float tolerance)',
      (s) => ({
        ...s,
        positions: new Map([...s.positions, ['AAAUSDT', { exchange: '9.90000003', ledger: '9.90000004' }]]),
      }),
      [/AAAUSDT: exchange 9\.90000003 != ledger 9\.90000004/, /AAAUSDT: ledger moved -0\.09999996, fills -0\.09999997/],
    ],
    [
      'a corrupt ledger',
      (s) => ({ ...s, positions: new Map([...s.positions, ['BBBUSDT', { exchange: '-0.8', ledger: 'oops' }]]) }),
      [/BBBUSDT: amounts not decimals/],
    ],
    [
      'a plan that has not ended',
      (s) => ({ ...s, outcomes: new Map([...s.outcomes, ['a000000000000002', undefined]]) }),
      [/plan a000000000000002 has not ended/],
    ],
    [
      'a plan that ended otherwise than designed',
      (s) => ({ ...s, outcomes: new Map([...s.outcomes, ['d000000000000001', 'executed']]) }),
      [/plan d000000000000001 ended executed, designed to end denied/],
    ],
    ['a second workflow', (s) => ({ ...s, workflows: 5 }), [/5 permitChain workflows for 4 plans/]],
    [
      'entries left pending or unread, and dead letters',
      (s) => ({ ...s, intake: { pending: 3, lag: 2, deadLettered: 1 } }),
      [/3 entries pending/, /lag 2/, /1 dead-lettered/],
    ],
  ])('names %s', (_what, breakIt, expected) => {
    const wrong = findViolations(plans, baseline, breakIt(clean()));
    expect(wrong.length).toBeGreaterThan(0);
    for (const pattern of expected) expect(wrong.join('\n')).toMatch(pattern);
  });
});
