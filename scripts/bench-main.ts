import { Option, type Command } from 'commander';
import { runTool } from '../cli/cli';
import { HOUR, durationUpTo, positiveInt, sizeList, upTo } from '../cli/cli-args';
import { UsageError, type CommandContext } from '../cli/commands/context';
import { remoteServers, runBench } from './bench';
import type { BenchOptions } from './bench-runner';

/** `npm run bench -- [options]`: the bench, a tool of the checkout (docs/benchmark.md); `--help` lists its options. */
function configureBench(program: Command, ctx: CommandContext): void {
  program
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
        throw new UsageError('--duration, --burst and --parked are separate runs: give one');
      }
      const cfg = ctx.config();
      const remote = remoteServers(cfg);
      if (remote.length > 0) throw new UsageError(`runs on loopback servers only, not ${remote.join(' or ')}`);
      // The exit code says whether plans were lost, duplicated or left unfinished; the targets are for reading.
      if (!(await runBench(cfg, ctx.out(), opts)).ok) ctx.setExit(1);
    });
}

void runTool('bench', configureBench).then((code) => {
  process.exitCode = code;
});
