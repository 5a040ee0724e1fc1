import { setHandler } from '@temporalio/workflow';
import { positionsChangedSignal, symbolFreeSignal, wakeSignal } from '../contract/messages';

/**
 * What machines send a plan, apart from what people send (the operator desk): the plan before it in its symbol's line
 * let go (`symbolFree`), the position watcher saw its symbol's positions change (`positionsChanged`), and a deploy's
 * `wake`. Each only sets a flag the waiting plan reads; none is audited or answered.
 */
export class WakeUps {
  /** The symbol was let go since the plan last began to wait in its line. */
  symbolFreed = false;
  /** The positions changed since the blocked plan last looked (taken as acted on before each look). */
  positionsChanged = false;

  /** Registers the handlers; call before the workflow's first await. */
  register(): void {
    setHandler(symbolFreeSignal, () => {
      this.symbolFreed = true;
    });
    setHandler(positionsChangedSignal, () => {
      this.positionsChanged = true;
    });
    // No news and no state: the signal only gives the plan a workflow task, in which it sees the deployment's target
    // (workflowInfo) and, at rest, continues as new onto a new current build when it should.
    setHandler(wakeSignal, () => undefined);
  }
}
