import { ApplicationFailure } from '@temporalio/common';
import type { ActivityInterceptorsFactory, InjectedSinks } from '@temporalio/worker';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ChainActivities } from '../activities';
import type { GovernorTurn } from '../activities/governor-turn';
import type { ExecuteResult, P33Permit } from '../contract/types';
import { planFields, planIdOf, type Logger } from '../lib/log';
import type { ChainObserverSinks } from '../workflows/observe';

/**
 * The chain's Prometheus series, all `permit_chain_*`. Each is measured where it is true summed over any number of
 * processes: counters and histograms where the event happens once (an activity's attempt in the worker that runs it,
 * a plan's start and end in the worker that runs that workflow task, an entry in the intake that takes it); the
 * gauges of state shared by all (blocked plans, pending entries) are read at scrape time from Temporal's visibility
 * and Redis, so every process reports the same value: aggregate them with max(), not sum().
 */
export class ChainMetrics {
  readonly registry = new Registry();

  readonly plansStarted = new Counter({
    name: 'permit_chain_plans_started_total',
    help: "Plans whose workflow started (counted once, by the worker that ran the plan's first workflow task).",
    registers: [this.registry],
  });
  readonly plansEnded = new Counter({
    name: 'permit_chain_plans_ended_total',
    help: 'Plans that ended, by outcome (executed, denied, rejected, expired, cancelled, failed).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly planDuration = new Histogram({
    name: 'permit_chain_plan_duration_seconds',
    help: "Chain latency: from the plan's workflow start to its end, by outcome.",
    labelNames: ['outcome'] as const,
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600],
    registers: [this.registry],
  });
  readonly stageDuration = new Histogram({
    name: 'permit_chain_stage_duration_seconds',
    help: "Time of one layer's call (one activity attempt), by stage and activity, ok or error.",
    labelNames: ['stage', 'activity', 'result'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly permits = new Counter({
    name: 'permit_chain_permits_total',
    help: "The Governor's and P3.3's decisions, by layer, decision and reason (as in the audit stream).",
    labelNames: ['layer', 'decision', 'reason'] as const,
    registers: [this.registry],
  });
  readonly executions = new Counter({
    name: 'permit_chain_executions_total',
    help: "Execute's results: an order's status (FILLED, …), or not_placed and why.",
    labelNames: ['status', 'reason'] as const,
    registers: [this.registry],
  });
  readonly postTradeMismatches = new Counter({
    name: 'permit_chain_post_trade_mismatches_total',
    help: "Fills after which the exchange's position and the ledger differed beyond the tolerance (post-trade check).",
    registers: [this.registry],
  });
  readonly answersRefused = new Counter({
    name: 'permit_chain_exchange_answers_refused_total',
    help: "Plans failed because the exchange's answer about their order failed its check twice (never applied).",
    registers: [this.registry],
  });
  readonly lineEnded = new Counter({
    name: 'permit_chain_line_closed_plans_total',
    help:
      "Plans Temporal closed while in a symbol's line or holding it (terminated, timed out), taken out by the worker's " +
      'line sweep: role waiter (its place dropped) or holder (the symbol freed).',
    labelNames: ['role'] as const,
    registers: [this.registry],
  });
  readonly intakeEntries = new Counter({
    name: 'permit_chain_intake_entries_total',
    help: 'Entries of the exit.plan stream the intake took: started (a workflow exists) or dead_lettered.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly deadLettersTrimmed = new Counter({
    name: 'permit_chain_dead_letter_trimmed_total',
    help: 'Old entries of the exit.plan.dead stream dropped by its cap (DEAD_LETTER_MAXLEN) as new ones were added.',
    registers: [this.registry],
  });
  readonly intakeLag = new Histogram({
    name: 'permit_chain_intake_lag_seconds',
    help: "Intake lag: from an entry's arrival on the exit.plan stream (its id's time) to its plan's workflow start.",
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });

  readonly streamTrimmed = new Counter({
    name: 'permit_chain_stream_trimmed_entries_total',
    help: "Entries the worker trimmed from the chain's streams (audit, apply) to keep them near their caps.",
    labelNames: ['stream'] as const,
    registers: [this.registry],
  });

  constructor(options: { processMetrics?: boolean } = {}) {
    // CPU, memory, event loop lag and the like, without a prefix: the conventional names dashboards know.
    if (options.processMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  /** The Prometheus text of every series, the chain's and then `extra` (the SDK's, when given). */
  async text(extra?: () => Promise<string>): Promise<string> {
    const own = await this.registry.metrics();
    const more = extra ? await extra() : '';
    return more === '' ? own : `${own}\n${more.endsWith('\n') ? more : `${more}\n`}`;
  }
}

/** Which layer each activity belongs to: the `stage` label of its durations. */
const STAGE_OF: Record<keyof ChainActivities, string> = {
  governorTurn: 'governor',
  verifyDecision: 'governor',
  recordOperatorDecision: 'operator',
  publishPlan: 'apply',
  checkPosition: 'p33',
  peekPosition: 'p33',
  executePlan: 'execute',
  holdSymbol: 'symbol',
  releaseSymbol: 'symbol',
  dropWaiter: 'symbol',
  carryOver: 'carry',
  resumeCarried: 'carry',
};

/** What a layer's result says, counted: a permit's decision, P3.3's, Execute's order. */
function countResult(metrics: ChainMetrics, activity: string, result: unknown, log: Logger): void {
  // One call per turn: the Governor's answer is in it when the plan held its symbol and asked for a permit.
  const answer = activity === 'governorTurn' ? (result as GovernorTurn).answer : undefined;
  if (answer) {
    if (answer.kind === 'permit') {
      const { granted, reason } = answer.permit;
      metrics.permits.inc({ layer: 'governor', decision: granted ? 'granted' : 'denied', reason });
      if (!granted) log.info({ layer: 'governor', reason }, `Governor denied: ${reason}`);
    } else if (answer.kind === 'approval_required') {
      metrics.permits.inc({ layer: 'governor', decision: 'approval_requested', reason: answer.reason });
    } else {
      metrics.permits.inc({ layer: 'governor', decision: 'rate_limited', reason: 'rate_limited' });
    }
  } else if (activity === 'checkPosition') {
    const permit = result as P33Permit;
    metrics.permits.inc({ layer: 'p33', decision: permit.allow ? 'allowed' : 'denied', reason: permit.reason });
    if (!permit.allow) {
      log.info(
        {
          layer: 'p33',
          reason: permit.reason,
          exchange_amount: permit.exchange_amount,
          ledger_amount: permit.ledger_amount,
        },
        `P3.3 denied: ${permit.reason} (exchange ${permit.exchange_amount} vs ledger ${permit.ledger_amount}, tolerance ${permit.tolerance})`,
      );
    }
  } else if (activity === 'executePlan') {
    const outcome = result as ExecuteResult;
    if (outcome.placed) {
      const { status, order_id, filled_qty, avg_price } = outcome.execution;
      metrics.executions.inc({ status, reason: '' });
      log.info(
        { order_id, status, filled_qty, avg_price },
        `Execute: order ${order_id} ${status} ${filled_qty} @ ${avg_price}`,
      );
      const check = outcome.post_trade;
      if (check?.agrees === false) {
        metrics.postTradeMismatches.inc();
        log.warn({ order_id, post_trade: check }, `Execute: post-trade check: ${check.detail}`);
      }
    } else {
      metrics.executions.inc({ status: 'not_placed', reason: outcome.reason });
      log.info({ reason: outcome.reason }, `Execute: no order (${outcome.detail})`);
    }
  }
}

/**
 * The activity interceptor that times every layer's call and counts its decision, in the worker that runs it (local
 * activities included): an attempt is timed once, wherever it runs. Its lines about a plan carry `plan_id` and
 * `workflow_id`.
 */
export function observeActivities(metrics: ChainMetrics, logger: Logger): ActivityInterceptorsFactory {
  return (ctx) => ({
    inbound: {
      async execute(input, next) {
        const { activityType } = ctx.info;
        const workflowId = ctx.info.workflowExecution?.workflowId ?? '';
        const planId = planIdOf(workflowId);
        const stage = STAGE_OF[activityType as keyof ChainActivities] ?? 'other';
        const started = performance.now();
        let result: unknown;
        try {
          result = await next(input);
        } catch (err) {
          metrics.stageDuration.observe(
            { stage, activity: activityType, result: 'error' },
            (performance.now() - started) / 1000,
          );
          if (err instanceof ApplicationFailure && err.type === 'exchange_answer_refused') {
            metrics.answersRefused.inc();
            const log = logger.child(planId !== undefined ? planFields(planId) : { workflow_id: workflowId });
            log.error({ error_type: err.type }, `Execute: ${err.message}`);
          }
          throw err;
        }
        metrics.stageDuration.observe(
          { stage, activity: activityType, result: 'ok' },
          (performance.now() - started) / 1000,
        );
        const log = logger.child(planId !== undefined ? planFields(planId) : { workflow_id: workflowId });
        countResult(metrics, activityType, result, log);
        return result;
      },
    },
  });
}

/** The worker's end of workflows/observe.ts: plan starts and endings, counted and logged. */
export function chainObserverSinks(metrics: ChainMetrics, logger: Logger): InjectedSinks<ChainObserverSinks> {
  return {
    chainObserver: {
      planStarted: {
        fn: (info) => {
          metrics.plansStarted.inc();
          logger.debug(idFields(info.workflowId), 'plan started');
        },
      },
      planEnded: {
        fn: (info, outcome) => {
          // The worker's clock against the server's start time: both are wall clocks, and the chain is the span.
          const seconds = Math.max(0, (Date.now() - info.startTime.getTime()) / 1000);
          metrics.plansEnded.inc({ outcome });
          metrics.planDuration.observe({ outcome }, seconds);
          logger.info(
            { ...idFields(info.workflowId), outcome, duration_s: Number(seconds.toFixed(3)) },
            `plan ended: ${outcome}`,
          );
        },
      },
    },
  };
}

function idFields(workflowId: string): Record<string, string> {
  const planId = planIdOf(workflowId);
  return planId !== undefined ? planFields(planId) : { workflow_id: workflowId };
}
