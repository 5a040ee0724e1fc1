/**
 * `npm run chaos`: a bounded, self-stopping fault run on the local stack (loopback only). It owns every process:
 * Redis (append-only, fsync always), the Temporal dev server (a database file, so a restart keeps state), the Binance
 * double (or the paper exchange), two workers and one intake. It feeds plans through the upstream stream while a
 * seeded schedule hurts the processes (SIGKILL, SIGSTOP longer than a permit lives, server restarts) and the double
 * (a lost response after the fill, 5xx, 429); then it waits for every plan to end and checks, as an operator would,
 * that nothing was lost, duplicated or late. The same seed gives the same schedule (plans and faults, in order).
 *
 * A tool of the checkout, not of the image: its entry is scripts/chaos/main.ts.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { Redis } from 'ioredis';
import { PROJECT_ROOT, ensureServersInstalled } from '../../cli/servers';
import { ProcessGroup } from '../stack/processes';
import type { Violation } from './chaos-check';
import { seedPositions, startChainProcesses, startServers } from './chaos-stack';
import { drain, readEnding } from './ending';
import { FAULT_KINDS, type FaultKind } from './fault-kinds';
import { injectFaults, type InjectedFault } from './fault-schedule';
import { Feed } from './feed';
import { seededRandom } from '../stack/seeded-random';
import { sayFigures } from './figures';

export interface ChaosOptions {
  /** Feed plans and inject faults for this long (ms)... */
  durationMs?: number;
  /** ...or until this many plans are fed. */
  plans?: number;
  seed: number;
  exchange: 'binance-double' | 'paper';
  faults: readonly FaultKind[];
  /** Plans fed per second (bursts aside). */
  feedPerS: number;
  /** Where each process logs, and the summary goes. */
  logDir: string;
  /** How long the plans may take to end once feeding stops. */
  drainTimeoutMs: number;
}

export const DEFAULT_CHAOS_OPTIONS: Omit<ChaosOptions, 'seed'> = {
  durationMs: 180_000,
  exchange: 'binance-double',
  faults: FAULT_KINDS,
  feedPerS: 2,
  logDir: join(PROJECT_ROOT, 'test-results', 'chaos'),
  drainTimeoutMs: 300_000,
};

export interface ChaosReport {
  seed: number;
  violations: Violation[];
  planIds: string[];
  faults: InjectedFault[];
  lines: string[];
}

/** Runs the chaos and returns its report; `print` gets each line of it as it comes. Never leaves a process behind. */
export async function runChaos(options: ChaosOptions, print: (line: string) => void): Promise<ChaosReport> {
  ensureServersInstalled({ forTests: false });
  const t0 = Date.now();
  const lines: string[] = [];
  const say = (line: string) => {
    const text = `[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${line}`;
    lines.push(text);
    print(text);
  };
  const random = seededRandom(options.seed);
  const faultRandom = seededRandom(options.seed ^ 0x5eed);

  rmSync(options.logDir, { recursive: true, force: true });
  const runDir = mkdtempSync(join(tmpdir(), 'permit-chain-chaos-'));
  const group = new ProcessGroup(options.logDir);
  let redis: Redis | undefined;
  let client: Client | undefined;
  // Ctrl-C or SIGTERM stops what the run started before it goes: nothing of it outlives the run.
  const interrupted = () => {
    print('chaos: interrupted: stopping its processes');
    void group.stopAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    say(`chaos: seed ${options.seed} (replay with --seed ${options.seed}); logs in ${options.logDir}`);
    const servers = await startServers(group, runDir, options.exchange);
    const { redisUrl, temporalAddress, env, keys, double } = servers;

    // The runner's own connections wait out an outage (their commands queue) rather than fail.
    redis = new Redis(redisUrl, { maxRetriesPerRequest: null, retryStrategy: () => 200 });
    redis.on('error', () => undefined);
    const db = redis;
    client = new Client({ connection: await Connection.connect({ address: temporalAddress }) });
    const temporal = client;

    await seedPositions(servers, db);
    const { workers, intake } = await startChainProcesses(group, env);
    say(
      `chaos: Redis ${redisUrl} (AOF, fsync always), Temporal dev server ${temporalAddress}, ` +
        `${double ? `the Binance double ${double.url}` : 'the paper exchange'}, 2 workers, 1 intake: ready`,
    );

    const { seed, feedPerS, durationMs, plans: planLimit } = options;
    const feed = new Feed({ db, keys, seed, t0, feedPerS, durationMs, plans: planLimit, random });
    const feedingOn = () => feed.on();
    const [, faults] = await Promise.all([
      feed.run(),
      injectFaults(options.faults, { servers, workers, intake }, faultRandom, feedingOn, say),
      feed.blockedRounds(temporal, env, seededRandom(options.seed ^ 0xb10c), say),
    ]);
    const fedAt = Date.now();
    const { plans, counts } = feed;
    say(`chaos: feeding and faults done: ${plans.size} plans, ${counts.entries} entries, ${faults.length} faults`);

    // Every process is running again (a fault ends with its process back); wait for the intake to read everything
    // and every plan to end.
    const open = await drain(temporal, db, servers, plans.size, Date.now() + options.drainTimeoutMs);
    const drainedAt = Date.now();
    say(`chaos: drained ${((drainedAt - fedAt) / 1000).toFixed(1)} s after feeding stopped (${open} still open)`);

    const end = await readEnding(temporal, db, servers, [...plans.values()]);
    const planIds = sayFigures(feed, faults, end, { fedAt, drainedAt }, say);
    const { violations } = end;
    say(`chaos: seed ${options.seed}: ${violations.length === 0 ? 'no violations' : 'FAILED'}`);
    writeFileSync(join(options.logDir, 'summary.txt'), `${lines.join('\n')}\n`);
    return { seed: options.seed, violations, planIds, faults, lines };
  } finally {
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
    redis?.disconnect();
    await client?.connection.close().catch(() => undefined);
    await group.stopAll();
    rmSync(runDir, { recursive: true, force: true });
  }
}
