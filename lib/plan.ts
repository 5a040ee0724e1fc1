import { createHash } from 'node:crypto';
import { z } from 'zod';
import { Dec } from './decimal';
import type { Plan } from './types';

/** A plan that breaks a rule of DESIGN.md's Plan table. The message names the field and the rule. */
export class PlanError extends Error {
  override name = 'PlanError';
  constructor(
    readonly field: string,
    readonly rule: string,
    readonly received?: unknown,
  ) {
    super(`plan: ${field} ${rule}${received === undefined ? '' : ` (got ${JSON.stringify(received)})`}`);
  }
}

export const MAX_QTY_DECIMALS = 8;
const PLAN_ID = /^[0-9a-f]{16}$/;
/** Upper-case letters and digits with at least one letter: BTCUSDT, 1000PEPEUSDT. */
export const SYMBOL_PATTERN = /^(?=[0-9]*[A-Z])[A-Z0-9]{2,20}$/;
const DECIMAL_TEXT = /^-?(\d+(\.\d*)?|\.\d+)$/;

const qty = z.union([z.string(), z.number()], { message: 'must be a decimal number' }).transform((raw, ctx) => {
  const text = typeof raw === 'number' ? (Number.isFinite(raw) ? new Dec(raw).toFixed() : '') : raw.trim();
  if (!DECIMAL_TEXT.test(text)) {
    ctx.addIssue({ code: 'custom', message: 'must be a decimal number' });
    return z.NEVER;
  }
  const value = new Dec(text);
  if (value.lte(0)) {
    ctx.addIssue({ code: 'custom', message: 'must be > 0' });
    return z.NEVER;
  }
  if (value.decimalPlaces() > MAX_QTY_DECIMALS) {
    ctx.addIssue({ code: 'custom', message: `must have at most ${MAX_QTY_DECIMALS} decimals` });
    return z.NEVER;
  }
  return value.toFixed();
});

const bool = z.unknown().transform((raw, ctx) => {
  if (raw === true || raw === 'true' || raw === '1') return true;
  if (raw === false || raw === 'false' || raw === '0') return false;
  ctx.addIssue({ code: 'custom', message: 'must be true or false' });
  return z.NEVER;
});

const createdAt = z
  .union([z.number(), z.string()], { message: 'must be ms since epoch or an ISO-8601 time' })
  .transform((raw, ctx) => {
    const text = String(raw).trim();
    const ms = /^\d+$/.test(text) ? Number(text) : /^\d{4}-\d{2}-\d{2}T/.test(text) ? Date.parse(text) : NaN;
    if (!Number.isSafeInteger(ms) || ms <= 0) {
      ctx.addIssue({ code: 'custom', message: 'must be ms since epoch or an ISO-8601 time' });
      return z.NEVER;
    }
    return ms;
  });

const PlanFields = z.object({
  plan_id: z.string().regex(PLAN_ID, 'must be 16 lowercase hex characters').optional(),
  action: z.literal('EXECUTE', { message: "must be 'EXECUTE' (this chain only executes plans)" }),
  symbol: z.string().regex(SYMBOL_PATTERN, 'must be an upper-case exchange symbol such as BTCUSDT'),
  side: z.enum(['BUY', 'SELL'], { message: "must be 'BUY' or 'SELL'" }),
  qty,
  reduce_only: bool.optional(),
  source: z.string().trim().min(1, 'must name who produced the plan').max(200, 'must be at most 200 characters'),
  reason: z.string().max(2000, 'must be at most 2000 characters').optional(),
  created_at: createdAt.optional(),
});

/** Canonical JSON: keys sorted at every depth, no white space. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value))
    return `[${value.map((item) => (item === undefined ? 'null' : canonicalJson(item))).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** The plan id of a plan without one: the first 16 hex of the SHA-256 of the canonical JSON of its fields. */
export function derivePlanId(fields: Record<string, unknown>): string {
  const { plan_id: _ignored, ...rest } = fields;
  return createHash('sha256').update(canonicalJson(rest)).digest('hex').slice(0, 16);
}

/**
 * Validates a plan as received (JSON, or a stream entry's string fields) and returns it in canonical form.
 * Throws {@link PlanError} naming the first field that breaks a rule.
 */
export function parsePlan(input: unknown, now: () => number = Date.now): Plan {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new PlanError('plan', 'must be a JSON object');
  }
  const fields = input as Record<string, unknown>;
  const parsed = PlanFields.safeParse(fields);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = String(issue?.path[0] ?? 'plan');
    const received = fields[field];
    const rule = received === undefined ? 'is required' : (issue?.message ?? 'is invalid');
    throw new PlanError(field, rule, received);
  }
  const p = parsed.data;
  const plan: Plan = {
    plan_id: p.plan_id ?? derivePlanId(fields),
    action: p.action,
    symbol: p.symbol,
    side: p.side,
    qty: p.qty,
    reduce_only: p.reduce_only ?? true,
    source: p.source,
    created_at: p.created_at ?? now(),
  };
  if (p.reason !== undefined && p.reason !== '') plan.reason = p.reason;
  return plan;
}

/** The one-line summary a person reads in the Web UI and the logs. */
export function planSummary(plan: Plan): string {
  return `${plan.side} ${plan.qty} ${plan.symbol}${plan.reduce_only ? ' reduce-only' : ''} · plan ${plan.plan_id}`;
}
