/** The faults a test has queued, each consumed by the first request it applies to. */
import type { Fault } from './types';

export class FaultQueue {
  private readonly faults: Fault[] = [];

  /** Queues a fault; returns how many are queued. */
  add(fault: Fault): number {
    return this.faults.push(fault);
  }

  /** The first queued fault that applies to this request, removed from the queue. */
  take(path: string, method: string, applies: (fault: Fault) => boolean): Fault | undefined {
    const index = this.faults.findIndex(
      (fault) =>
        (fault.path === undefined || fault.path === path) &&
        (fault.method === undefined || fault.method === method) &&
        applies(fault),
    );
    return index < 0 ? undefined : this.faults.splice(index, 1)[0];
  }

  /** Faults not yet consumed, as copies. */
  pending(): Fault[] {
    return this.faults.map((fault) => ({ ...fault }));
  }
}
