import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  admitInput,
  canonicalJson,
  derivePlanId,
  differingFields,
  parsePlan,
  PlanError,
  planSummary,
  UnknownFieldsError,
} from '../../lib/plan';
import type { Plan } from '../../contract/types';

const NOW = 1_700_000_000_000;
const now = () => NOW;

/** A plan as an upstream service sends it as JSON; `created_at` 2023-11-14T22:13:20.123Z. */
const jsonPlan = {
  action: 'EXECUTE',
  symbol: 'BTCUSDT',
  side: 'SELL',
  qty: '0.062',
  reduce_only: true,
  source: 'exit-monitor',
  reason: 'stop hit',
  created_at: 1_700_000_000_123,
};

/** The same plan as a stream entry: every field a string. */
const streamPlan: Record<string, string> = {
  action: 'EXECUTE',
  symbol: 'BTCUSDT',
  side: 'SELL',
  qty: '0.062',
  reduce_only: 'false',
  source: 'exit-monitor',
  created_at: '1700000000123',
};

function sha256Prefix(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

function without(fields: Record<string, unknown>, key: string): Record<string, unknown> {
  const { [key]: _dropped, ...rest } = fields;
  return rest;
}

/** Parses and returns the PlanError, failing the test if parsePlan accepts the input or throws something else. */
function refusal(input: unknown): PlanError {
  try {
    parsePlan(input, now);
  } catch (error) {
    if (error instanceof PlanError) return error;
    throw error;
  }
  return expect.fail(`parsePlan accepted ${JSON.stringify(input)}`);
}

describe('parsePlan: accepted plans', () => {
  it('takes a JSON plan and returns it in canonical form', () => {
    expect(parsePlan(jsonPlan, now)).toEqual<Plan>({
      plan_id: derivePlanId(jsonPlan),
      action: 'EXECUTE',
      symbol: 'BTCUSDT',
      side: 'SELL',
      qty: '0.062',
      reduce_only: true,
      source: 'exit-monitor',
      reason: 'stop hit',
      created_at: 1_700_000_000_123,
    });
  });

  it('takes a stream-style plan whose fields are all strings', () => {
    const plan = parsePlan(streamPlan, now);
    expect(plan).toEqual<Plan>({
      plan_id: derivePlanId(streamPlan),
      action: 'EXECUTE',
      symbol: 'BTCUSDT',
      side: 'SELL',
      qty: '0.062',
      reduce_only: false,
      source: 'exit-monitor',
      created_at: 1_700_000_000_123,
    });
    expect(plan).not.toHaveProperty('reason');
  });

  it.each([
    ['ms since epoch, number', 1_700_000_000_123],
    ['ms since epoch, string', '1700000000123'],
    ['ISO-8601 in UTC', '2023-11-14T22:13:20.123Z'],
    ['ISO-8601 with an offset', '2023-11-15T00:13:20.123+02:00'],
  ])('reads created_at given as %s', (_name, createdAt) => {
    expect(parsePlan({ ...streamPlan, created_at: createdAt }, now).created_at).toBe(1_700_000_000_123);
  });

  it('stamps created_at with the time of receipt when absent', () => {
    expect(parsePlan(without(jsonPlan, 'created_at'), now).created_at).toBe(NOW);
  });

  it.each<[string, unknown, boolean]>([
    ['absent', undefined, true],
    ['true', true, true],
    ['false', false, false],
    ["'true'", 'true', true],
    ["'false'", 'false', false],
    ["'1'", '1', true],
    ["'0'", '0', false],
  ])('reads reduce_only %s as %s', (_name, reduceOnly, expected) => {
    const input =
      reduceOnly === undefined ? without(jsonPlan, 'reduce_only') : { ...jsonPlan, reduce_only: reduceOnly };
    expect(parsePlan(input, now).reduce_only).toBe(expected);
  });

  it.each<[unknown, string]>([
    ['0.00000001', '0.00000001'],
    [0.00000001, '0.00000001'],
    [0.062, '0.062'],
    ['0.062', '0.062'],
    ['0.0620', '0.062'],
    ['1.50000000', '1.5'],
    ['12', '12'],
  ])('accepts qty %j as %j', (qty, canonical) => {
    expect(parsePlan({ ...jsonPlan, qty }, now).qty).toBe(canonical);
  });

  it.each(['BUY', 'SELL'])('accepts side %s', (side) => {
    expect(parsePlan({ ...jsonPlan, side }, now).side).toBe(side);
  });

  it.each([
    ['a qty of 12 integer digits', '999999999999.12345678'],
    ['a leap day', '2024-02-29T23:59:59.999Z'],
    ['an offset', '2026-11-26T10:31:08+01:00'],
  ])('accepts %s', (_case, value) => {
    const field = value.includes('T') ? 'created_at' : 'qty';
    expect(parsePlan({ ...jsonPlan, [field]: value }, now)[field]).toBe(field === 'qty' ? value : Date.parse(value));
  });

  it('keeps a plan_id that is given', () => {
    expect(parsePlan({ ...jsonPlan, plan_id: '0123456789abcdef' }, now).plan_id).toBe('0123456789abcdef');
  });

  it('keeps the spaces of a reason, which is free text', () => {
    expect(parsePlan({ ...jsonPlan, reason: '  stop hit\u00a0' }, now).reason).toBe('  stop hit\u00a0');
  });

  it('treats a field given as undefined as absent', () => {
    expect(parsePlan({ ...jsonPlan, reason: undefined, extra: undefined }, now)).toEqual(
      parsePlan(without(jsonPlan, 'reason'), now),
    );
  });

  it('drops an empty reason', () => {
    expect(parsePlan({ ...jsonPlan, reason: '' }, now)).not.toHaveProperty('reason');
  });
});

describe('parsePlan: refused plans', () => {
  it.each<[string, unknown, string, string]>([
    ["qty '0'", { ...jsonPlan, qty: '0' }, 'qty', 'must be > 0'],
    ['qty 0', { ...jsonPlan, qty: 0 }, 'qty', 'must be > 0'],
    ["qty '0.00000000'", { ...jsonPlan, qty: '0.00000000' }, 'qty', 'must be > 0'],
    ['qty with 9 decimals', { ...jsonPlan, qty: '0.000000001' }, 'qty', 'at most 8 decimals'],
    ['qty number with 9 decimals', { ...jsonPlan, qty: 0.000000001 }, 'qty', 'at most 8 decimals'],
    ['qty 0.1 + 0.2 as a float', { ...jsonPlan, qty: 0.1 + 0.2 }, 'qty', 'at most 8 decimals'],
    ["qty '1e-7' (not decimal text)", { ...jsonPlan, qty: '1e-7' }, 'qty', 'must be a decimal number'],
    ["qty '-0.5'", { ...jsonPlan, qty: '-0.5' }, 'qty', 'must be > 0'],
    ['qty -1', { ...jsonPlan, qty: -1 }, 'qty', 'must be > 0'],
    ["qty 'abc'", { ...jsonPlan, qty: 'abc' }, 'qty', 'must be a decimal number'],
    ["qty ''", { ...jsonPlan, qty: '' }, 'qty', 'must be a decimal number'],
    ['qty missing', without(jsonPlan, 'qty'), 'qty', 'is required'],
    ["side 'buy'", { ...jsonPlan, side: 'buy' }, 'side', "'BUY' or 'SELL'"],
    ["side 'HOLD'", { ...jsonPlan, side: 'HOLD' }, 'side', "'BUY' or 'SELL'"],
    ["symbol 'btcusdt'", { ...jsonPlan, symbol: 'btcusdt' }, 'symbol', 'upper-case'],
    ["symbol '1000'", { ...jsonPlan, symbol: '1000' }, 'symbol', 'upper-case'],
    ["action 'EXIT'", { ...jsonPlan, action: 'EXIT' }, 'action', "'EXECUTE'"],
    ['action missing', without(jsonPlan, 'action'), 'action', 'is required'],
    ['source missing', without(jsonPlan, 'source'), 'source', 'is required'],
    ["source ''", { ...jsonPlan, source: '' }, 'source', 'must name who produced the plan'],
    ['plan_id upper-case', { ...jsonPlan, plan_id: '0123456789ABCDEF' }, 'plan_id', '16 lowercase hex'],
    ['plan_id of 15 hex', { ...jsonPlan, plan_id: '0123456789abcde' }, 'plan_id', '16 lowercase hex'],
    ['plan_id of 17 hex', { ...jsonPlan, plan_id: '0123456789abcdef0' }, 'plan_id', '16 lowercase hex'],
    ['plan_id not hex', { ...jsonPlan, plan_id: '0123456789abcdeg' }, 'plan_id', '16 lowercase hex'],
    ["reduce_only 'yes'", { ...jsonPlan, reduce_only: 'yes' }, 'reduce_only', 'must be true or false'],
    ["created_at 'yesterday'", { ...jsonPlan, created_at: 'yesterday' }, 'created_at', 'ISO-8601'],
    ['created_at 0', { ...jsonPlan, created_at: 0 }, 'created_at', 'ms since epoch'],
    ["qty '1000000000000' (13 integer digits)", { ...jsonPlan, qty: '1000000000000' }, 'qty', 'at most 12 integer'],
    ['created_at on 30 February', { ...jsonPlan, created_at: '2026-02-30T10:00:00Z' }, 'created_at', 'ISO-8601'],
    ['created_at at hour 24', { ...jsonPlan, created_at: '2026-02-28T24:00:00Z' }, 'created_at', 'ISO-8601'],
    ['created_at without a zone', { ...jsonPlan, created_at: '2026-02-28T10:00:00' }, 'created_at', 'ISO-8601'],
    ['created_at on 29 February 2025', { ...jsonPlan, created_at: '2025-02-29T10:00:00Z' }, 'created_at', 'ISO'],
    ['a reason with an escape', { ...jsonPlan, reason: 'stop\u001b[2J' }, 'reason', 'control characters'],
    ['a reason with a newline', { ...jsonPlan, reason: 'stop\nhit' }, 'reason', 'control characters'],
    ['a source with NUL', { ...jsonPlan, source: 'exit\u0000monitor' }, 'source', 'control characters'],
    ['a source with a C1 control', { ...jsonPlan, source: 'exit\u0085monitor' }, 'source', 'control characters'],
  ])('refuses %s, naming the field', (_name, input, field, rule) => {
    const error = refusal(input);
    expect(error).toBeInstanceOf(PlanError);
    expect(error.field).toBe(field);
    expect(error.message.startsWith(`plan: ${field} `)).toBe(true);
    expect(error.message).toContain(rule);
  });

  const PADDED = 'must not begin or end with white space';
  // Each value as an upstream producer might pad it: the stream's strings are taken as given, and JSON alike.
  it.each<[string, string, unknown]>([
    ['qty', 'a leading space', ' 1'],
    ['qty', 'a trailing newline', '0.01\n'],
    ['qty', 'a leading tab', '\t1'],
    ['qty', 'a trailing no-break space (U+00A0)', '1\u00a0'],
    ['qty', 'a leading no-break space (U+00A0)', '\u00a00.5'],
    ['qty', 'a byte-order mark (U+FEFF)', '\ufeff1'],
    ['qty', 'an ideographic space (U+3000)', '1\u3000'],
    ['qty', 'a carriage return', '1\r'],
    ['symbol', 'a trailing space', 'BTCUSDT '],
    ['side', 'a leading space', ' SELL'],
    ['action', 'a trailing newline', 'EXECUTE\n'],
    ['reduce_only', 'a trailing space', 'true '],
    ['created_at', 'a leading space (ms)', ' 1700000000123'],
    ['created_at', 'a trailing newline (ISO-8601)', '2023-11-14T22:13:20.123Z\n'],
    ['plan_id', 'a trailing space', '0123456789abcdef '],
    ['source', 'a leading space', ' exit-monitor'],
    ['source', 'a trailing no-break space', 'exit-monitor\u00a0'],
    ['source', 'only spaces', '   '],
  ])('refuses %s with %s, naming the field', (field, _case, value) => {
    // What the message shows: the value as JSON, with a space that is not U+0020 escaped so that it is seen.
    const shown = JSON.stringify(value)
      .replace(/\u00a0/g, '\\u00a0')
      .replace(/\ufeff/g, '\\ufeff')
      .replace(/\u3000/g, '\\u3000');
    const error = refusal({ ...jsonPlan, [field]: value });
    expect(error.field).toBe(field);
    expect(error.message).toBe(`plan: ${field} ${PADDED} (spaces, tabs, newlines, no-break spaces) (got ${shown})`);
  });

  it.each<[string, Record<string, unknown>, string]>([
    ['one unknown field', { ...streamPlan, trace: 'abc' }, 'trace'],
    ['two, named in order', { ...streamPlan, foo: '1', bar: '2' }, 'bar, foo'],
    ['a JSON plan with one', { ...jsonPlan, nonce: 'x' }, 'nonce'],
    ['a name with a space, quoted', { ...streamPlan, 'q ty': '1' }, '"q ty"'],
    ['an upper-case twin of a known field', { ...streamPlan, QTY: '2' }, 'QTY'],
  ])('refuses %s: plan: unknown field(s) …', (_case, input, named) => {
    const error = refusal(input);
    expect(error).toBeInstanceOf(UnknownFieldsError);
    expect(error.field).toBe('plan');
    expect(error.message).toBe(
      `plan: unknown field(s) ${named} (a plan has only plan_id, action, symbol, side, qty, reduce_only, source, ` +
        'reason, created_at)',
    );
  });

  it.each<[string, string, string]>([
    ['a no-break space', '1\u00a0', '"1\\u00a0"'],
    ['a zero-width space', '1\u200b0', '"1\\u200b0"'],
    ['a right-to-left override', '\u202e1', '"\\u202e1"'],
    ['an ordinary space', '1 0', '"1 0"'],
    ['a tag character beyond U+FFFF', '1\u{e0001}', '"1\\udb40\\udc01"'],
  ])('shows %s in a quoted value, escaped', (_case, qty, shown) => {
    expect(refusal({ ...jsonPlan, qty }).message).toMatch(` (got ${shown})`);
  });

  it('names at most ten unknown fields and counts the rest', () => {
    const extra = Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`f${String(i).padStart(2, '0')}`, 'x']));
    const error = refusal({ ...streamPlan, ...extra });
    expect(error.message).toMatch(/^plan: unknown field\(s\) f00, f01, .*, f09 and 2 more \(a plan has only /);
  });

  it('refuses unknown fields before anything else, even when the rest is valid or not', () => {
    expect(refusal({ ...streamPlan, qty: '-1', extra: 'x' })).toBeInstanceOf(UnknownFieldsError);
  });

  it('quotes a 1 MB value cut to 512 bytes, with its full length and sha256', () => {
    const huge = 'x'.repeat(1024 * 1024);
    const quoted = JSON.stringify(huge);
    const error = refusal({ ...streamPlan, qty: huge });
    const sha = createHash('sha256').update(quoted).digest('hex');
    expect(error.message).toBe(
      `plan: qty must be a decimal number (got ${quoted.slice(0, 512)} …[cut: ${quoted.length} bytes, sha256 ${sha}])`,
    );
    expect(Buffer.byteLength(error.message)).toBeLessThan(1024);
  });

  it('cuts a 1 MB unknown field name to a bounded length', () => {
    const name = 'n'.repeat(1024 * 1024);
    const error = refusal({ ...streamPlan, [name]: '1' });
    expect(error.message).toMatch(/^plan: unknown field\(s\) "n+ …\[cut: 1048578 bytes, sha256 [0-9a-f]{64}\]/);
    expect(Buffer.byteLength(error.message)).toBeLessThan(512);
  });

  it("says 'is required' for a missing source", () => {
    expect(refusal(without(jsonPlan, 'source')).message).toBe('plan: source is required');
  });

  it.each<[string, unknown]>([
    ['null', null],
    ['an array', [jsonPlan]],
    ['a string', JSON.stringify(jsonPlan)],
  ])('refuses %s as not a JSON object', (_name, input) => {
    const error = refusal(input);
    expect(error.field).toBe('plan');
    expect(error.message).toBe('plan: plan must be a JSON object');
  });
});

