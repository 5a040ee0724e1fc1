import { workflowInfo } from '@temporalio/workflow';
import type { ChainStatus } from '../contract/types';
import { type Ending, PERMIT_RAN_OUT, options, regular, withinPermit } from './chain-calls';
import type { PlanRun } from './plan-run';
import { wakeNext } from './symbol-line';

/**
 * Execute talks to the exchange: an attempt may look the order up, send it and look again, each request allowed
 * 10 s (activities/exchange/binance.ts). A retry never sends twice (the adapter's sent marker), so this only bounds
 * how long a hung attempt is waited for.
 */
const EXECUTE_ATTEMPT_TIMEOUT_MS = 60_000;
/** Execute heartbeats every 2 s (activities/index.ts): a worker killed mid-Execute is noticed in this long. */
const EXECUTE_HEARTBEAT_TIMEOUT_MS = 10_000;

/** The Apply layer (P3): publishes the plan to the Apply stream, once however often it is called. */
export async function publish(run: PlanRun): Promise<'published' | typeof PERMIT_RAN_OUT> {
  const { board, plan } = run;
  const { status } = board;
  if (status.apply) return 'published';
  const deadline = run.permit?.deadline ?? 0;
  board.enter('apply', 'publishing to the Apply stream');
  run.step = 'publishPlan';
  const applied = await withinPermit(deadline, () =>
    run.layers.publishPlan.executeWithOptions(options('Apply: publish plan', deadline), [
      plan,
      workflowInfo().workflowId,
    ]),
  );
  if (applied === PERMIT_RAN_OUT) return applied;
  status.apply = applied;
  board.note(`${applied.published ? 'published' : 'already published'} as ${applied.stream_id}`);
  return 'published';
}

/** The Position State Brain (P3.3), holding the symbol: the exchange's and the ledger's positions must agree. */
export async function checkPositions(
  run: PlanRun,
): Promise<'agree' | NonNullable<ChainStatus['p33']> | typeof PERMIT_RAN_OUT> {
  const { board, plan } = run;
  const deadline = run.permit?.deadline ?? 0;
  board.enter('p33', 'comparing exchange and ledger positions');
  run.step = 'checkPosition';
  const p33 = await withinPermit(deadline, () =>
    run.layers.checkPosition.executeWithOptions(options('P3.3: position check', deadline), [plan]),
  );
  if (p33 === PERMIT_RAN_OUT) return p33;
  board.status.p33 = p33;
  if (!p33.allow) return p33;
  board.note(`positions agree: exchange ${p33.exchange_amount}, ledger ${p33.ledger_amount}`);
  return 'agree';
}

/**
 * Execute. The last point where a cancel stops the plan is before it: after this the order may be on the
 * exchange, so the activity retries until it is done and its fill reaches the ledger whatever the permits say.
 * Undefined when no order was placed: the plan, still holding the symbol, asks for a fresh permit.
 */
export async function execute(run: PlanRun): Promise<Ending | undefined> {
  const { board, plan } = run;
  const stop = run.cancelled();
  if (stop) return stop;
  board.enter('execute', 'placing the order');
  run.step = 'executePlan';
  board.publish();
  const result = await regular.executePlan.executeWithOptions(
    {
      ...options('Execute: place order'),
      startToCloseTimeout: EXECUTE_ATTEMPT_TIMEOUT_MS,
      heartbeatTimeout: EXECUTE_HEARTBEAT_TIMEOUT_MS,
    },
    [plan],
  );
  if (!result.placed) {
    board.note(`no order: ${result.detail}; asking the Governor again`);
    run.permit = undefined;
    return undefined;
  }
  // Execute let go of the symbol with the fill in the ledger; the next plan is woken from here.
  run.inLine = false;
  await wakeNext(run, result.next_in_line);
  board.status.execution = result.execution;
  const { execution } = result;
  const fill = `${execution.status} ${execution.filled_qty} @ ${execution.avg_price}`;
  const filled = result.filled ?? (execution.status === 'FILLED' ? 'all' : 'none');
  const asked = execution.requested_qty ?? plan.qty;
  const why = execution.reject_reason ? ` (${execution.reject_reason})` : '';
  if (filled === 'none') {
    return { outcome: 'failed', detail: `exchange ${fill}${why}: nothing traded, the ledger did not move` };
  }
  const mismatch = result.post_trade?.agrees === false ? `; post-trade check: ${result.post_trade.detail}` : '';
  const order = `order ${execution.order_id}, ledger ${result.ledger_amount}${mismatch}`;
  if (filled === 'part') {
    return {
      outcome: 'executed',
      detail: `partially filled: ${execution.filled_qty} of ${asked} @ ${execution.avg_price}, then ${execution.status}${why}; ${order}; the rest was not traded`,
    };
  }
  return { outcome: 'executed', detail: `${fill}, ${order}` };
}
