/**
 * The check every send claim makes in its own Redis step, right before an order goes out: the kill switch off, and
 * both of the plan's permits present, for this plan, granted, with more than the margin left (the rules of
 * activities/execute.ts `checkPermits`). Lua source of a function `sendRefusal(killSwitch, governor, p33, planId,
 * marginMs)` that returns nil when the order may go, else the refusal (an ExecuteRefusal); the scripts that claim a
 * send (Execute's, the Binance adapter's sent marker) start with it.
 */
export const SEND_GUARD_LUA = `
local function sendRefusal(killSwitch, governor, p33, planId, marginMs)
  local switch = redis.call('GET', killSwitch)
  if switch and switch ~= '0' then return 'kill_switch_active' end
  local permits = {governor, p33}
  for i = 1, 2 do
    local raw = redis.call('GET', permits[i])
    local ttl = redis.call('PTTL', permits[i])
    if not raw or ttl < 0 then return 'permit_missing' end
    local ok, permit = pcall(cjson.decode, raw)
    if not ok or type(permit) ~= 'table' or permit.plan_id ~= planId then return 'permit_missing' end
    if (i == 1 and permit.granted ~= true) or (i == 2 and permit.allow ~= true) then return 'permit_denied' end
    if ttl <= tonumber(marginMs) then return 'permit_expiring' end
  end
  return nil
end
`;
