import { DEFAULT_INTAKE_OPTIONS, INTAKE_GROUP, runIntake } from '../../workers/intake';
import { durationArg, positiveInt } from '../cli-args';
import { Option, type Command } from 'commander';
import { UsageError, type CommandContext } from './context';
import { checkoutToolsHere } from '../checkout';
import { loadConfig, requireExplicitMode } from '../../lib/config';
import { processLogger, runWorker } from '../../workers/worker';
import type * as DevModule from '../dev';

/** The processes: the embedded stack, the worker and the intake. */
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
      // The double is a tool of the checkout (scripts/), which the image does not carry: said before anything starts.
      if (opts.exchange === 'binance-double' && !checkoutToolsHere()) {
        throw new UsageError(
          '--exchange binance-double: the Binance double is a tool of the checkout (scripts/binance-double), not of ' +
            'this install: run dev from a checkout with its dev dependencies, or use --exchange paper',
        );
      }
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
}