describe('plan id derivation', () => {
  const fields = {
    source: 'exit-monitor',
    qty: '0.062',
    side: 'SELL',
    symbol: 'BTCUSDT',
    action: 'EXECUTE',
    created_at: 1_700_000_000_123,
    reduce_only: true,
  };
  // Written out by hand: keys sorted, no white space.
  const canonical =
    '{"action":"EXECUTE","created_at":1700000000123,"qty":"0.062","reduce_only":true,' +
    '"side":"SELL","source":"exit-monitor","symbol":"BTCUSDT"}';

  it('is the first 16 hex of the SHA-256 of the canonical JSON of the other fields', () => {
    const expected = sha256Prefix(canonical);
    expect(expected).toMatch(/^[0-9a-f]{16}$/);
    expect(canonicalJson(fields)).toBe(canonical);
    expect(derivePlanId(fields)).toBe(expected);
    expect(derivePlanId({ ...fields, plan_id: 'ffffffffffffffff' })).toBe(expected);
    expect(parsePlan(fields, now).plan_id).toBe(expected);
  });

  it('does not depend on key order', () => {
    const reversed = Object.fromEntries(Object.entries(fields).reverse());
    expect(Object.keys(reversed)).not.toEqual(Object.keys(fields));
    expect(parsePlan(reversed, now).plan_id).toBe(parsePlan(fields, now).plan_id);
  });

  it('gives the same plan sent twice the same id, and a plan with another created_at a new one', () => {
    const first = parsePlan({ ...fields }, now).plan_id;
    expect(parsePlan({ ...fields }, () => NOW + 5_000).plan_id).toBe(first);
    expect(parsePlan({ ...fields, created_at: 1_700_000_000_124 }, now).plan_id).not.toBe(first);
  });

  it('hashes the plan table fields only: nothing sent beside a plan changes its id', () => {
    expect(derivePlanId({ ...fields, trace: 'abc', run: '1' })).toBe(sha256Prefix(canonical));
  });

  it('hashes the fields as received, so a number and a string qty are different plans', () => {
    expect(derivePlanId({ ...fields, qty: 0.062 })).toBe(
      sha256Prefix(canonical.replace('"qty":"0.062"', '"qty":0.062')),
    );
    expect(derivePlanId({ ...fields, qty: 0.062 })).not.toBe(derivePlanId(fields));
  });
});

