import type { Result } from 'ioredis';

/**
 * The ledger's atomic steps (activities/ledger.ts calls them): record a fill once, settle an unapplied one, reconcile
 * a symbol. Lua compares strings; decimal arithmetic stays in TypeScript.
 */

/**
 * Records a fill once and moves the ledger by it only if the ledger still holds the value Execute read before placing
 * the order. Decimal arithmetic stays in TypeScript; Lua compares strings.
 *
 * Once-only rests on the symbol's fills record (`quantum:ledger:fills:{symbol}`, field = exchange order id, never
 * expires; activities/fills.ts): an order already in it never moves the ledger again. When the plan's execution record
 * is gone but the fills record holds the order's fill, the execution record is rebuilt from it. An entry `refused`
 * (an answer Execute did not believe) is replaced by the proven fill; an entry accounted otherwise (a reconcile counted
 * a refused answer's order) records the fill without moving the ledger.
 *
 * KEYS: execution hash, position hash, audit stream, the symbol's set of unapplied fills, the symbol's fills record,
 * the symbol's claimed sends (the plan's claim leaves them: its fill is recorded).
 * ARGV: mode ('move': compare and move; 'none': an order that filled nothing; 'unapplied': the value before is not a
 * decimal), ledger before ('' = absent), ledger after, updated_at, plan id, order id ('' = none), the fills-record
 * entry (JSON, without `applied`, `ledger_before`, `ledger_after`), n record fields, record fields..., n
 * applied-audit fields, applied-audit fields..., n unapplied-audit fields, unapplied-audit fields..., rebuilt-audit
 * fields...
 * Returns 1 when applied, 0 when the record already existed, -1 when another fill moved the ledger meanwhile (read it
 * again and retry: fills add up), -2 when recorded unapplied (the ledger changed otherwise: a person, or corruption),
 * 2 when the execution record was rebuilt from the fills record, 3 when recorded as already accounted, -3 when the
 * order id is another plan's in the fills record.
 *
 * `ledger_after_fill` in the position hash is what the chain's last fill left there: a ledger equal to it was moved
 * by a fill, one that differs was set by someone else. Without it, another plan's equal fill would look like a
 * person's hand-set value that already counts this one.
 */
export const RECORD_FILL = `
local exec, pos, audit, unapplied, fills, claims = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local mode, before, after, now, plan, oid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if redis.call('EXISTS', exec) == 1 then return 0 end
redis.call('HDEL', claims, plan)
local n = tonumber(ARGV[8])
local na = tonumber(ARGV[9 + n])
local nu = tonumber(ARGV[10 + n + na])
local appliedAudit = {9 + n + 1, 9 + n + na}
local unappliedAudit = {11 + n + na, 10 + n + na + nu}
local known = false
if oid ~= '' then known = redis.call('HGET', fills, oid) end
if known then
  local e = cjson.decode(known)
  if e.applied ~= 'refused' then
    if e.plan_id ~= plan then return -3 end
    if e.filled_qty then
      local function text(v) if v == nil or v == cjson.null then return '' end return tostring(v) end
      redis.call('HSET', exec, 'order_id', text(e.order_id), 'client_order_id', text(e.client_order_id),
        'status', text(e.status), 'side', text(e.side), 'filled_qty', text(e.filled_qty),
        'avg_price', text(e.avg_price), 'executed_at', text(e.executed_at), 'requested_qty', text(e.requested_qty),
        'ledger_applied', text(e.applied), 'ledger_before', text(e.ledger_before))
      if e.reject_reason then redis.call('HSET', exec, 'reject_reason', e.reject_reason) end
      if e.applied == '0' then redis.call('SADD', unapplied, plan) end
      redis.call('XADD', audit, '*', unpack(ARGV, 11 + n + na + nu, #ARGV))
      return 2
    end
    mode = 'accounted'
  end
end
local function remember(applied, ledgerAfter)
  if oid == '' then return end
  local e = cjson.decode(ARGV[7])
  e.applied = applied
  e.ledger_before = before
  e.ledger_after = ledgerAfter
  redis.call('HSET', fills, oid, cjson.encode(e))
end
if mode == 'move' then
  local current = redis.call('HGET', pos, 'ledger_amount') or ''
  if current == before then
    redis.call('HSET', pos, 'ledger_amount', after, 'ledger_after_fill', after, 'updated_at', now)
  else
    local lastFill = redis.call('HGET', pos, 'ledger_after_fill')
    if lastFill and current == lastFill then return -1 end
    mode = 'unapplied'
  end
end
redis.call('HSET', exec, unpack(ARGV, 9, 8 + n))
if mode == 'accounted' then
  redis.call('HSET', exec, 'ledger_applied', 'reconcile', 'ledger_before', before)
  remember('reconcile', '')
  redis.call('XADD', audit, '*', unpack(ARGV, appliedAudit[1], appliedAudit[2]))
  return 3
end
if mode == 'unapplied' then
  redis.call('HSET', exec, 'ledger_applied', '0', 'ledger_before', before)
  remember('0', '')
  redis.call('SADD', unapplied, plan)
  redis.call('XADD', audit, '*', unpack(ARGV, unappliedAudit[1], unappliedAudit[2]))
  return -2
end
redis.call('HSET', exec, 'ledger_applied', '1', 'ledger_before', before)
if mode == 'move' then remember('1', after) else remember('1', '') end
redis.call('XADD', audit, '*', unpack(ARGV, appliedAudit[1], appliedAudit[2]))
return 1
`;

/**
 * Lua: sets `applied` (and `ledger_after` when not '') of the fills-record entry of the order in execution hash
 * `exec`, when there is one.
 */
