import type { TradingMode } from './types';

/**
 * Operators' operations that read or write Redis or the exchange run in a worker, under its configuration: the CLI
 * starts a short `operatorOperation` workflow (id `op-<uuid>`, on the chain's task queue) whose one activity performs
 * the operation and returns its result with the worker's identity. Its input and result are in the Web UI.
 */
export const OPERATOR_OPERATION_WORKFLOW = 'operatorOperation';

export function operationWorkflowId(uuid: string): string {
  return `op-${uuid}`;
}

/** An operator's signature over an operation (lib/approval.ts signOperation): expiry, single-use nonce, signature. */
export interface OperationSignature {
  expires_at: number;
  nonce: string;
  signature: string;
}

/** What a reconcile's yes was given to: the positions shown (the exchange's amount is what the ledger becomes). */
export interface ReconcileShown {
  exchange: string;
  raw: string | null;
  before: string;
  fills: string[];
  orders: { order_id: string; filled_qty: string }[];
}

export type OperatorRequest =
  | { operation: 'position'; symbol: string }
  | { operation: 'reconcile_preview'; symbol: string }
  | { operation: 'reconcile'; symbol: string; by: string; expected?: ReconcileShown; signed?: OperationSignature }
  | { operation: 'kill_switch'; on: boolean; by: string; signed?: OperationSignature }
  | { operation: 'reset'; plan_id: string; by: string }
  /** Audits a deploy (`permit-chain deploy`): the worker records the routing it reads from the server. */
  | { operation: 'deployed'; build_id: string; by: string };

/** Which worker answered, under which configuration: part of every answer the CLI prints. */
export interface WorkerIdentity {
  /** `EXCHANGE`: paper, binance-usdm-testnet or binance-usdm. */
  exchange: string;
  /** Where the exchange is: Binance's REST host, or the paper exchange's place in Redis. */
  host: string;
  mode: TradingMode;
  key_prefix: string;
  namespace: string;
  task_queue: string;
  /** The worker process: host name and pid. */
  worker: string;
  /** `WORKER_DEPLOYMENT` and the build id the worker runs, and whether it polls as that versioned build. */
  deployment: string;
}

export interface OperatorAnswer {
  worker: WorkerIdentity;
  /** The operation's result (its shape is the operation's: client/chain-client.ts reads it). */
  result: unknown;
  /** Who the operation is recorded as: `NAME (key SHA256:…)`, `NAME (unsigned)`, or absent for a read. */
  recorded_as?: string;
}

/** The one activity of an operation workflow (workers/operator-activities.ts). */
export interface OperatorActivities {
  performOperation(request: OperatorRequest): Promise<OperatorAnswer>;
}
