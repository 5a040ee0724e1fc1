import { createHash } from 'node:crypto';
import { z } from 'zod';
import { boundText } from './bound';
import { Dec } from './decimal';
import type { Plan } from '../contract/types';

/**
 * A plan that breaks a rule of the plan table in docs/contract.md. The message names the field and the rule, and
 * quotes the value received cut to a bounded length (lib/bound.ts): a value from outside may be of any size.
 */
export class PlanError extends Error {
  override name = 'PlanError';
  constructor(
    readonly field: string,
    readonly rule: string,
    readonly received?: unknown,
  ) {
    super(`plan: ${field} ${rule}${received === undefined ? '' : ` (got ${quoted(received)})`}`);
  }
}

/** Characters that show as nothing or as a plain space: escaped where a message quotes a value, so a reader sees them. */
const INVISIBLE = /(?! )[\p{Zs}\p{Cf}\u2028\u2029]/gu;

/** A value as an error message quotes it: JSON, invisible characters escaped (`\u00a0`), bounded. */
function quoted(value: unknown): string {
  const json = JSON.stringify(value) ?? String(value);
  // As JSON escapes: one \uXXXX per UTF-16 unit (a pair for a character beyond U+FFFF).
  const escape = (c: string) =>
    Array.from({ length: c.length }, (_, i) => `\\u${c.charCodeAt(i).toString(16).padStart(4, '0')}`).join('');
  return boundText(json.replace(INVISIBLE, escape));
}

/** The fields of the plan table, in its order: a plan has these and nothing else. */
export const PLAN_FIELDS = [
  'plan_id',
  'action',
  'symbol',
  'side',
  'qty',
  'reduce_only',
  'source',
  'reason',
  'created_at',
] as const;

/** Unknown field names named in one message at most; the rest are counted. */
const MAX_NAMED_FIELDS = 10;

/** A plan with fields the plan table does not have: `plan: unknown field(s) foo, bar`. */
export class UnknownFieldsError extends PlanError {
  override name = 'UnknownFieldsError';
  constructor(readonly unknown: string[]) {
    super('plan', 'has unknown fields');
    const named = unknown.slice(0, MAX_NAMED_FIELDS).map((name) =>
      // A plain name as it is; anything else quoted, so that a space or a control character shows.
      /^[A-Za-z0-9_.-]{1,64}$/.test(name) ? name : boundText(JSON.stringify(name), 64),
    );
    const more = unknown.length > MAX_NAMED_FIELDS ? ` and ${unknown.length - MAX_NAMED_FIELDS} more` : '';
    this.message = `plan: unknown field(s) ${named.join(', ')}${more} (a plan has only ${PLAN_FIELDS.join(', ')})`;
  }
}

/** How a value padded with white space is refused: the stream's strings are taken as they are, never trimmed. */
const PADDED = 'must not begin or end with white space (spaces, tabs, newlines, no-break spaces)';

export const MAX_QTY_DECIMALS = 8;
/** No exchange trades a trillion of anything in one order: a longer qty is a producer's bug, not a plan. */
export const MAX_QTY_INTEGER_DIGITS = 12;
export const PLAN_ID = /^[0-9a-f]{16}$/;
/** Upper-case letters and digits with at least one letter: BTCUSDT, 1000PEPEUSDT. */
export const SYMBOL_PATTERN = /^(?=[0-9]*[A-Z])[A-Z0-9]{2,20}$/;
const DECIMAL_TEXT = /^-?(\d+(\.\d*)?|\.\d+)$/;

const qty = z.union([z.string(), z.number()], { message: 'must be a decimal number' }).transform((raw, ctx) => {
  const text = typeof raw === 'number' ? (Number.isFinite(raw) ? new Dec(raw).toFixed() : '') : raw;
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
  if (value.trunc().toFixed().length > MAX_QTY_INTEGER_DIGITS) {
    ctx.addIssue({ code: 'custom', message: `must have at most ${MAX_QTY_INTEGER_DIGITS} integer digits` });
    return z.NEVER;
  }
  return value.toFixed();
});

/** ISO-8601 with a zone: `2026-11-26T10:31:08Z`, `…08.123+01:00`. A time without a zone would mean the host's. */
const ISO_TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/;

