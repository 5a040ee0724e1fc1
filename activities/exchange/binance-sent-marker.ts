import type { Result } from 'ioredis';
import { SEND_GUARD_LUA } from './send-guard';

/**
 * Claims the right to send an order request under a client order id: refused while the last request's timestamp
 * plus its recvWindow and the margin has not passed (Binance could still execute it), else the marker is written
 * with this request's timestamp, in one step so two calls for one plan cannot both send.
 *
 * A marker whose window has passed means a request went out before whose fate is not known here: unless the caller
 * has just looked the order up (ARGV[7] = 'looked'), the claim is refused with -1 so that it looks first. With no
 * marker (no request in the marker's life, or the last one refused outright), nothing needs looking up.
 *
 * With a guard (the request's: Execute's kill switch and permits), a new request is claimed only while the guard
 * holds (SEND_GUARD_LUA), in the same step: the switch set while the adapter read the mode or the time stops it.
 *
 * KEYS: the marker, and with a guard the kill switch, the Governor's permit, P3.3's permit. ARGV: now (Binance time),
 * margin ms, recv window ms, plan id, symbol, ttl s, 'looked' or '', the guard's permit margin ms ('' = no guard).
 * Returns 0 when claimed, -1 when the order must be looked up first, the guard's refusal (a string), else the ms still
 * to wait (> 0).
 */
export const CLAIM_SEND = `${SEND_GUARD_LUA}
local ts = tonumber(redis.call('HGET', KEYS[1], 'timestamp'))
local window = tonumber(redis.call('HGET', KEYS[1], 'recv_window_ms'))
if ts and window then
  local wait = ts + window + tonumber(ARGV[2]) - tonumber(ARGV[1])
  if wait >= 0 then return wait + 1 end
  if ARGV[7] ~= 'looked' then return -1 end
end
if ARGV[8] ~= '' then
  local refusal = sendRefusal(KEYS[2], KEYS[3], KEYS[4], ARGV[4], ARGV[8])
  if refusal then return refusal end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'timestamp', ARGV[1], 'recv_window_ms', ARGV[3], 'plan_id', ARGV[4], 'symbol', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 0
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    binanceClaimSend(numberOfKeys: string, markerKey: string, ...args: string[]): Result<number | string, Context>;
  }
}