describe('canonicalJson', () => {
  it.each<[string, unknown, string]>([
    ['sorts keys', { b: 1, a: 2 }, '{"a":2,"b":1}'],
    [
      'sorts keys at every depth and keeps array order',
      { z: { y: 1, x: [3, { d: 1, c: 2 }] }, a: null },
      '{"a":null,"z":{"x":[3,{"c":2,"d":1}],"y":1}}',
    ],
    ['drops undefined members', { b: undefined, a: 'x' }, '{"a":"x"}'],
    ['escapes strings as JSON does', { q: 'say "hi"\n' }, '{"q":"say \\"hi\\"\\n"}'],
    ['writes an empty object', {}, '{}'],
    ['writes a number', 1.5, '1.5'],
    ['writes a boolean', false, 'false'],
    ['writes null', null, 'null'],
  ])('%s', (_name, value, expected) => {
    expect(canonicalJson(value)).toBe(expected);
  });
});

describe('planSummary', () => {
  const plan: Plan = {
    plan_id: '0123456789abcdef',
    action: 'EXECUTE',
    symbol: 'BTCUSDT',
    side: 'SELL',
    qty: '0.062',
    reduce_only: true,
    source: 'exit-monitor',
    created_at: NOW,
  };

  it.each<[string, Plan, string]>([
    ['a reduce-only plan', plan, 'SELL 0.062 BTCUSDT reduce-only · plan 0123456789abcdef'],
    [
      'a plan that may open a position',
      { ...plan, side: 'BUY', qty: '1.5', symbol: 'ETHUSDT', reduce_only: false },
      'BUY 1.5 ETHUSDT · plan 0123456789abcdef',
    ],
  ])('reads %s in one line', (_name, input, expected) => {
    expect(planSummary(input)).toBe(expected);
  });
});

