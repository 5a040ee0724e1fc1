import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { WorkflowNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
import type { UpdateDefinition } from '@temporalio/common';
import type { Redis } from 'ioredis';
import { createPaperExchange } from '../activities/exchange/paper';
import { connectTemporal, planStatus, startPlan } from '../client/plans';
import { ConfigError, loadConfig, requireExplicitMode, toleranceFor, type ChainConfig } from '../lib/config';
import { connectRedis } from '../lib/connections';
import { Dec, formatDec, parseAmount } from '../lib/decimal';
import { redisKeys } from '../contract/keys';
import { redactUrl } from '../lib/redact';
import { PlanError, SYMBOL_PATTERN, parsePlan } from '../lib/plan';
import { registerSearchAttributes } from '../client/search-attributes';
import {
  DEFAULT_DECISION_LIFE_MS,
  MAX_DECISION_LIFE_MS,
  generateApproverKeys,
  readPrivateKey,
  signedRequest,
} from '../lib/approval';
import type {
  ApproveRequest,
  ChainOutcome,
  ChainStage,
  ChainStatus,
  OperatorReply,
  RejectRequest,
} from '../contract/types';
import {
  approvePlanUpdate,
  cancelPlanUpdate,
  planWorkflowId,
  rejectPlanUpdate,
  retrySignal,
} from '../contract/messages';
import { DEFAULT_INTAKE_OPTIONS, INTAKE_GROUP, runIntake } from '../workers/intake';
import { runWorker } from '../workers/worker';
import { remoteServers, runBench, type BenchOptions } from './bench';
import { runDemo } from './demo';
import {
  OUTCOMES,
  STAGES,
  closedStatus,
  listPlans,
  reconcileLedger,
  resetFailedPlan,
  retryBlocked,
  setKillSwitch,
} from '../client/operations';
import { runDev } from './dev';
import { createOutput, formatStatus, type Output } from './output';

/** A refusal the user can act on: printed as one line, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

const PLAN_ID = /^[0-9a-f]{16}$/;

function planIdArg(value: string): string {
  if (!PLAN_ID.test(value)) throw new InvalidArgumentError('must be 16 lowercase hex characters');
  return value;
}

function positiveInt(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new InvalidArgumentError('must be a whole number >= 1');
  return Number(value);
}

function oneOf<T extends string>(allowed: readonly T[]) {
  return (value: string): T => {
    if (!(allowed as readonly string[]).includes(value))
      throw new InvalidArgumentError(`must be one of ${allowed.join(', ')}`);
    return value as T;
  };
}

/** A whole number from 1 to `max`: the bench's counts are bounded. */
function upTo(max: number) {
  return (value: string): number => {
    const n = positiveInt(value);
    if (n > max) throw new InvalidArgumentError(`must be at most ${max}`);
    return n;
  };
}

/** `100,200`: sizes of 1 to 10000, in the order given. */
function sizeList(value: string): number[] {
  return value.split(',').map((size) => {
    if (!/^\d+$/.test(size.trim()) || Number(size) < 1 || Number(size) > 10_000)
      throw new InvalidArgumentError('must be sizes from 1 to 10000, separated by commas, e.g. 100,200');
    return Number(size);
  });
}

const HOUR = 3_600_000;

function durationUpTo(max: number) {
  return (value: string): number => {
    const ms = durationArg(value);
    if (ms < 1 || ms > max) throw new InvalidArgumentError(`must be a duration from 1ms to ${max / 60_000}m`);
    return ms;
  };
}

const DURATION_UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

function durationArg(value: string): number {
  const match = /^(\d+)(ms|s|m|h|d)$/.exec(value);
  if (!match) throw new InvalidArgumentError('must be a duration such as 30s, 5m or 2h');
  return Number(match[1]) * DURATION_UNIT_MS[match[2] as keyof typeof DURATION_UNIT_MS];
}

/**
 * Sends an operator's decision as an update, so the operator learns at once: accepted (exit 0), or refused with
 * the reason (exit 3).
 */
async function operatorUpdate<Request>(
  cfg: ChainConfig,
  o: Output,
  planId: string,
  update: UpdateDefinition<OperatorReply, [Request]>,
  request: Request,
): Promise<number> {
  return withTemporal(cfg, (client) => sendUpdate(client, o, planId, update, request));
}

async function sendUpdate<Request>(
  client: Awaited<ReturnType<typeof connectTemporal>>,
  o: Output,
  planId: string,
  update: UpdateDefinition<OperatorReply, [Request]>,
  request: Request,
): Promise<number> {
  {
    const handle = client.workflow.getHandle(planWorkflowId(planId));
    let reply: OperatorReply;
    try {
      reply = await handle.executeUpdate(update, { args: [request] });
    } catch (err) {
      // An update to a finished workflow is answered "not found": tell that apart from a plan that never was.
      if (err instanceof WorkflowNotFoundError) {
        await handle.describe().catch((missing: unknown) => notFound(missing, planId));
        reply = { accepted: false, detail: 'plan has already ended' };
      } else if (err instanceof WorkflowUpdateFailedError) {
        reply = { accepted: false, detail: err.cause?.message ?? err.message };
      } else {
        throw err;
      }
    }
    o.result(reply.accepted ? `accepted: ${reply.detail}` : `refused: ${reply.detail}`, { plan_id: planId, ...reply });
    return reply.accepted ? 0 : 3;
  }
}

interface SigningOptions {
  key: string;
  expiresIn: number;
  print?: boolean;
}

/**
 * A person's signed decision: the plan's `status` gives the positions it shows, the approver's key signs the
 * decision over them, and the update carries it to the plan, whose Governor verifies it. `--print` prints the
 * signed payload instead, for `temporal workflow signal --input` or the Web UI's signal form.
 */
async function signedDecision(
  cfg: ChainConfig,
  o: Output,
  planId: string,
  kind: 'approve' | 'reject',
  fields: { by: string; note?: string; reason?: string },
  opts: SigningOptions,
): Promise<number> {
  const privateKey = readPrivateKey(opts.key);
  return withTemporal(cfg, async (client) => {
    const status = await planStatus(client, planId).catch((err: unknown) => notFound(err, planId));
    if (!status.awaiting) {
      const detail = status.stage === 'done' ? 'plan has already ended' : 'plan is not awaiting approval';
      o.result(`refused: ${detail}`, { plan_id: planId, accepted: false, detail });
      return 3;
    }
    const request = signedRequest(planId, kind, fields, status.awaiting, privateKey, { lifeMs: opts.expiresIn });
    if (opts.print) {
      o.result(JSON.stringify(request), request);
      return 0;
    }
    return kind === 'approve'
      ? sendUpdate(client, o, planId, approvePlanUpdate, request as ApproveRequest)
      : sendUpdate(client, o, planId, rejectPlanUpdate, request as RejectRequest);
  });
}

function signingOptions(command: Command): Command {
  return command
    .requiredOption('--key <file>', "the approver's private key (from permit-chain keygen)")
    .option(
      '--expires-in <age>',
      `how long the signature holds, at most ${MAX_DECISION_LIFE_MS / 60_000}m`,
      durationArg,
      DEFAULT_DECISION_LIFE_MS,
    )
    .option('--print', 'print the signed payload instead of sending it (for temporal workflow signal --input)');
}

function symbolArg(value: string): string {
  if (!SYMBOL_PATTERN.test(value))
    throw new InvalidArgumentError('must be an upper-case exchange symbol such as BTCUSDT');
  return value;
}

async function withRedis<T>(config: ChainConfig, run: (redis: Redis) => Promise<T>) {
  // A one-shot command says what went wrong once, in its error line; reconnect chatter would only repeat it.
  const redis = await connectRedis(config, { log: () => undefined });
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
    .action(async (opts: { demo?: boolean }) => {
      // The embedded stack is for a first run and for development: testnet unless told otherwise, and it says so.
      const explicit = (env.TRADING_MODE ?? '').trim() !== '';
      const cfg = loadConfig(explicit ? env : { ...env, TRADING_MODE: 'testnet' });
      const o = out();
      o.line(
        explicit
          ? `dev: ${cfg.tradingMode} mode (TRADING_MODE)`
          : 'dev: testnet mode (TRADING_MODE unset; dev runs testnet, where the Governor approves by itself)',
      );
      await runDev(cfg, o, { demo: opts.demo === true });
    });

  program
    .command('worker')
    .description("run the chain's worker until SIGINT/SIGTERM")
    .action(async () => {
      requireExplicitMode(env, 'worker');
      await runWorker(config(), (line) => out().line(line));
    });

  program
    .command('intake')
    .description(`turn the plans on the exit.plan stream into workflows, exactly once (group ${INTAKE_GROUP})`)
    .option('--consumer <name>', "this process's consumer name (distinct per process)", DEFAULT_INTAKE_OPTIONS.consumer)
    .option('--batch-size <n>', 'entries read at once', positiveInt, DEFAULT_INTAKE_OPTIONS.batchSize)
    .option(
      '--claim-idle <age>',
      "take over another consumer's entries pending this long",
      durationArg,
      DEFAULT_INTAKE_OPTIONS.claimIdleMs,
    )
    .action(async (opts: { consumer: string; batchSize: number; claimIdle: number }) => {
      requireExplicitMode(env, 'intake');
      await runIntake(
        config(),
        { ...DEFAULT_INTAKE_OPTIONS, consumer: opts.consumer, batchSize: opts.batchSize, claimIdleMs: opts.claimIdle },
        (line) => out().line(line),
      );
    });

  program
    .command('register-search-attributes')
    .description("register the chain's search attributes (all Keyword) in the namespace of a real cluster")
    .action(async () => {
      const cfg = config();
      const o = out();
      await withTemporal(cfg, async (client) => {
        const added = await registerSearchAttributes(client.connection, cfg.temporalNamespace);
        o.result(
          added.length > 0
            ? `registered ${added.join(', ')} in ${cfg.temporalNamespace}`
            : `all registered already in ${cfg.temporalNamespace}`,
          { namespace: cfg.temporalNamespace, added },
        );
      });
    });

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
        const started = await startPlan(client, cfg, plan, { explicitId: opts.planId !== undefined });
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
    .description('wake a blocked plan now; a plan that ended failed runs again from its start (Temporal reset)')
    .argument('<plan_id>', 'the plan id', planIdArg)
    .option('--by <name>', 'who asks', 'operator')
    .action(async (planId: string, opts: { by: string }) => {
      const cfg = config();
      const o = out();
      await withTemporal(cfg, async (client) => {
        const ended = await closedStatus(client, planId).catch((err: unknown) => notFound(err, planId));
        if (!ended) {
          await client.workflow.getHandle(planWorkflowId(planId)).signal(retrySignal, { by: opts.by });
          o.result(`retry sent to ${planWorkflowId(planId)}`, { plan_id: planId, signalled: true });
          return;
        }
        if (ended.outcome !== 'failed') {
          throw new UsageError(
            `plan ${planId} ended ${ended.outcome ?? 'without an outcome'}: only a failed plan runs again`,
          );
        }
        await withRedis(cfg, async (redis) => {
          const { runId } = await resetFailedPlan(client, redis, redisKeys(cfg.keyPrefix), planId, opts.by);
          o.result(`plan ${planId} runs again from its start (reset, run ${runId})`, {
            plan_id: planId,
            reset: true,
            run_id: runId,
          });
        });
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

  signingOptions(
    program
      .command('approve')
      .description('approve a plan that awaits approval (production mode), signed with your key')
      .argument('<plan_id>', 'the plan id', planIdArg)
      .requiredOption('--by <name>', 'who approves (an approver the worker has a key for)')
      .option('--note <text>', 'kept with the approval'),
  ).action(async (planId: string, opts: SigningOptions & { by: string; note?: string }) => {
    const fields = { by: opts.by, ...(opts.note !== undefined ? { note: opts.note } : {}) };
    exitCode = await signedDecision(config(), out(), planId, 'approve', fields, opts);
  });

  signingOptions(
    program
      .command('reject')
      .description('reject a plan that awaits approval (production mode), signed with your key')
      .argument('<plan_id>', 'the plan id', planIdArg)
      .requiredOption('--by <name>', 'who rejects')
      .requiredOption('--reason <text>', 'why'),
  ).action(async (planId: string, opts: SigningOptions & { by: string; reason: string }) => {
    exitCode = await signedDecision(config(), out(), planId, 'reject', { by: opts.by, reason: opts.reason }, opts);
  });

  program
    .command('keygen')
    .description("make an approver's Ed25519 key pair: NAME.key (private, 0600) and NAME.pub (for APPROVER_KEYS_DIR)")
    .argument('<name>', "the approver's name, as in APPROVERS")
    .requiredOption('--out <dir>', 'the folder to write both files to')
    .action((name: string, opts: { out: string }) => {
      const { privateFile, publicFile } = generateApproverKeys(name, opts.out);
      out().result(`private key ${privateFile} (keep it to yourself)\npublic key ${publicFile} (for the worker)`, {
        private_key: privateFile,
        public_key: publicFile,
      });
    });

  program
    .command('cancel')
    .description('end a plan before its order is placed')
    .argument('<plan_id>', 'the plan id', planIdArg)
    .requiredOption('--by <name>', 'who cancels')
    .requiredOption('--reason <text>', 'why')
    .action(async (planId: string, opts: { by: string; reason: string }) => {
      exitCode = await operatorUpdate(config(), out(), planId, cancelPlanUpdate, { by: opts.by, reason: opts.reason });
    });

  program
    .command('kill-switch')
    .description("set or clear the Governor's kill switch: while on, no permit is issued and no order placed")
    .argument('<state>', 'on or off', (value: string) => {
      if (value !== 'on' && value !== 'off') throw new InvalidArgumentError("must be 'on' or 'off'");
      return value;
    })
    .requiredOption('--by <name>', 'who sets it')
    .action(async (state: 'on' | 'off', opts: { by: string }) => {
      const cfg = config();
      const o = out();
      await withRedis(cfg, async (redis) => {
        await setKillSwitch(redis, redisKeys(cfg.keyPrefix), state === 'on', opts.by);
        o.result(`kill switch ${state} (by ${opts.by})`, { kill_switch: state, by: opts.by });
      });
    });

  program
    .command('list')
    .description('plans by stage, outcome and symbol (search attributes)')
    .option('--stage <stage>', `one of ${STAGES.join(', ')}`, oneOf(STAGES))
    .option('--outcome <outcome>', `one of ${OUTCOMES.join(', ')}`, oneOf(OUTCOMES))
    .option('--symbol <symbol>', 'exchange symbol', symbolArg)
    .option('--limit <n>', 'at most this many', positiveInt, 50)
    .action(async (opts: { stage?: ChainStage; outcome?: ChainOutcome; symbol?: string; limit: number }) => {
      const cfg = config();
      const o = out();
      await withTemporal(cfg, async (client) => {
        const filter = {
          ...(opts.stage ? { stage: opts.stage } : {}),
          ...(opts.outcome ? { outcome: opts.outcome } : {}),
          ...(opts.symbol ? { symbol: opts.symbol } : {}),
        };
        const plans = await listPlans(client, filter, opts.limit);
        const lines = plans.map(
          (p) =>
            `${p.plan_id}  ${p.symbol.padEnd(10)} ${p.stage.padEnd(17)} ${(p.outcome || '-').padEnd(9)} ${p.mode.padEnd(10)} ${p.started_at}`,
        );
        o.result([`${plans.length} plan(s)`, ...lines].join('\n'), { plans });
      });
    });

  program
    .command('retry-stuck')
    .description('wake every blocked plan (optionally only older ones, or one symbol)')
    .option('--older-than <age>', 'only plans started longer ago than this, e.g. 5m, 30s, 2h', durationArg)
    .option('--symbol <symbol>', 'only this symbol', symbolArg)
    .option('--by <name>', 'who asks', 'operator')
    .action(async (opts: { olderThan?: number; symbol?: string; by: string }) => {
      const cfg = config();
      const o = out();
      await withTemporal(cfg, async (client) => {
        const woken = await retryBlocked(
          client,
          {
            ...(opts.symbol ? { symbol: opts.symbol } : {}),
            ...(opts.olderThan !== undefined ? { startedBefore: new Date(Date.now() - opts.olderThan) } : {}),
          },
          opts.by,
        );
        o.result(`retried ${woken.length} blocked plan(s)`, { retried: woken.length, plan_ids: woken });
      });
    });

  program
    .command('reconcile')
    .description("set the ledger to the exchange's amount (audited) and wake the symbol's blocked plans")
    .argument('<symbol>', 'exchange symbol, e.g. BTCUSDT', symbolArg)
    .requiredOption('--by <name>', 'who reconciles')
    .action(async (symbol: string, opts: { by: string }) => {
      const cfg = config();
      const keys = redisKeys(cfg.keyPrefix);
      const o = out();
      await withRedis(cfg, async (redis) => {
        const exchange = createPaperExchange(redis, keys, Date.now);
        await withTemporal(cfg, async (client) => {
          const deps = { redis, config: cfg, exchange, clock: Date.now, approverKeys: new Map() };
          const { before, after, fills } = await reconcileLedger(deps, client, symbol, opts.by);
          const woken = await retryBlocked(client, { symbol }, opts.by);
          const accounted = fills.length > 0 ? `; accounted for ${fills.length} unapplied fill(s)` : '';
          o.result(
            `${symbol} ledger ${before} -> ${after} (the exchange's amount)${accounted}; woke ${woken.length} blocked plan(s)`,
            {
              symbol,
              ledger_before: before,
              ledger_after: after,
              fills_accounted: fills.length,
              accounted_plan_ids: fills,
              woken: woken.length,
            },
          );
        });
      });
    });

  program
    .command('bench')
    .description(
      'the benchmark on the running stack (its own worker, task queue and key prefix): each figure beside its target',
    )
    .option('--plans <n>', 'side by side (default mode): empty workflows, direct chains and plans', upTo(100_000), 200)
    .option('--concurrency <n>', 'plans in flight at once', upTo(1_000), 20)
    .option('--symbols <n>', 'distinct symbols the plans spread over (default 10; 20 with --parked)', upTo(1_000))
    .option(
      '--duration <time>',
      'sustained load for this long (e.g. 60s): plans/s, p99, nothing lost',
      durationUpTo(HOUR),
    )
    .option(
      '--burst <sizes>',
      'N plans on one symbol at once, per size (e.g. 100,200): drain time, linearity',
      sizeList,
    )
    .option('--parked <n>', "N blocked plans at rest: CPU and memory, then the seed's fix on one symbol", upTo(10_000))
    .addOption(
      new Option('--window <time>', 'with --parked: how long CPU and memory are sampled')
        .argParser(durationUpTo(HOUR))
        .default(120_000, '120s'),
    )
    .addOption(
      new Option('--fix-timeout <time>', "with --parked: how long the fixed symbol's plans may take")
        .argParser(durationUpTo(HOUR))
        .default(60_000, '60s'),
    )
    .option('--server-pid <pid>', "with --parked: the Temporal server's pid, if not found from its port", positiveInt)
    .action(async (opts: BenchOptions) => {
      const modes = [opts.duration, opts.burst, opts.parked].filter((mode) => mode !== undefined);
      if (modes.length > 1) throw new UsageError('bench: --duration, --burst and --parked are separate runs: give one');
      const cfg = config();
      const remote = remoteServers(cfg);
      if (remote.length > 0) throw new UsageError(`bench: runs on loopback servers only, not ${remote.join(' or ')}`);
      const report = await runBench(cfg, out(), opts);
      // The exit code says whether plans were lost, duplicated or left unfinished; the targets are for reading.
      if (!report.ok) exitCode = 1;
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
    // The last guard: whatever an error carries, a connection URL's password is not printed.
    process.stderr.write(`permit-chain: ${redactUrl(err instanceof Error ? err.message : String(err))}\n`);
    return usage ? 2 : 1;
  }
}
