import type { ChainStatus } from '../../contract/types';
import { EXIT, type CommandContext } from './context';
import { durationArg, oneOf, planIdArg, positiveInt, symbolArg } from '../cli-args';
import { LIST_OUTCOMES, STAGES, type PlanFilter } from '../../client/operations';
import { type Command } from 'commander';
import { formatPlanRows, formatPosition, formatStatus } from '../output';
import { parsePlan } from '../../lib/plan';
import type * as DemoModule from '../demo';
import { identityLine } from '../../lib/venue';
import { formatRetryReport, type RetryReport } from '../../client/retry-report';

/** A retry's report under --json: what moved, what is still blocked and why, what could not be read. */
function retryReportJson(report: RetryReport) {
  return {
    moved: report.moved,
    still_blocked: report.stillBlocked,
    not_blocked: report.notBlocked,
    unknown: report.unknown,
  };
}

/** Plans: submit one, look at it, wake it, list them, and the demo. */
export function addPlansCommands(program: Command, ctx: CommandContext): void {
  program
    .command('submit')
    .description('validate a plan and start its workflow; prints plan_id and workflow_id')
    .requiredOption('--symbol <symbol>', 'exchange symbol, e.g. BTCUSDT')
    .requiredOption('--side <side>', 'BUY or SELL')
    .requiredOption('--qty <qty>', 'quantity, a decimal > 0 with at most 8 decimals')
    .option('--plan-id <id>', 'the plan id (16 lowercase hex); default: derived from the plan')
    .option('--no-reduce-only', 'allow the order to open or grow a position')
    .option('--source <source>', 'who produced the plan', 'operator-cli')
    .option('--reason <text>', 'free text, kept with the plan')
    .option('--wait', 'wait for the outcome and print it (exit 0 only when executed)')
    .action(
      async (
        opts: { planId?: string; reduceOnly: boolean; reason?: string; wait?: boolean } & Record<string, string>,
      ) => {
        const { symbol, side, qty, source, planId, reason, reduceOnly } = opts;
        const fields = {
          action: 'EXECUTE',
          symbol,
          side,
          qty,
          source,
          reduce_only: reduceOnly,
          created_at: Date.now(),
        };
        const plan = parsePlan({
          ...fields,
          ...(reason !== undefined ? { reason } : {}),
          ...(planId ? { plan_id: planId } : {}),
        });
        await ctx.withChain(async (chain, o) => {
          const started = await chain.submit(plan, planId !== undefined);
          const ids = `plan_id ${started.planId}\nworkflow_id ${started.workflowId}`;
          if (!opts.wait) return o.result(ids, { plan_id: started.planId, workflow_id: started.workflowId });
          o.line(ids);
          const status: ChainStatus = await started.handle.result();
          o.result(formatStatus(status), status);
          if (status.outcome !== 'executed') ctx.setExit(EXIT.refused);
        });
      },
    );
  program
    .command('status')
    .description("the plan's status: stage, outcome, permits, timeline")
    .argument('<plan_id>', 'the plan id', planIdArg)
    .action((planId: string) =>
      ctx.withChain(async (chain, o) => {
        const status = await chain.status(planId);
        o.result(formatStatus(status), status);
      }),
    );
  program
    .command('retry')
    .description('wake a blocked plan now; a plan that ended failed runs again from its start (Temporal reset)')
    .argument('<plan_id>', 'the plan id', planIdArg)
    .option('--by <name>', 'who asks', 'operator')
    .action((planId: string, opts: { by: string }) =>
      ctx.withChain(async (chain, o) => {
        const done = await chain.retry(planId, opts.by);
        if ('signalled' in done) {
          const text = `retry sent to plan-${planId}: ${formatRetryReport(done.report)}`;
          return o.result(text, { plan_id: planId, signalled: true, ...retryReportJson(done.report) });
        }
        const build = done.buildId ? `, on build ${done.buildId}` : '';
        o.result(`plan ${planId} runs again from its start (reset, run ${done.runId}${build})`, {
          plan_id: planId,
          reset: true,
          run_id: done.runId,
          ...(done.buildId ? { build_id: done.buildId } : {}),
        });
      }),
    );
  program
    .command('position')
    .description("the exchange's and the ledger's position of a symbol, and their discrepancy")
    .argument('<symbol>', 'exchange symbol, e.g. BTCUSDT', symbolArg)
    .action((symbol: string) =>
      ctx.withChain(async (chain, o) => {
        const { result, worker, operation_id } = await chain.position(symbol);
        o.result(`${formatPosition(result)}\n${identityLine(worker)}`, { ...result, worker, operation_id });
        // A script can tell "reconcile required" from a failure to look.
        if (!result.within_tolerance) ctx.setExit(EXIT.reconcileRequired);
      }),
    );
  program
    .command('list')
    .description('plans by stage, outcome and symbol (search attributes)')
    .option('--stage <stage>', `one of ${STAGES.join(', ')}`, oneOf(STAGES))
    .option('--outcome <outcome>', `one of ${LIST_OUTCOMES.join(', ')}`, oneOf(LIST_OUTCOMES))
    .option('--symbol <symbol>', 'exchange symbol', symbolArg)
    .option('--limit <n>', 'at most this many', positiveInt, 50)
    .action(({ limit, ...filter }: PlanFilter & { limit: number }) =>
      ctx.withChain(async (chain, o) => {
        const plans = await chain.list(filter, limit);
        o.result(formatPlanRows(plans), { plans });
      }),
    );
  program
    .command('retry-stuck')
    .description('wake every blocked plan (optionally only older ones, or one symbol)')
    .option('--older-than <age>', 'only plans started longer ago than this, e.g. 5m, 30s, 2h', durationArg)
    .option('--symbol <symbol>', 'only this symbol', symbolArg)
    .option('--by <name>', 'who asks', 'operator')
    .action((opts: { olderThan?: number; symbol?: string; by: string }) =>
      ctx.withChain(async (chain, o) => {
        const older = opts.olderThan !== undefined ? { startedBefore: new Date(Date.now() - opts.olderThan) } : {};
        const filter = { ...(opts.symbol ? { symbol: opts.symbol } : {}), ...older };
        const { woken, report } = await chain.retryStuck(filter, opts.by);
        o.result(`retried ${woken.length} blocked plan(s): ${formatRetryReport(report)}`, {
          retried: woken.length,
          plan_ids: woken,
          ...retryReportJson(report),
        });
      }),
    );
  program
    .command('demo')
    .description("play the existing system's reported incident on the running stack")
    .action(async () => {
      // Loaded only here: the demo's exchange and Redis code is not what `status` or `list` should load.
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- a lazy load, see above
      const { runDemo } = require('../demo') as typeof DemoModule;
      await runDemo(ctx.config(), ctx.out());
    });
}