describe('parsePlan: symbols', () => {
  it.each(['BTCUSDT', '1000PEPEUSDT', 'ETH2USDT'])('accepts %s', (symbol) => {
    expect(parsePlan({ ...jsonPlan, symbol }, now).symbol).toBe(symbol);
  });
});

describe('admitInput: what a workflow accepts', () => {
  const plan = parsePlan({ ...jsonPlan, plan_id: '0123456789abcdef' }, now);
  const workflowId = 'plan-0123456789abcdef';

  it('admits the plan alone, in canonical form, under its own workflow id', () => {
    expect(admitInput({ plan }, workflowId)).toEqual(plan);
  });

  it.each<[string, unknown, string, string]>([
    ['old settings', { plan, settings: { mode: 'testnet' } }, 'input', '(got settings)'],
    ['any other field', { plan, approvers: ['mallory'] }, 'input', '(got approvers)'],
    ['no plan', {}, 'plan', 'is required'],
    ['a plan that is not an object', { plan: 'SELL' }, 'plan', 'must be a JSON object'],
    ['a negative qty', { plan: { ...plan, qty: '-3' } }, 'qty', 'must be > 0'],
    ['no plan_id', { plan: without(plan as unknown as Record<string, unknown>, 'plan_id') }, 'plan_id', 'required'],
    [
      'no created_at',
      { plan: without(plan as unknown as Record<string, unknown>, 'created_at') },
      'created_at',
      'required',
    ],
    ["another workflow's plan", { plan: { ...plan, plan_id: 'ffffffffffffffff' } }, 'plan_id', "workflow's own"],
    ['an array', [plan], 'input', 'must be a JSON object'],
  ])('refuses %s, naming the field', (_case, input, field, rule) => {
    let error: unknown;
    try {
      admitInput(input, workflowId);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(PlanError);
    expect((error as PlanError).field).toBe(field);
    expect((error as PlanError).message).toContain(rule);
  });
});

describe('differingFields', () => {
  const plan = parsePlan(jsonPlan, now);
  it('names the trade fields in which two plans with one id differ', () => {
    expect(differingFields(plan, plan)).toEqual([]);
    expect(differingFields(plan, { ...plan, qty: '1', side: 'BUY' })).toEqual(['side', 'qty']);
    expect(differingFields(plan, { ...plan, reduce_only: false })).toEqual(['reduce_only']);
  });

  it('does not count when or by whom the same trade was sent', () => {
    expect(differingFields(plan, { ...plan, created_at: 1, source: 'operator-cli', reason: 'again' })).toEqual([]);
  });
});
