import { proxyActivities, proxyLocalActivities } from '@temporalio/workflow';

/**
 * The bench's workflow module: the chain's workflows, and beside them the bench's floors, which the production bundle
 * (workflows/index.ts) does not carry. The bench's own worker bundles this module at its start.
 */
export * from '../workflows';

/**
 * An empty workflow: what one workflow costs on the server, start to result, with nothing in it. The bench runs it
 * beside the chain so that the chain's latency reads as a ratio to this floor.
 */
export async function benchFloor(): Promise<void> {}

/** The no-op activity that only the bench's worker registers (scripts/bench.ts). */
export interface BenchNoop {
  benchNoop(): Promise<void>;
}

const localNoop = proxyLocalActivities<BenchNoop>({ startToCloseTimeout: '10s' });
const regularNoop = proxyActivities<BenchNoop>({ startToCloseTimeout: '10s' });

/**
 * The chain's shape with nothing in it: as many local activities, then regular ones, as a plan that goes straight
 * through makes, each doing nothing. The SDK's and the server's cost of the hand-offs alone, the second floor the
 * bench sets the chain beside (the Redis work is the third: direct calls).
 */
export async function benchShape(locals: number, regulars: number): Promise<void> {
  for (let i = 0; i < locals; i++) await localNoop.benchNoop();
  for (let i = 0; i < regulars; i++) await regularNoop.benchNoop();
}