const MARK_FILLS_ENTRY = `
local function markEntry(fills, exec, applied, ledgerAfter)
  local oid = redis.call('HGET', exec, 'order_id')
  if not oid or oid == '' then return end
  local raw = redis.call('HGET', fills, oid)
  if not raw then return end
  local e = cjson.decode(raw)
  e.applied = applied
  if ledgerAfter ~= '' then e.ledger_after = ledgerAfter end
  redis.call('HSET', fills, oid, cjson.encode(e))
end
`;

/**
 * Settles a recorded, unapplied fill: only while it is still unapplied and the ledger still holds the value the rule
 * was decided on; its fills-record entry follows.
 *
 * KEYS: execution hash, position hash, audit stream, the symbol's set of unapplied fills, the symbol's fills record.
 * ARGV: plan id, ledger now ('' = absent), new ledger ('' = do not move it), ledger_applied value, updated_at,
 * audit fields...
 * Returns 1 when settled, 0 when it was no longer unapplied, -1 when the ledger changed meanwhile.
 */
export const SETTLE_FILL = `${MARK_FILLS_ENTRY}
local exec, pos, audit, unapplied, fills = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('HGET', exec, 'ledger_applied') ~= '0' then return 0 end
if (redis.call('HGET', pos, 'ledger_amount') or '') ~= ARGV[2] then return -1 end
if ARGV[3] ~= '' then
  redis.call('HSET', pos, 'ledger_amount', ARGV[3], 'ledger_after_fill', ARGV[3], 'updated_at', ARGV[5])
end
redis.call('HSET', exec, 'ledger_applied', ARGV[4])
markEntry(fills, exec, ARGV[4], ARGV[3])
redis.call('SREM', unapplied, ARGV[1])
redis.call('XADD', audit, '*', unpack(ARGV, 6, #ARGV))
return 1
`;

/**
 * Sets the ledger to the exchange's amount and marks every unapplied fill of the symbol as accounted for, in one
 * step: the exchange's amount already includes those fills, so none of them may move the ledger afterwards. That
 * includes every entry of the fills record still unapplied or refused (an answer Execute did not believe: whatever
 * the order did is in the exchange's amount), each audited under its plan.
 *
 * It also accounts for the orders found on the exchange under a claimed send with no execution record (a worker
 * killed mid-Execute, a plan terminated): each gets a fills-record entry `reconcile` unless its order id has one, so
 * that a later Execute of the plan records its fill without moving the ledger; its claim is dropped.
 *
 * KEYS: position hash, audit stream, the symbol's set of unapplied fills, the symbol's fills record, the symbol's
 * claimed sends, the execution hash of each plan id below.
 * ARGV: ledger as read ('' = absent), new ledger, updated_at, n plan ids, plan ids..., n orders found, (plan id, order
 * id, entry JSON) of each..., n audit fields, the reconcile's audit fields..., the per-plan audit fields after
 * `plan_id`...
 * Returns how many fills it accounted for, or -1 when the ledger or the set changed since they were read.
 */
export const RECONCILE_LEDGER = `${MARK_FILLS_ENTRY}
local pos, audit, unapplied, fills, claims = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if (redis.call('HGET', pos, 'ledger_amount') or '') ~= ARGV[1] then return -1 end
local n = tonumber(ARGV[4])
if redis.call('SCARD', unapplied) ~= n then return -1 end
for i = 1, n do
  if redis.call('SISMEMBER', unapplied, ARGV[4 + i]) == 0 then return -1 end
end
local no = tonumber(ARGV[5 + n])
local na = tonumber(ARGV[6 + n + 3 * no])
local perFill = 7 + n + 3 * no + na
redis.call('HSET', pos, 'ledger_amount', ARGV[2], 'updated_at', ARGV[3])
redis.call('HDEL', pos, 'ledger_after_fill')
redis.call('DEL', unapplied)
redis.call('XADD', audit, '*', unpack(ARGV, 7 + n + 3 * no, 6 + n + 3 * no + na))
for i = 1, n do
  if redis.call('HGET', KEYS[5 + i], 'ledger_applied') == '0' then
    redis.call('HSET', KEYS[5 + i], 'ledger_applied', 'reconcile')
    markEntry(fills, KEYS[5 + i], 'reconcile', '')
    redis.call('XADD', audit, '*', 'plan_id', ARGV[4 + i], unpack(ARGV, perFill, #ARGV))
  end
end
local all = redis.call('HGETALL', fills)
for i = 1, #all, 2 do
  local e = cjson.decode(all[i + 1])
  if e.applied == '0' or e.applied == 'refused' then
    e.applied = 'reconcile'
    redis.call('HSET', fills, all[i], cjson.encode(e))
    redis.call('XADD', audit, '*', 'plan_id', e.plan_id or '-', unpack(ARGV, perFill, #ARGV))
  end
end
for i = 0, no - 1 do
  local plan, oid, entry = ARGV[6 + n + 3 * i], ARGV[7 + n + 3 * i], ARGV[8 + n + 3 * i]
  if redis.call('HEXISTS', fills, oid) == 0 then
    redis.call('HSET', fills, oid, entry)
    redis.call('XADD', audit, '*', 'plan_id', plan, unpack(ARGV, perFill, #ARGV))
  end
  redis.call('HDEL', claims, plan)
end
return n
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    recordFill(
      exec: string,
      pos: string,
      audit: string,
      unapplied: string,
      fills: string,
      claims: string,
      ...args: string[]
    ): Result<number, Context>;
    settleFill(
      exec: string,
      pos: string,
      audit: string,
      unapplied: string,
      fills: string,
      ...args: string[]
    ): Result<number, Context>;
    reconcileLedger(...keysThenArgs: string[]): Result<number, Context>;
  }
}
