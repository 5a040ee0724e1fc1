/**
 * The chaos run's faults: rounds of every kind in a seeded order, a few seconds apart, while the feed is on. Each
 * fault ends with what it took away back (a process restarted, a paused one resumed, an exchange fault queued).
 */
import type { ManagedProcess } from '../stack/processes';
import { PERMIT_TTL_S, type ChaosServers } from './chaos-stack';
import type { FaultKind } from './fault-kinds';

const DOUBLE_FAULTS: readonly FaultKind[] = ['double-lost-response', 'double-5xx', 'double-429'];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One fault as injected: when, and when what it took away was back. */
export interface InjectedFault {
  kind: FaultKind;
  target: string;
  at: number;
  /** When the process was running again (a one-shot exchange fault: when it was queued). */
  endedAt: number;
  /** ms from `endedAt` to the next order placed on the exchange; undefined: none followed. */
  recoveryMs?: number;
}

export interface FaultTargets {
  servers: ChaosServers;
  workers: ManagedProcess[];
  intake: ManagedProcess;
}

/**
 * Injects the faults of `wanted` (the double's only where the run trades on it) until `feedingOn` says the feed is
 * over; returns them as injected.
 */
export async function injectFaults(
  wanted: readonly FaultKind[],
  targets: FaultTargets,
  faultRandom: () => number,
  feedingOn: () => boolean,
  say: (line: string) => void,
): Promise<InjectedFault[]> {
  const { servers, workers, intake } = targets;
  const { redisServer, temporalServer, double } = servers;
  const kinds = wanted.filter((kind) => double || !DOUBLE_FAULTS.includes(kind));
  const faults: InjectedFault[] = [];
  const pick = <T>(items: readonly T[]): T => items[Math.floor(faultRandom() * items.length)] as T;
  const pause = (min: number, max: number) => Math.round(min + faultRandom() * (max - min));
  const doubleFault = async (fault: Record<string, unknown>) => {
    if (!double) throw new Error('chaos: an exchange fault without the Binance double');
    await double.call('POST', 'fault', fault);
  };
  const inject = async (kind: FaultKind): Promise<InjectedFault> => {
    const at = Date.now();
    const done = (target: string): InjectedFault => ({ kind, target, at, endedAt: Date.now() });
    const restartAfter = async (proc: ManagedProcess, how: 'kill' | 'stop', deadMs: number) => {
      if (how === 'kill') await proc.kill();
      else await proc.stop();
      await sleep(deadMs);
      await proc.start();
    };
    switch (kind) {
      case 'worker-kill': {
        const worker = pick(workers);
        await restartAfter(worker, 'kill', pause(500, 5_000));
        return done(worker.name);
      }
      case 'intake-kill':
        await restartAfter(intake, 'kill', pause(500, 5_000));
        return done(intake.name);
      case 'worker-stop': {
        const worker = pick(workers);
        worker.pause();
        // Longer than a permit lives: whatever it held must be taken over, and its permits asked again.
        await sleep(PERMIT_TTL_S * 1000 + pause(1_000, 5_000));
        worker.resume();
        return done(worker.name);
      }
      case 'redis-kill':
        await restartAfter(redisServer, 'kill', pause(500, 4_000));
        return done('redis');
      case 'temporal-restart':
        await restartAfter(temporalServer, 'stop', pause(500, 4_000));
        return done('temporal');
      case 'double-lost-response':
        await doubleFault({
          kind: 'lose-response-after-fill',
          path: '/fapi/v1/order',
          method: 'POST',
        });
        return done('binance-double');
      case 'double-5xx':
        await doubleFault({
          kind: 'http-5xx',
          status: pick([500, 502, 503] as const),
          ...(faultRandom() < 0.5 ? { executed: true, path: '/fapi/v1/order', method: 'POST' } : {}),
        });
        return done('binance-double');
      case 'double-429':
        await doubleFault({ kind: 'rate-limit', status: 429, retryAfterS: pause(1, 3) });
        return done('binance-double');
    }
  };
  // Rounds of every kind in a seeded order: the kinds stay balanced however long the run.
  while (feedingOn() && kinds.length > 0) {
    const round = [...kinds].sort(() => faultRandom() - 0.5);
    for (const kind of round) {
      await sleep(pause(2_000, 6_000));
      if (!feedingOn()) return faults;
      const fault = await inject(kind);
      faults.push(fault);
      say(
        `fault ${faults.length}: ${kind} (${fault.target}), ` +
          `${((fault.endedAt - fault.at) / 1000).toFixed(1)} s until it was back`,
      );
    }
  }
  return faults;
}
