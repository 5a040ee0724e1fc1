/** The floors the chain is measured against: the empty workflow, and the chain's shape with no-op activities. */
import type { benchFloor, benchShape } from './bench-workflows';
import { latency } from './bench-report';
import { DRAIN_BOUND_MS, TIMED_OUT, byDeadline, type Bench } from './bench-runner';

/**
 * The chain's shape, for benchShape: the local activities (governorTurn, publishPlan, checkPosition) and regular
 * ones (executePlan) of a plan that goes straight through. Keep it in step with workflows/permit-chain.ts.
 */
export const CHAIN_SHAPE = { locals: 3, regulars: 1 } as const;

/** A floor: the empty workflow, or the chain's shape with no-op activities; start to result. */
type Floor = 'empty' | 'shape';

/** A floor workflow, start to result. */
export async function timedFloor(b: Bench, tag: string, floor: Floor = 'empty'): Promise<number> {
  const t0 = performance.now();
  const options = { taskQueue: b.config.taskQueue, workflowId: `bench-${floor}-${b.run}-${tag}` };
  const handle =
    floor === 'empty'
      ? await b.client.workflow.start<typeof benchFloor>('benchFloor', options)
      : await b.client.workflow.start<typeof benchShape>('benchShape', {
          ...options,
          args: [CHAIN_SHAPE.locals, CHAIN_SHAPE.regulars],
        });
  b.open.set(handle.workflowId, { handle });
  const done = await byDeadline(handle.result(), Date.now() + DRAIN_BOUND_MS);
  if (done === TIMED_OUT) return Infinity;
  b.open.delete(handle.workflowId);
  return performance.now() - t0;
}

/** A floor workflow in `concurrency` lanes for `durationMs`: what the server and the SDK give with nothing in it. */
export async function floorLanes(b: Bench, concurrency: number, floor: Floor, durationMs: number) {
  const latencies: number[] = [];
  let next = 0;
  const started = performance.now();
  const stopAt = started + durationMs;
  let lastEnd = started;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < stopAt) {
        const one = await timedFloor(b, `lane-${next++}`, floor);
        if (one === Infinity) return;
        latencies.push(one);
        lastEnd = performance.now();
      }
    }),
  );
  const wallMs = lastEnd - started;
  return { perS: (latencies.length / wallMs) * 1000, ms: latency(latencies) };
}
