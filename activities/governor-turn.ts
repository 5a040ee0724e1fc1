import type { Admission, Approval, GovernorAnswer, Plan } from '../contract/types';
import type { ActivityDeps } from './deps';
import type { createGovernorActivities } from './governor';
import type { SymbolHold, createSymbolLine } from './symbol-lock';

/**
 * One call to the Governor per turn on the symbol: the plan's admission (its first call), its turn on the symbol,
 * and the permit once it holds the symbol. Each was a local activity of its own, about 2 ms of hand-off apiece on
 * the worker (docs/benchmark.md); together they are one step, with a summary saying what it did.
 */
export interface GovernorTurnRequest {
  /** The workflow's input, on the plan's first call: admitted here, and the turn taken for the admitted plan. */
  admit?: { input: unknown; workflowId: string };
  /** The admitted plan, on every later call. */
  plan?: Plan;
  /** Whether to take the plan's turn on its symbol (a continued run resting blocked only wants its admission). */
  take: boolean;
  /** Whether to ask for a permit once the symbol is held (false: the permit in hand is still good). */
  permit: boolean;
  /** The workflow's time of the request: rate-limit windows are counted on it. */
  at: number;
  /** The signed approvals the plan holds, in signing order. */
  approvals?: Approval[];
}

export interface GovernorTurn {
  /** On a first call. */
  admission?: Admission;
  /** Whether the plan holds its symbol, or who is ahead; absent when the turn was not taken. */
  hold?: SymbolHold;
  /** The Governor's answer, when the plan holds its symbol and asked for a permit. */
  answer?: GovernorAnswer;
}

export function createGovernorTurnActivities(
  { config }: { config: Pick<ActivityDeps['config'], 'permitTtlS' | 'permitMarginS' | 'layerActivities'> },
  governor: Pick<ReturnType<typeof createGovernorActivities>, 'admitPlan' | 'requestPermit'>,
  line: Pick<ReturnType<typeof createSymbolLine>, 'holdSymbol'>,
) {
  // The hold covers the permit asked for next; a crashed holder frees the symbol when it runs out.
  const leaseMs = (config.permitTtlS + config.permitMarginS) * 1000;
  return {
    async governorTurn(request: GovernorTurnRequest): Promise<GovernorTurn> {
      let plan = request.plan;
      let admission: Admission | undefined;
      if (request.admit) {
        admission = await governor.admitPlan(request.admit);
        if (!admission.admitted) return { admission };
        plan = admission.plan;
        // Run as regular activities, the turn and the permit are steps of their own after the admission, which runs
        // locally because the workflow cannot know the worker's choice before it is admitted.
        if (config.layerActivities === 'regular') return { admission };
      }
      if (!plan) throw new Error('governorTurn: neither an input to admit nor an admitted plan');
      if (!request.take) return admission ? { admission } : {};
      const hold = await line.holdSymbol(plan, leaseMs);
      const found = { ...(admission ? { admission } : {}), hold };
      if (!hold.held || !request.permit) return found;
      const answer = await governor.requestPermit({
        plan,
        at: request.at,
        ...(request.approvals ? { approvals: request.approvals } : {}),
      });
      return { ...found, answer };
    },
  };
}
