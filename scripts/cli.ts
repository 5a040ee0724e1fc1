import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { WorkflowNotFoundError } from '@temporalio/client';
import { connectTemporal, planStatus, startPlan } from '../lib/chain-client';
import { ConfigError, loadConfig, toleranceFor, type ChainConfig } from '../lib/config';
import { Dec, formatDec, parseAmount } from '../lib/decimal';
import { redisKeys } from '../lib/keys';
import { PlanError, parsePlan } from '../lib/plan';
import type { ChainStatus } from '../lib/types';
import { planWorkflowId, retrySignal } from '../workflows/messages';
import { connectRedis, runWorker } from '../workers/worker';
import { runBench, type BenchOptions } from './bench';
import { runDemo } from './demo';
import { runDev } from './dev';
import { createOutput, formatStatus, type Output } from './output';

/** A refusal the user can act on: printed as one line, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

const PLAN_ID = /^[0-9a-f]{16}$/;
const SYMBOL = /^[A-Z][A-Z0-9]{1,19}$/;

function planIdArg(value: string): string {
  if (!PLAN_ID.test(value)) throw new InvalidArgumentError('must be 16 lowercase hex characters');
  return value;
}

function positiveInt(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new InvalidArgumentError('must be a whole number >= 1');
  return Number(value);
}

function symbolArg(value: string): string {
  if (!SYMBOL.test(value)) throw new InvalidArgumentError('must be an upper-case exchange symbol such as BTCUSDT');
  return value;
}

async function withRedis<T>(config: ChainConfig, run: (redis: ReturnType<typeof connectRedis>) => Promise<T>) {
  const redis = connectRedis(config.redisUrl);
  try {
    return await run(redis);
  } finally {
    redis.disconnect();
  }
}

async function withTemporal<T>(
  config: ChainConfig,
  run: (client: Awaited<ReturnType<typeof connectTemporal>>) => Promise<T>,
) {
  const client = await connectTemporal(config);
  try {
    return await run(client);
  } finally {
    await client.connection.close();
  }
}

function notFound(err: unknown, planId: string): never {
  if (err instanceof WorkflowNotFoundError)
    throw new UsageError(`no plan ${planId} (workflow ${planWorkflowId(planId)} not found)`);
  throw err;
}

interface SubmitOptions {
  symbol: string;
  side: string;
  qty: string;
  planId?: string;
  reduceOnly: boolean;
  source: string;
  reason?: string;
  wait?: boolean;
}

export function buildProgram(out: () => Output, env: NodeJS.ProcessEnv = process.env) {
  const config = () => loadConfig(env);
  /** Commands that decide their exit code (`submit --wait`) set it here. */
  let exitCode = 0;
  const program = new Command('permit-chain')
    .description('Durable permit chain: Governor → Apply → P3.3 → Execute, one Temporal workflow per plan')
    .option('--json', 'print one JSON object instead of text')
    .showSuggestionAfterError(false)
    .exitOverride()
    .configureOutput({
      // One line, in the same voice as every other refusal.
      writeErr: (text) =>
        process.stderr.write(`permit-chain: ${(text.split('\n')[0] ?? '').replace(/^error: /, '')}\n`),
    });

  program
    .command('dev')
    .description('the embedded stack: Redis and the Temporal dev server where none is reachable, and the worker')
    .option('--demo', 'play the incident demo once the stack is ready')
    .action(async (opts: { demo?: boolean }) => runDev(config(), out(), { demo: opts.demo === true }));

  program
    .command('worker')
    .description("run the chain's worker until SIGINT/SIGTERM")
    .action(async () => runWorker(config(), (line) => out().line(line)));

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
    .action(async (opts: SubmitOptions) => {
      const fields: Record<string, unknown> = {
        action: 'EXECUTE',
        symbol: opts.symbol,
        side: opts.side,
        qty: opts.qty,
        reduce_only: opts.reduceOnly,
        source: opts.source,
        created_at: Date.now(),
      };
      if (opts.reason !== undefined) fields.reason = opts.reason;
      if (opts.planId !== undefined) fields.plan_id = opts.planId;
      const plan = parsePlan(fields);
      const cfg = config();
      const o = out();
      await withTemporal(cfg, async (client) => {
        const started = await startPlan(client, cfg, plan);
        if (!opts.wait) {
          o.result(`plan_id ${started.planId}\nworkflow_id ${started.workflowId}`, {
            plan_id: started.planId,
            workflow_id: started.workflowId,
          });
          return;
        }
        o.line(`plan_id ${started.planId}\nworkflow_id ${started.workflowId}`);
        const status: ChainStatus = await started.handle.result();
        o.result(formatStatus(status), status);
        if (status.outcome !== 'executed') exitCode = 3;
      });
    });

  program
    .command('status')
    .description("the plan's status: stage, outcome, permits, timeline")
    .argument('<plan_id>', 'the plan id', planIdArg)
    .action(async (planId: string) => {
      const cfg = config();
      const o = out();
      await withTemporal(cfg, async (client) => {
        const status = await planStatus(client, planId).catch((err: unknown) => notFound(err, planId));
        o.result(formatStatus(status), status);
      });
    });

  program
    .command('retry')
    .description('wake a blocked plan: re-check P3.3 now (and ask the Governor again if its permit ran out)')
    .argument('<plan_id>', 'the plan id', planIdArg)
    .option('--by <name>', 'who asks', 'operator')
    .action(async (planId: string, opts: { by: string }) => {
      const cfg = config();
      const o = out();
      await withTemporal(cfg, async (client) => {
        await client.workflow
          .getHandle(planWorkflowId(planId))
          .signal(retrySignal, { by: opts.by })
          .catch((err: unknown) => notFound(err, planId));
        o.result(`retry sent to ${planWorkflowId(planId)}`, { plan_id: planId, signalled: true });
      });
    });

  program
    .command('position')
    .description("the exchange's and the ledger's position of a symbol, and their discrepancy")
    .argument('<symbol>', 'exchange symbol, e.g. BTCUSDT', symbolArg)
    .action(async (symbol: string) => {
      const cfg = config();
      const keys = redisKeys(cfg.keyPrefix);
      const o = out();
      await withRedis(cfg, async (redis) => {
        const [exchangeRaw, ledgerRaw] = await Promise.all([
          redis.hget(keys.paperPosition(symbol), 'amount'),
          redis.hget(keys.position(symbol), 'ledger_amount'),
        ]);
        const exchange = parseAmount(exchangeRaw, `exchange position of ${symbol}`);
        const ledger = parseAmount(ledgerRaw, `ledger_amount of ${symbol}`);
        const tolerance = new Dec(toleranceFor(cfg, symbol));
        const discrepancy = exchange.sub(ledger).abs();
        const view = {
          symbol,
          exchange_amount: formatDec(exchange),
          ledger_amount: formatDec(ledger),
          discrepancy: formatDec(discrepancy),
          tolerance: formatDec(tolerance),
          within_tolerance: discrepancy.lte(tolerance),
        };
        o.result(
          `${symbol}  exchange ${view.exchange_amount}  ledger ${view.ledger_amount}  discrepancy ${view.discrepancy}  tolerance ${view.tolerance}  ${view.within_tolerance ? 'ok' : 'RECONCILE REQUIRED'}`,
          view,
        );
      });
    });

  program
    .command('demo')
    .description("play the existing system's reported incident on the running stack")
    .action(async () => {
      await runDemo(config(), out());
    });

  program
    .command('bench')
    .description('the load benchmark: plans through the whole chain on the running stack, with their latency')
    .option('--plans <n>', 'how many plans', positiveInt, 200)
    .option('--concurrency <n>', 'plans in flight at once', positiveInt, 20)
    .option('--symbols <n>', 'distinct symbols the plans spread over', positiveInt, 10)
    .action(async (opts: BenchOptions) => {
      const result = await runBench(config(), out(), opts);
      if (result.executed !== result.plans) exitCode = 1;
    });

  return { program, exitCode: () => exitCode };
}

/** Runs the CLI; returns the exit code. Every failure is one line on stderr. */
export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const json = argv.includes('--json');
  const cli = buildProgram(() => createOutput(json), env);
  try {
    await cli.program.parseAsync(argv);
    return cli.exitCode();
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    const usage = err instanceof PlanError || err instanceof ConfigError || err instanceof UsageError;
    process.stderr.write(`permit-chain: ${err instanceof Error ? err.message : String(err)}\n`);
    return usage ? 2 : 1;
  }
}
