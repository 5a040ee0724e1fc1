import { InvalidArgumentError, Option, type Command } from 'commander';
import { runTool } from '../../cli/cli';
import { HOUR, durationUpTo, upTo } from '../../cli/cli-args';
import { UsageError, type CommandContext } from '../../cli/commands/context';
import { DEFAULT_CHAOS_OPTIONS, runChaos } from './chaos';
import { FAULT_KINDS } from './fault-kinds';

function faultList(value: string): (typeof FAULT_KINDS)[number][] {
  const names = value.split(',').map((name) => name.trim());
  const unknown = names.filter((name) => !(FAULT_KINDS as readonly string[]).includes(name));
  if (unknown.length > 0 || names.length === 0) {
    throw new InvalidArgumentError(`must be fault kinds separated by commas, from ${FAULT_KINDS.join(', ')}`);
  }
  return names as (typeof FAULT_KINDS)[number][];
}

function seedArg(value: string): number {
  if (!/^\d{1,10}$/.test(value) || Number(value) > 0xffffffff) {
    throw new InvalidArgumentError('must be a whole number from 0 to 4294967295');
  }
  return Number(value);
}

/** `npm run chaos -- [options]`: the bounded fault run on a local stack of its own (scripts/chaos/chaos.ts). */
function configureChaos(program: Command, ctx: CommandContext): void {
  program
    .description(
      'a bounded fault run on a stack of its own (loopback): plans fed while processes and servers are killed, ' +
        'then the invariants checked; exit 1 on any violation, naming the plans',
    )
    .option('--duration <time>', 'feed plans and inject faults this long (default 3m)', durationUpTo(4 * HOUR))
    .option('--plans <n>', 'or until this many plans are fed', upTo(100_000))
    .option('--seed <n>', 'the schedule of plans and faults (default: random, printed)', seedArg)
    .addOption(
      new Option('--exchange <venue>', 'the Binance double (its faults too), or the paper exchange')
        .choices(['binance-double', 'paper'])
        .default('binance-double'),
    )
    .option('--faults <kinds>', `which faults, comma-separated (default all: ${FAULT_KINDS.join(', ')})`, faultList)
    .option('--rate <n>', 'plans fed per second, bursts aside', upTo(100), 2)
    .option('--drain <time>', 'how long the plans may take to end once feeding stops (default 5m)', durationUpTo(HOUR))
    .action(
      async (opts: {
        duration?: number;
        plans?: number;
        seed?: number;
        exchange: 'binance-double' | 'paper';
        faults?: (typeof FAULT_KINDS)[number][];
        rate: number;
        drain?: number;
      }) => {
        if (opts.duration !== undefined && opts.plans !== undefined) {
          throw new UsageError('--duration and --plans exclude each other: give one');
        }
        const o = ctx.out();
        const report = await runChaos(
          {
            ...DEFAULT_CHAOS_OPTIONS,
            ...(opts.plans !== undefined ? { durationMs: undefined, plans: opts.plans } : {}),
            ...(opts.duration !== undefined ? { durationMs: opts.duration } : {}),
            seed: opts.seed ?? Math.floor(Math.random() * 0xffffffff),
            exchange: opts.exchange,
            faults: opts.faults ?? DEFAULT_CHAOS_OPTIONS.faults,
            feedPerS: opts.rate,
            ...(opts.drain !== undefined ? { drainTimeoutMs: opts.drain } : {}),
          },
          (line) => o.line(line),
        );
        o.result(report.violations.length === 0 ? 'chaos: passed' : 'chaos: failed', {
          seed: report.seed,
          violations: report.violations,
          plan_ids: report.planIds,
          faults: report.faults,
        });
        if (report.violations.length > 0) ctx.setExit(1);
      },
    );
}

void runTool('chaos', configureChaos).then((code) => {
  process.exitCode = code;
});
