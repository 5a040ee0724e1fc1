import { workflowInfo } from '@temporalio/workflow';
import type { GovernorTurn } from '../activities/governor-turn';
import type { CarriedState, ChainRules, GovernorPermit, Plan } from '../contract/types';
import { type Ending, type Layers, local, regular } from './chain-calls';
import type { OperatorDesk } from './operator-desk';
import type { StatusBoard } from './status-board';
import type { WakeUps } from './wake-ups';

/** The Governor's answer to the call that admitted the plan, and the workflow's time when it was asked. */
interface FirstTurn {
  turn: GovernorTurn;
  at: number;
}

/** One admitted plan in this run: what it is, the rules it runs under, and what it holds; the steps share it. */
export class PlanRun {
  readonly layers: Layers;
  readonly planDeadline: number;
  readonly permitLifeMs: number;
  /** When the plan's first run started: its age counts from there, across runs. */
  readonly startedAt: number;
  /** The permit in hand and when its life for the chain ends (the workflow's clock, from before the request). */
  permit?: { permit: GovernorPermit; deadline: number };
  /** Whether the plan holds its symbol or stands in its line: either way it must let go when it leaves. */
  inLine: boolean;
  /** The layer called last: a local activity's failure does not name it, the plan's error should. */
  step = '';
  /** The admitting call's turn, until the plan acts on it. */
  firstTurn?: FirstTurn;

  constructor(
    readonly plan: Plan,
    readonly rules: ChainRules,
    readonly board: StatusBoard,
    readonly desk: OperatorDesk,
    readonly wakeUps: WakeUps,
    /** The admitting call's answer: its turn on the symbol, taken already, and its permit. */
    firstTurn: FirstTurn,
    /** Where an earlier run of the plan left it, when this run continues it. */
    readonly carried?: CarriedState,
  ) {
    this.firstTurn = firstTurn;
    // The admitting call took the plan's turn: held or in line, the plan lets go whatever ends it first (a cancel).
    this.inLine = firstTurn.turn.hold !== undefined;
    this.layers = rules.layerActivities === 'local' ? local : regular;
    // A carried start can only make the plan older, never younger.
    this.startedAt = Math.min(carried?.started_at ?? Infinity, workflowInfo().startTime.getTime());
    this.planDeadline = this.startedAt + rules.planMaxAgeS * 1000;
    this.permitLifeMs = (rules.permitTtlS - rules.permitMarginS) * 1000;
  }

  /** The cancel a person (or Temporal) asked for, as the plan's ending. */
  cancelled(): Ending | undefined {
    const cancel = this.desk.cancel;
    return cancel && { outcome: 'cancelled', detail: `cancelled by ${cancel.by}: ${cancel.reason}` };
  }

  /** The plan's ending once it is older than PLAN_MAX_AGE_S, `state` saying how it stood. */
  tooOld(state = 'not done'): Ending | undefined {
    if (Date.now() < this.planDeadline) return undefined;
    return { outcome: 'expired', detail: `${state} after ${this.rules.planMaxAgeS}s` };
  }
}
