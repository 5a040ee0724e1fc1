import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, planIdOf, sdkLogger, sdkOwnInfo } from '../../lib/log';
import { Secret } from '../../lib/config';

const PASSWORD = 'S3cret-log-pw';

/** A stream that keeps what is written, a terminal or not. */
function capture(isTTY = false) {
  const chunks: string[] = [];
  const stream = Object.assign(
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        chunks.push(chunk.toString());
        done();
      },
    }),
    { isTTY },
  );
  return { stream, text: () => chunks.join('') };
}

function jsonLines(text: string): Record<string, unknown>[] {
  return text
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

describe('the process logger', () => {
  it('writes one JSON object a line when its stream is no terminal: level, ISO time, msg, fields', () => {
    const out = capture(false);
    createLogger({ stream: out.stream, base: { component: 'worker' } }).info({ symbol: 'BTCUSDT' }, 'hello');
    const [line] = jsonLines(out.text());
    expect(line).toMatchObject({ level: 'info', msg: 'hello', symbol: 'BTCUSDT', component: 'worker' });
    expect(String(line?.time)).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });

  it('writes readable lines on a terminal', () => {
    const out = capture(true);
    createLogger({ stream: out.stream }).warn({ plan_id: '0123456789abcdef' }, 'P3.3 denied');
    const text = out.text();
    expect(text.trimStart().startsWith('{')).toBe(false);
    expect(text).toContain('P3.3 denied');
    expect(text).toContain('0123456789abcdef');
  });

  it('drops lines below its level', () => {
    const out = capture(false);
    const logger = createLogger({ stream: out.stream, level: 'warn' });
    logger.info('not shown');
    logger.warn('shown');
    expect(jsonLines(out.text()).map((line) => line.msg)).toEqual(['shown']);
  });

  it('never writes a password: not in a URL in the message, a field, an error, a nested cause, nor a secret field', () => {
    const out = capture(false);
    const logger = createLogger({ stream: out.stream });
    const url = `rediss://chain:${PASSWORD}@redis.internal:6380/0`;
    logger.info(`connecting to ${url}`);
    logger.warn({ redis_url: url, nested: { urls: [url] } }, 'fields');
    logger.error({ err: new Error(`lost ${url}`, { cause: new Error(`because ${url}`) }) }, 'an error');
    logger.info({ password: PASSWORD, api_key: PASSWORD, token: new Secret(PASSWORD) }, 'secret fields');
    const text = out.text();
    expect(text).not.toContain(PASSWORD);
    const lines = jsonLines(text);
    expect(lines[0]?.msg).toBe('connecting to rediss://***@redis.internal:6380/0');
    expect(lines[1]).toMatchObject({ redis_url: 'rediss://***@redis.internal:6380/0' });
    expect(lines[2]).toMatchObject({ err: { message: 'lost rediss://***@redis.internal:6380/0', type: 'Error' } });
    expect(lines[3]).toMatchObject({ password: '***', api_key: '***', token: '***' });
  });
});

describe("the SDK's lines", () => {
  it('carry plan_id and workflow_id for a plan, from the workflow id the SDK gives', () => {
    const out = capture(false);
    const sdk = sdkLogger(createLogger({ stream: out.stream, level: 'debug' }));
    sdk.debug('Activity completed', { workflowId: 'plan-0123456789abcdef', activityType: 'checkPosition' });
    sdk.info('Workflow started', { workflowId: 'bench-7', runId: 'r1' });
    sdk.warn('Worker state changed', { state: 'RUNNING' });
    const [plan, other, none] = jsonLines(out.text());
    expect(plan).toMatchObject({
      level: 'debug',
      msg: 'Activity completed',
      plan_id: '0123456789abcdef',
      workflow_id: 'plan-0123456789abcdef',
      activityType: 'checkPosition',
    });
    expect(plan).not.toHaveProperty('workflowId');
    expect(other).toMatchObject({ workflow_id: 'bench-7', run_id: 'r1' });
    expect(other).not.toHaveProperty('plan_id');
    expect(none).not.toHaveProperty('workflow_id');
  });

  it("leave out the SDK's own lines below WARN with sdkOwnInfo, and keep the chain's and any warning", () => {
    const out = capture(false);
    const sdk = sdkLogger(createLogger({ stream: out.stream, level: 'debug' }), sdkOwnInfo);
    sdk.info('Worker state changed', { sdkComponent: 'worker', state: 'RUNNING' });
    sdk.info('asset workflow-bundle-0123.js 1.79 MiB [emitted]', { sdkComponent: 'worker' });
    sdk.debug('core says hello', { sdkComponent: 'core' });
    sdk.info('operator: awaiting approval', { sdkComponent: 'workflow', workflowId: 'plan-0123456789abcdef' });
    sdk.info('Activity completed', { sdkComponent: 'activity' });
    sdk.warn('Worker state changed', { sdkComponent: 'worker', state: 'FAILED' });
    expect(jsonLines(out.text()).map((line) => `${String(line.level)} ${String(line.msg)}`)).toEqual([
      'info operator: awaiting approval',
      'info Activity completed',
      'warn Worker state changed',
    ]);
  });

  it('derive the plan id from plan-{plan_id} only', () => {
    expect(planIdOf('plan-0123456789abcdef')).toBe('0123456789abcdef');
    expect(planIdOf('plan-0123456789ABCDEF')).toBeUndefined();
    expect(planIdOf('plan-0123')).toBeUndefined();
    expect(planIdOf('xplan-0123456789abcdef')).toBeUndefined();
  });
});
