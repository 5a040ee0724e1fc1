/**
 * A process's view of one server (Redis, Temporal): one line when it loses the server, one when the server is back
 * (with how long it was away), and nothing in between, however many connections, retries and failed attempts the
 * outage causes. Shared by every connection of the process to that server: the server is lost when the first of them
 * goes down, back when the last of them is up again.
 */
export class ConnectionState {
  private readonly down = new Map<string, string>();
  private lostAt: number | undefined;
  /** The rechecks of the connections down that have one, by connection. */
  private readonly probes = new Map<string, NodeJS.Timeout>();
  private closed = false;
  /** When the server last answered this process (ms since the epoch), as far as a check has seen; for `/metrics`. */
  lastAnswerAt: number | undefined;
  private backAt: number | undefined;

  constructor(
    /** As the lines name it: `Redis at redis://127.0.0.1:6379/0`, `Temporal at 127.0.0.1:7233`. */
    readonly server: string,
    private readonly log: (line: string, level: 'warn' | 'info') => void,
    private readonly clock: () => number = Date.now,
  ) {}

  /** True while the server is away. */
  get lost(): boolean {
    return this.lostAt !== undefined;
  }

  /**
   * A connection (`who`, any name distinct within the process) cannot reach the server: the first one down says so,
   * once. `recheck`, when given, is tried every second while the server is away, and brings it back when it
   * succeeds: for connections that say nothing when they recover (the Temporal SDK's).
   */
  connectionDown(who: string, reason: string, recheck?: () => Promise<unknown>): void {
    if (this.closed) return;
    if (!this.down.has(who)) this.down.set(who, reason);
    if (this.lostAt === undefined) {
      this.lostAt = this.clock();
      this.log(`${this.server}: lost (${reason}); retrying quietly until it is back`, 'warn');
    }
    if (recheck && !this.probes.has(who)) {
      const probe = setInterval(() => {
        recheck().then(
          () => this.connectionUp(who),
          () => undefined,
        );
      }, 1_000);
      probe.unref();
      this.probes.set(who, probe);
    }
  }

  /** A connection reaches the server again; once none is down, the server is back, said once with the outage's length. */
  connectionUp(who: string): void {
    if (this.closed) return;
    this.down.delete(who);
    // Only this connection's recheck: another's goes on until that one is up too.
    clearInterval(this.probes.get(who));
    this.probes.delete(who);
    if (this.lostAt === undefined || this.down.size > 0) return;
    const awayS = (this.clock() - this.lostAt) / 1000;
    this.lostAt = undefined;
    this.backAt = this.clock();
    this.log(`${this.server}: back after ${awayS.toFixed(1)} s`, 'info');
  }

  /**
   * Whether the server came back within the last `ms`: a failed step reported then is a retry loop of the outage that
   * just ended (the SDK logs a poll that failed before the server was back after it is), not a new outage.
   */
  backWithin(ms: number): boolean {
    return this.lostAt === undefined && this.backAt !== undefined && this.clock() - this.backAt < ms;
  }

  /** The server answered a check just now (a PING, a call): kept for the last-answer gauge. */
  answered(): void {
    this.lastAnswerAt = this.clock();
  }

  /**
   * Stops the recheck, if one runs, and says nothing more: a process that stops closes its connections on purpose,
   * and servers stopped after it are no outage of its.
   */
  close(): void {
    this.closed = true;
    for (const probe of this.probes.values()) clearInterval(probe);
    this.probes.clear();
  }
}

/** Errors that say a server is away (not a refusal or a bug): the outage's symptoms, which the state line covers. */
const REDIS_AWAY = /Redis unavailable|Connection is closed|max retries per request|Stream isn't writeable/i;
const TEMPORAL_AWAY =
  /UNAVAILABLE|transport error|tcp connect error|Connection refused|failed to connect|DEADLINE_EXCEEDED|Deadline exceeded|error trying to connect|broken pipe|connection reset|h2 protocol error/i;

/** The messages of an error and its causes, one string, for matching. */
export function errorText(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err; e !== undefined && e !== null && parts.length < 5; e = (e as { cause?: unknown }).cause) {
    if (e instanceof Error) parts.push(`${e.name}: ${e.message}`);
    else if (typeof e === 'string') parts.push(e);
    else parts.push(JSON.stringify(e) ?? '');
    if (!(e instanceof Error)) break;
  }
  return parts.join(' | ');
}

/**
 * Which server an error says is away, if it says so. `redisAddress` (host:port): a refused connection there is
 * Redis's; a refused connection elsewhere (an exchange) is not a server of the process's.
 */
export function serverAway(text: string, redisAddress?: string): 'redis' | 'temporal' | undefined {
  if (REDIS_AWAY.test(text)) return 'redis';
  if (redisAddress !== undefined && text.includes(`ECONNREFUSED ${redisAddress}`)) return 'redis';
  if (TEMPORAL_AWAY.test(text)) return 'temporal';
  return undefined;
}
