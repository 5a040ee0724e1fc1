/**
 * Every Redis key of the contract (docs/contract.md), built from one prefix so that tests can isolate themselves.
 * The names are the existing system's; operators and other services read them.
 */
export function redisKeys(prefix: string) {
  return {
    permit: (planId: string) => `${prefix}:permit:${planId}`,
    p33Permit: (planId: string) => `${prefix}:permit:p33:${planId}`,
    applyStream: `${prefix}:stream:apply.plan`,
    applyDedupe: (planId: string) => `${prefix}:apply:dedupe:${planId}`,
    /**
     * Apply's once-only record (the stream entry id): it lives as long as Temporal can reset or replay the plan, where
     * the dedupe key above keeps the existing system's one day.
     */
    applyPublished: (planId: string) => `${prefix}:apply:published:${planId}`,
    position: (symbol: string) => `${prefix}:position:${symbol}`,
    execution: (planId: string) => `${prefix}:execution:${planId}`,
    /**
     * A set of the plan ids whose fill is on the exchange but not in the symbol's ledger (`ledger_applied` 0 in
     * their execution record): a reconcile accounts for them, since the exchange's amount already includes them.
     */
    unappliedFills: (symbol: string) => `${prefix}:ledger:unapplied:${symbol}`,
    /**
     * The symbol's fills record (hash, never expires): field = the exchange's order id, value = JSON of the order's
     * fill and how it stands with the ledger (`applied`: 1, 0, hand_set, reconcile, refused). The ledger moves at
     * most once per field; trimmed only by `trimFills` (activities/ledger.ts).
     */
    fills: (symbol: string) => `${prefix}:ledger:fills:${symbol}`,
    /** Where `trimFills` last cut the symbol's fills record (hash: `trimmed_before`, `trimmed`, `at`). */
    fillsCheckpoint: (symbol: string) => `${prefix}:ledger:checkpoint:${symbol}`,
    /**
     * Execute's claim to send a plan's order (hash: `claimed_at`, `symbol`), written in the step that checked the
     * kill switch and both permits: an order goes out only after its claim.
     */
    executeClaim: (planId: string) => `${prefix}:execute:claim:${planId}`,
    /**
     * The symbol's claimed sends whose fill is not yet recorded (hash: plan id → JSON `{plan_id, side, qty,
     * client_order_id, claimed_at}`): where `position` and `reconcile` look for orders on the exchange that no
     * execution record names (a worker killed mid-Execute, a plan terminated). Removed when the fill is recorded.
     */
    executeClaims: (symbol: string) => `${prefix}:execute:claims:${symbol}`,
    killSwitch: `${prefix}:governor:kill_switch`,
    /**
     * A signed operator operation's nonce, once used (SET NX, PX past the signature's expiry): the same signed
     * operation, seen in an operation workflow's input, is refused when sent again.
     */
    operatorNonce: (nonce: string) => `${prefix}:operator:nonce:${nonce}`,
    /** The Governor's rate window per symbol: a sorted set of plan ids by permit time. */
    governorRate: (symbol: string) => `${prefix}:governor:rate:${symbol}`,
    /** Which plan holds a symbol from P3.3 through the ledger update (a lease). */
    symbolLock: (symbol: string) => `${prefix}:lock:symbol:${symbol}`,
    /** The plans waiting for the symbol, in arrival order, and when each last asked. */
    symbolLine: (symbol: string) => `${prefix}:lock:symbol:${symbol}:line`,
    symbolLineAsked: (symbol: string) => `${prefix}:lock:symbol:${symbol}:asked`,
    symbolArrivals: (symbol: string) => `${prefix}:lock:symbol:${symbol}:arrivals`,
    /**
     * The symbols that may have a holder or a line (a set, added to by every turn taken): what the worker's line sweep
     * (workers/line-sweep.ts) looks at, and forgets a symbol from once it has neither.
     */
    symbolLines: `${prefix}:lock:symbols`,
    /** Taken (SET NX PX) by the worker that sweeps the lines this second: one sweep a second however many workers. */
    symbolLinesSweep: `${prefix}:lock:symbols:sweep`,
    /**
     * The plans P3.3 has blocked, per symbol (sorted set: plan id → when), and the symbols that have any: the
     * position watcher wakes them when the symbol's positions change or agree again.
     */
    p33Blocked: (symbol: string) => `${prefix}:p33:blocked:${symbol}`,
    p33BlockedSymbols: `${prefix}:p33:blocked`,
    /**
     * The state a plan's run hands to the run it continues as (JSON: `workflow_id`, `run_id` of the run that wrote
     * it, `saved_at`, `state`), EX PLAN_MAX_AGE_S: the next run takes it only if its predecessor wrote it.
     */
    carriedState: (planId: string) => `${prefix}:chain:carried:${planId}`,
    exitPlanStream: `${prefix}:stream:exit.plan`,
    exitPlanDeadStream: `${prefix}:stream:exit.plan.dead`,
    auditStream: `${prefix}:stream:permit.audit`,
    paperPosition: (symbol: string) => `${prefix}:exchange:paper:position:${symbol}`,
    paperOrder: (clientOrderId: string) => `${prefix}:exchange:paper:order:${clientOrderId}`,
    paperPrice: (symbol: string) => `${prefix}:exchange:paper:price:${symbol}`,
    /**
     * The Binance adapter's record of the last order request sent under a client order id whose outcome is not yet
     * known to be a refusal (hash: `timestamp` in Binance's time, `recv_window_ms`, `plan_id`, `symbol`): no new
     * request goes out under that id until Binance would refuse the old one as stale.
     */
    binanceSent: (clientOrderId: string) => `${prefix}:exchange:binance:sent:${clientOrderId}`,
  };
}

export type RedisKeys = ReturnType<typeof redisKeys>;
