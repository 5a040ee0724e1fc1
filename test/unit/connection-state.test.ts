import { describe, expect, it, vi } from 'vitest';
import { ConnectionState, serverAway } from '../../lib/connection-state';
import type { Logger } from '../../lib/log';
import { outagesOf } from '../../workers/outages';

describe('the connection state', () => {
  it('says once that the server is lost and once that it is back, however many connections and errors', () => {
    let now = 1_000;
    const lines: string[] = [];
    const state = new ConnectionState(
      'Redis at redis://127.0.0.1:6379/0',
      (line, level) => lines.push(`${level} ${line}`),
      () => now,
    );
    state.connectionDown('a', 'nothing answers (connection refused)');
    state.connectionDown('b', 'nothing answers (connection refused)');
    state.connectionDown('a', 'again');
    now += 2_500;
    state.connectionUp('a');
    expect(state.lost).toBe(true);
    state.connectionUp('b');
    state.connectionUp('b');
    expect(lines).toEqual([
      'warn Redis at redis://127.0.0.1:6379/0: lost (nothing answers (connection refused)); retrying quietly until it is back',
      'info Redis at redis://127.0.0.1:6379/0: back after 2.5 s',
    ]);
    expect(state.lost).toBe(false);
  });

  it("rechecks a step's loss until that step's check answers, whichever connection comes back first", async () => {
    const lines: string[] = [];
    const state = new ConnectionState('Redis at redis://127.0.0.1:6379/0', (line) => lines.push(line));
    let answers = false;
    state.connectionDown('redis-1', 'connection closed');
    state.connectionDown('steps', 'intake: could not read (Redis unavailable)', () =>
      answers ? Promise.resolve() : Promise.reject(new Error('no')),
    );
    // The connection is back first: the step's loss still waits for its own recheck.
    state.connectionUp('redis-1');
    expect(state.lost).toBe(true);
    answers = true;
    await vi.waitFor(() => expect(state.lost).toBe(false), { timeout: 3_000, interval: 50 });
    expect(lines.filter((line) => line.includes('back after'))).toHaveLength(1);
    state.close();
  });

  it('keeps when the server last answered, and says nothing once closed (a process stopping on purpose)', () => {
    let now = 5_000;
    const lines: string[] = [];
    const state = new ConnectionState(
      'Redis at redis://127.0.0.1:6379/0',
      (line) => lines.push(line),
      () => now,
    );
    expect(state.lastAnswerAt).toBeUndefined();
    state.answered();
    now += 1_000;
    expect(state.lastAnswerAt).toBe(5_000);
    state.close();
    state.connectionDown('a', 'connection closed');
    expect(state.lost).toBe(false);
    expect(lines).toEqual([]);
  });

  it("sorts an outage's symptoms by server, and leaves an exchange's refused connection alone", () => {
    expect(serverAway('Error: Connection is closed.')).toBe('redis');
    expect(serverAway('connect ECONNREFUSED 127.0.0.1:6379', '127.0.0.1:6379')).toBe('redis');
    expect(serverAway('connect ECONNREFUSED 127.0.0.1:18080', '127.0.0.1:6379')).toBeUndefined();
    expect(serverAway('Status { code: Unavailable, message: "tcp connect error" }')).toBe('temporal');
    expect(serverAway('qty must be > 0')).toBeUndefined();
  });

  it('takes a failed step reported just after the server is back for the outage that ended, not a new one', () => {
    vi.useFakeTimers();
    try {
      const lines: string[] = [];
      const logger = { warn: (l: string) => lines.push(`warn ${l}`), info: (l: string) => lines.push(`info ${l}`) };
      const outages = outagesOf(
        { redisUrl: 'redis://127.0.0.1:6379/0', temporalAddress: '127.0.0.1:7233' },
        logger as unknown as Logger,
      );
      const failedPoll =
        'gRPC call poll_workflow_task_queue retried 7 times Status { code: Unavailable, message: "tcp connect error" }';
      expect(outages.quietSdk('WARN', failedPoll, undefined)).toBe(true);
      vi.advanceTimersByTime(8_000);
      outages.temporal.connectionUp('steps');
      // The SDK reports a poll that failed during the outage 40 ms after it ended: quiet, and no second outage.
      vi.advanceTimersByTime(40);
      expect(outages.quietSdk('WARN', failedPoll, undefined)).toBe(true);
      expect(outages.temporal.lost).toBe(false);
      // Later, the same symptom is a new outage.
      vi.advanceTimersByTime(5_000);
      expect(outages.quietSdk('WARN', failedPoll, undefined)).toBe(true);
      expect(outages.temporal.lost).toBe(true);
      expect(lines.map((l) => l.replace(/ \(.*\); /, ' (…); '))).toEqual([
        'warn Temporal at 127.0.0.1:7233: lost (…); retrying quietly until it is back',
        'info Temporal at 127.0.0.1:7233: back after 8.0 s',
        'warn Temporal at 127.0.0.1:7233: lost (…); retrying quietly until it is back',
      ]);
      outages.close();
    } finally {
      vi.useRealTimers();
    }
  });
});