/** ms since epoch of a strict ISO-8601 time, or NaN: no 30 February, no hour 24 (Date.parse rolls those over). */
export function strictIsoTime(text: string): number {
  const m = ISO_TIME.exec(text);
  if (!m) return NaN;
  const [year, month, day, hour, minute, second] = [m[1], m[2], m[3], m[4], m[5], m[6] ?? '0'].map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth || hour > 23 || minute > 59 || second > 59) return NaN;
  return Date.parse(text);
}

/** Control characters (C0, DEL, C1) in free text break log lines and terminals; a plan never needs them. */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f]/;
const freeText = (max: number) =>
  z
    .string()
    .max(max, `must be at most ${max} characters`)
    .refine((value) => !CONTROL_CHARS.test(value), { message: 'must not contain control characters' });

const bool = z.unknown().transform((raw, ctx) => {
  if (raw === true || raw === 'true' || raw === '1') return true;
  if (raw === false || raw === 'false' || raw === '0') return false;
  ctx.addIssue({ code: 'custom', message: 'must be true or false' });
  return z.NEVER;
});

const createdAt = z
  .union([z.number(), z.string()], { message: 'must be ms since epoch or an ISO-8601 time' })
  .transform((raw, ctx) => {
    const text = String(raw);
    const ms = /^\d+$/.test(text) ? Number(text) : strictIsoTime(text);
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
  source: freeText(200).pipe(z.string().min(1, 'must name who produced the plan')),
  reason: freeText(2000).optional(),
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

/**
 * The plan id of a plan without one: the first 16 hex of the SHA-256 of the canonical JSON of its fields as received,
 * the plan table's fields only (other than `plan_id`): nothing else sent beside a plan can make it another plan.
 */
export function derivePlanId(fields: Record<string, unknown>): string {
  const own: Record<string, unknown> = {};
  for (const field of PLAN_FIELDS) if (field !== 'plan_id') own[field] = fields[field];
  return createHash('sha256').update(canonicalJson(own)).digest('hex').slice(0, 16);
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
  const known: ReadonlySet<string> = new Set(PLAN_FIELDS);
  const unknown = Object.keys(fields)
    .filter((name) => !known.has(name) && fields[name] !== undefined)
    .sort();
  if (unknown.length > 0) throw new UnknownFieldsError(unknown);
  // Free text (`reason`) keeps its spaces; every other value is exact, and padding is named as such.
  for (const field of PLAN_FIELDS) {
    const value = fields[field];
    if (field !== 'reason' && typeof value === 'string' && value !== value.trim()) {
      throw new PlanError(field, PADDED, value);
    }
  }
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

/**
 * What a plan's workflow accepts as input, checked where it runs (the Governor's admission): the plan alone, valid
 * by the same rules as `submit` and the intake, in canonical form, with its id and creation time given and the id
 * the workflow's own. Anything else — the old `settings`, any other field — is refused, not silently used.
 */
export function admitInput(input: unknown, workflowId: string): Plan {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new PlanError('input', 'must be a JSON object {plan}');
  }
  const extra = Object.keys(input).filter((key) => key !== 'plan');
  if (extra.length > 0) {
    const got = boundText(extra.join(', '), 256);
    throw new PlanError('input', `must carry the plan only; a plan's rules are the worker's (got ${got})`);
  }
  const raw = (input as { plan?: unknown }).plan;
  if (raw === undefined) throw new PlanError('plan', 'is required');
  const plan = parsePlan(raw, () => NaN);
  // parsePlan fills these in for a plan as received; a plan handed to its workflow has them already.
  for (const required of ['plan_id', 'created_at'] as const) {
    if ((raw as Record<string, unknown>)[required] === undefined) throw new PlanError(required, 'is required');
  }
  if (workflowId !== `plan-${plan.plan_id}`) {
    throw new PlanError('plan_id', `must be the workflow's own (workflow id ${quoted(workflowId)})`);
  }
  return plan;
}

/** The fields that make a plan the trade it is: a plan id given twice must mean the same trade. */
const TRADE_FIELDS = ['action', 'symbol', 'side', 'qty', 'reduce_only'] as const;

/** The trade fields in which two plans with one id differ (empty: the same plan). */
export function differingFields(existing: Plan, candidate: Plan): string[] {
  return TRADE_FIELDS.filter((field) => existing[field] !== candidate[field]);
}

/** A plan id that already names another trade. */
export class PlanConflictError extends PlanError {
  override name = 'PlanConflictError';
  constructor(planId: string, fields: string[]) {
    super('plan_id', `${planId} is already a different plan (it differs in ${fields.join(', ')})`);
  }
}
