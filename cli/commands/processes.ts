import { DEFAULT_INTAKE_OPTIONS, INTAKE_GROUP, runIntake } from '../../workers/intake';
import { HOUR, durationArg, durationUpTo, positiveInt, sizeList, upTo } from '../cli-args';
import { Option, type Command } from 'commander';
import { UsageError, type CommandContext } from './context';
import { loadConfig, requireExplicitMode } from '../../lib/config';
import { remoteServers, runBench, type BenchOptions } from '../../scripts/bench';
import { processLogger, runWorker } from '../../workers/worker';
import type * as DevModule from '../dev';

/** The processes: the embedded stack, the worker, the intake, and the benchmark. */
export function addProcessesCommands(program: Command, ctx: CommandContext): void {
  program
    .command('dev')
    .description('the embedded stack: Redis and the Temporal dev server where none is reachable, and the worker')
    .option('--demo', 'play the incident demo once the stack is ready')
    .addOption(
      new Option('--exchange <venue>', 'trade on the paper exchange, or on a local double of Binance USD-M futures')
        .choices(['paper', 'binance-double'])
        .default('paper'),
    )
    .action(async (opts: { demo?: boolean; exchange: 'paper' | 'binance-double' }) => {
      // The embedded stack is for a first run and for development: testnet unless told otherwise, and it says so.
      const explicit = (ctx.env.TRADING_MODE ?? '').trim() !== '';
      const cfg = loadConfig(explicit ? ctx.env : { ...ctx.env, TRADING_MODE: 'testnet' });
      const o = ctx.out();
      o.line(
        explicit
          ? `dev: ${cfg.tradingMode} mode (TRADING_MODE)`
          : 'dev: testnet mode (TRADING_MODE unset; dev runs testnet, where the Governor approves by itself)',
      );
      // Loaded only here: the embedded servers come from a dev dependency (@temporalio/testing), which a
      // production install of the worker and the intake does not have.
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- a lazy load, see above
      const { runDev } = require('../dev') as typeof DevModule;
      await runDev(cfg, o, { demo: opts.demo === true, exchange: opts.exchange });
    });
  program
    .command('worker')
    .description("run the chain's worker until SIGINT/SIGTERM")
    .action(async () => {
      requireExplicitMode(ctx.env, 'worker');
      const cfg = ctx.config();
      await runWorker(cfg, processLogger(cfg, 'worker'));
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
      requireExplicitMode(ctx.env, 'intake');
      const { consumer, batchSize, claimIdle } = opts;
      const options = { ...DEFAULT_INTAKE_OPTIONS, consumer, batchSize, claimIdleMs: claimIdle };
      const cfg = ctx.config();
      await runIntake(cfg, options, processLogger(cfg, 'intake'));
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
    .option('--parked <n>', 'N blocked plans at rest: CPU and memory, then the ledger fix', upTo(10_000))
    .addOption(
      new Option('--window <time>', 'with --parked: how long CPU and memory are sampled')
        .argParser(durationUpTo(HOUR))
        .default(120_000, '120s'),
    )
    .addOption(
      new Option('--fix-timeout <time>', 'with --parked: how long the fixed plans may take')
        .argParser(durationUpTo(HOUR))
        .default(60_000, '60s'),
    )
    .option('--server-pid <pid>', "with --parked: the Temporal server's pid, if not found from its port", positiveInt)
    .action(async (opts: BenchOptions) => {
      if ([opts.duration, opts.burst, opts.parked].filter((mode) => mode !== undefined).length > 1) {
        throw new UsageError('bench: --duration, --burst and --parked are separate runs: give one');
      }
      const cfg = ctx.config();
      const remote = remoteServers(cfg);
      if (remote.length > 0) throw new UsageError(`bench: runs on loopback servers only, not ${remote.join(' or ')}`);
      // The exit code says whether plans were lost, duplicated or left unfinished; the targets are for reading.
      if (!(await runBench(cfg, ctx.out(), opts)).ok) ctx.setExit(1);
    });
}
