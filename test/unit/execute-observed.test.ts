import { PassThrough } from 'node:stream';
import { ApplicationFailure } from '@temporalio/common';
import type { ActivityExecuteInput } from '@temporalio/worker';
import type { Context } from '@temporalio/activity';
import { describe, expect, it } from 'vitest';
import type { ExecuteResult } from '../../contract/types';
import { createLogger } from '../../lib/log';
import { ChainMetrics, observeActivities } from '../../workers/metrics';
import { logLines } from '../helpers';

/** The worker's view of Execute's outcomes that need a person: what it counts and the line it logs. */
async function observe(outcome: () => Promise<unknown>): Promise<{ metrics: string; lines: string }> {
  const metrics = new ChainMetrics({ processMetrics: false });
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  const logger = createLogger({ format: 'json', stream });
  const ctx = { info: { activityType: 'executePlan', workflowExecution: { workflowId: 'plan-0123456789abcdef' } } };
  const inbound = observeActivities(metrics, logger)(ctx as unknown as Context).inbound;
  await inbound?.execute?.({ args: [] } as unknown as ActivityExecuteInput, outcome).catch(() => undefined);
  return { metrics: await metrics.text(), lines: Buffer.concat(chunks).toString('utf8') };
}

const filled: ExecuteResult = {
  placed: true,
  execution: {
    order_id: '7',
    client_order_id: '0123456789abcdef',
    status: 'FILLED',
    side: 'SELL',
    filled_qty: '1',
    avg_price: '2',
    executed_at: 1,
  },
  filled: 'all',
  ledger_amount: '4',
  next_in_line: '',
};

describe('Execute observed by the worker', () => {
  it('a refused exchange answer: counted, and one error line naming the plan', async () => {
    const { metrics, lines } = await observe(() =>
      Promise.reject(ApplicationFailure.nonRetryable('the answer was refused: x', 'exchange_answer_refused')),
    );
    expect(metrics).toContain('permit_chain_exchange_answers_refused_total 1');
    const errors = logLines(lines).filter((line) => line.level === 'error');
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ plan_id: '0123456789abcdef', msg: 'Execute: the answer was refused: x' });
  });

  it('another failure is neither counted as refused nor logged as one', async () => {
    const { metrics, lines } = await observe(() =>
      Promise.reject(ApplicationFailure.nonRetryable('bad', 'CorruptAmount')),
    );
    expect(metrics).toContain('permit_chain_exchange_answers_refused_total 0');
    expect(logLines(lines).filter((line) => line.level === 'error')).toEqual([]);
  });

  it('a post-trade mismatch: counted, and a warning with the detail; an agreeing check is not', async () => {
    const detail = 'exchange 3 vs ledger 4 after order 7: discrepancy 1 beyond tolerance 0.001';
    const flagged = await observe(() =>
      Promise.resolve({ ...filled, post_trade: { agrees: false, detail } } satisfies ExecuteResult),
    );
    expect(flagged.metrics).toContain('permit_chain_post_trade_mismatches_total 1');
    expect(logLines(flagged.lines).find((line) => line.level === 'warn')?.msg).toBe(
      `Execute: post-trade check: ${detail}`,
    );
    const agreed = await observe(() =>
      Promise.resolve({ ...filled, post_trade: { agrees: true, detail: 'ok' } } satisfies ExecuteResult),
    );
    expect(agreed.metrics).toContain('permit_chain_post_trade_mismatches_total 0');
  });
});
