import { hostname } from 'node:os';
import { Client, Connection } from '@temporalio/client';
import type { Redis } from 'ioredis';
import { startPlan } from '../client/plans';
import type { ChainConfig } from '../lib/config';
import { checkTemporalHandshake, closeOnFailure, connectRedis, temporalConnectionOptions } from '../lib/connections';
import { redisKeys } from '../contract/keys';
import { boundText } from '../lib/bound';
import { lineLogger, type Logger } from '../lib/log';
import { PlanError, parsePlan } from '../lib/plan';
import { deadLetterFields, defineDeadLetterScript } from './dead-letter';
import { redisReadiness, serveTelemetry, temporalReadiness, type TelemetryServer } from './health';
import { watchIntake } from './gauges';
import { ChainMetrics } from './metrics';
import { outagesOf } from './outages';
import { tracingFor } from './tracing';

/** The consumer group every intake process reads `quantum:stream:exit.plan` with. */
export const INTAKE_GROUP = 'permit-chain';

export interface IntakeOptions {
  /** This process's consumer name; distinct per process. Restarting under the same name resumes its pending entries. */
  consumer: string;
  /** Entries read per call. */
  batchSize: number;
  /** Plans started at once within a batch. */
  concurrency: number;
  /** Entries another consumer has held this long without acknowledging are taken over (it is presumed dead). */
  claimIdleMs: number;
  /** How long one read waits for new entries; also how soon a stop request is noticed. */
  blockMs: number;
}

export const DEFAULT_INTAKE_OPTIONS: IntakeOptions = {
  consumer: `intake-${hostname()}`,
  batchSize: 100,
  concurrency: 16,
  claimIdleMs: 30_000,
  blockMs: 1_000,
};

/** How long one workflow start may take before the intake reports Temporal unavailable and tries again. */
const START_DEADLINE_MS = 5_000;
/** Backoff while Redis or Temporal is unavailable: quick at first, at most this long between tries. */
const MAX_BACKOFF_MS = 10_000;

type StreamEntry = [id: string, fields: string[] | null];

/** A stream entry id's time: when Redis appended it (`<ms>-<seq>`). */
function entryTime(id: string): number | undefined {
  const ms = Number(id.split('-')[0]);
  return Number.isSafeInteger(ms) && ms > 0 ? ms : undefined;
}

/** The intake reads at least every blockMs; a loop silent for this long (and a few reads) is stuck. */
const STALL_MS = 30_000;

/**
 * A stream entry's fields by name, as given (no prototype: a field named `__proto__` is a field like any other), or
 * a {@link PlanError} when a field is given twice: which value was meant is not for the intake to guess.
 */
function fieldsOf(list: string[]): Record<string, string> {
  const fields = Object.create(null) as Record<string, string>;
  for (let i = 0; i + 1 < list.length; i += 2) {
    const name = list[i] ?? '';
    if (Object.hasOwn(fields, name)) {
      throw new PlanError(boundText(name, 64), 'is given more than once (a stream entry holds each field once)');
    }
    fields[name] = list[i + 1] ?? '';
  }
  return fields;
}

export interface IntakeCounts {
  started: number;
  deadLettered: number;
}

/**
 * Turns EXECUTE plans on `quantum:stream:exit.plan` into workflows, exactly once: an entry is acknowledged only
 * after its plan's workflow exists (or, for a bad entry, after it is dead-lettered, in the same MULTI), and
 * starting a plan's workflow again reaches the same one. A crash between start and acknowledgement, a
 * redelivery, or the same plan sent twice therefore start nothing new.
 */
export class PlanIntake {
  private readonly keys;
  private stopping = false;
  readonly counts: IntakeCounts = { started: 0, deadLettered: 0 };
  /** When the loop last read (or found nothing to read), and what failed since, if anything: its readiness. */
  private lastReadAt = 0;
  private failure: string | undefined;

  constructor(
    private readonly deps: {
      /** For the blocking reads only: a blocked connection can serve nothing else. */
      reader: Redis;
      writer: Redis;
      client: Client;
      config: ChainConfig;
      log: (line: string, level?: 'info' | 'warn') => void;
      /** Where entries taken are counted; none: not counted. */
      metrics?: ChainMetrics;
    },
    private readonly options: IntakeOptions = DEFAULT_INTAKE_OPTIONS,
  ) {
    this.keys = redisKeys(deps.config.keyPrefix);
    defineDeadLetterScript(deps.writer);
  }

  /** Asks the loop to stop after the batch in hand: what was read is finished and acknowledged first. */
  stop(): void {
    this.stopping = true;
  }

  /** Why the intake is not reading its stream now (for `/readyz`), or undefined while it reads. */
  notReading(): string | undefined {
    if (this.stopping) return 'stopping';
    if (this.failure !== undefined) return this.failure;
    if (this.lastReadAt === 0) return 'not reading yet';
    const silent = Date.now() - this.lastReadAt;
    if (silent > Math.max(STALL_MS, 3 * this.options.blockMs)) return `no read for ${Math.round(silent / 1000)}s`;
    return undefined;
  }

  async run(): Promise<IntakeCounts> {
    const { log } = this.deps;
    log(
      `intake: ${this.deps.config.tradingMode} mode, reading ${this.keys.exitPlanStream} as ${INTAKE_GROUP}/${this.options.consumer}`,
    );
    await this.untilDone('create the consumer group', () => this.ensureGroup());
    // First what this consumer read before it stopped, then what dead consumers left, then new entries.
    let backlog = true;
    let lastClaim = 0;
    while (!this.stopping) {
      let entries: StreamEntry[] = [];
      const ok = await this.attempt('read', async () => {
        if (backlog) {
          entries = await this.read('0');
          backlog = entries.length > 0;
        } else if (this.claimCursor !== '0-0' || Date.now() - lastClaim >= this.options.claimIdleMs / 2) {
          // A scan of the pending list; while a scan is under way (a large backlog) it goes on at once.
          if (this.claimCursor === '0-0') lastClaim = Date.now();
          entries = await this.claimAbandoned();
        }
        if (!backlog && entries.length === 0) entries = await this.read('>', this.options.blockMs);
      });
      if (!ok) continue;
      await this.processAll(entries);
    }
    log(`intake: stopped (${this.counts.started} started, ${this.counts.deadLettered} dead-lettered)`);
    return this.counts;
  }

  private async ensureGroup(): Promise<void> {
    try {
      await this.deps.writer.xgroup('CREATE', this.keys.exitPlanStream, INTAKE_GROUP, '0', 'MKSTREAM');
    } catch (err) {
      if (!String(err).includes('BUSYGROUP')) throw err;
    }
  }

  private async read(from: '0' | '>', blockMs?: number): Promise<StreamEntry[]> {
    const { reader } = this.deps;
    const { consumer, batchSize } = this.options;
    const stream = this.keys.exitPlanStream;
    const reply = (
      blockMs === undefined
        ? await reader.xreadgroup('GROUP', INTAKE_GROUP, consumer, 'COUNT', batchSize, 'STREAMS', stream, from)
        : await reader.xreadgroup(
            'GROUP',
            INTAKE_GROUP,
            consumer,
            'COUNT',
            batchSize,
            'BLOCK',
            blockMs,
            'STREAMS',
            stream,
            from,
          )
    ) as [string, StreamEntry[]][] | null;
    this.lastReadAt = Date.now();
    return reply?.[0]?.[1] ?? [];
  }

  /** Where the scan of the group's pending list goes on; '0-0' when none is under way. */
  private claimCursor = '0-0';

  private async claimAbandoned(): Promise<StreamEntry[]> {
    const reply = (await this.deps.writer.xautoclaim(
      this.keys.exitPlanStream,
      INTAKE_GROUP,
      this.options.consumer,
      this.options.claimIdleMs,
      this.claimCursor,
      'COUNT',
      this.options.batchSize,
    )) as [string, StreamEntry[], string[]?];
    this.claimCursor = reply[0];
    const claimed = reply[1] ?? [];
    if (claimed.length > 0)
      this.deps.log(`intake: took over ${claimed.length} entries left pending by a stopped consumer`);
    return claimed;
  }

  private async processAll(entries: StreamEntry[]): Promise<void> {
    let next = 0;
    const lane = async () => {
      while (next < entries.length) {
        const entry = entries[next++];
        if (entry) await this.untilDone(`take entry ${entry[0]}`, () => this.process(entry));
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.options.concurrency, entries.length) }, lane));
  }

  private async process([id, list]: StreamEntry): Promise<void> {
    const { writer, client, config } = this.deps;
    const stream = this.keys.exitPlanStream;
    // An entry trimmed from the stream while pending comes back without fields: nothing to start.
    if (list === null) {
      await writer.xack(stream, INTAKE_GROUP, id);
      return;
    }
    let explicitId = false;
    try {
      const fields = fieldsOf(list);
      explicitId = fields.plan_id !== undefined;
      const plan = parsePlan(fields);
      // A bounded wait: while Temporal is away the SDK would retry for a long time, and the intake should say so.
      await client.withDeadline(Date.now() + START_DEADLINE_MS, () => startPlan(client, config, plan, { explicitId }));
    } catch (err) {
      // A bad entry, or a plan id that already names another trade: neither gets better by trying again.
      if (!(err instanceof PlanError)) throw err;
      const dead = deadLetterFields({ originalId: id, error: err.message, list, deadAt: new Date() });
      const trimmed = await writer.deadLetterEntry(
        this.keys.exitPlanDeadStream,
        stream,
        String(config.deadLetterMaxLen),
        INTAKE_GROUP,
        id,
        ...dead,
      );
      this.counts.deadLettered += 1;
      this.deps.metrics?.intakeEntries.inc({ result: 'dead_lettered' });
      if (trimmed > 0) this.deps.metrics?.deadLettersTrimmed.inc(trimmed);
      this.deps.log(`intake: ${id} dead-lettered: ${boundText(err.message, 1024)}`, 'warn');
      return;
    }
    await writer.xack(stream, INTAKE_GROUP, id);
    this.counts.started += 1;
    this.deps.metrics?.intakeEntries.inc({ result: 'started' });
    const arrived = entryTime(id);
    if (arrived !== undefined) this.deps.metrics?.intakeLag.observe(Math.max(0, Date.now() - arrived) / 1000);
  }

  private backoffMs = 0;

  /** One try; on failure it says so, waits (backoff) and reports false, so the loop comes round again. */
  private async attempt(what: string, step: () => Promise<void>): Promise<boolean> {
    try {
      await step();
      this.backoffMs = 0;
      this.failure = undefined;
      return true;
    } catch (err) {
      this.backoffMs = Math.min(MAX_BACKOFF_MS, this.backoffMs === 0 ? 250 : this.backoffMs * 2);
      this.failure = `could not ${what} (${describe(err)})`;
      this.deps.log(`intake: could not ${what} (${describe(err)}); retrying in ${this.backoffMs} ms`, 'warn');
      await new Promise((resolve) => setTimeout(resolve, this.backoffMs));
      return false;
    }
  }

  /**
   * Retries a step until it succeeds, or until asked to stop: an entry not acknowledged stays pending in the group
   * and is taken again on restart, so stopping loses nothing.
   */
  private async untilDone(what: string, step: () => Promise<void>): Promise<void> {
    while (!(await this.attempt(what, step)) && !this.stopping) {
      // attempt() has logged and waited.
    }
  }
}

function describe(err: unknown): string {
  const messages: string[] = [];
  for (let e: unknown = err; e instanceof Error && messages.length < 4; e = e.cause) messages.push(e.message);
  // An error may quote what it was given: bounded like any value from outside.
  const text = boundText(messages.join(': ') || String(err), 1024);
  if (/ECONNREFUSED|Connection is closed|max retries|Stream isn't writeable/i.test(text))
    return `Redis unavailable: ${text}`;
  if (/UNAVAILABLE|DEADLINE_EXCEEDED|Deadline exceeded|failed to connect|TransportError/i.test(text)) {
    return `Temporal unavailable: ${text}`;
  }
  return text;
}

/**
 * The intake process: runs until SIGINT or SIGTERM, then finishes the batch in hand, acknowledges it and exits.
 * Redis and Temporal may be down at start or go away: it says so and retries. With METRICS_PORT it serves
 * `/metrics`, `/healthz` and `/readyz` (ready while it reads its stream).
 */
export async function runIntake(config: ChainConfig, options: IntakeOptions, logger: Logger): Promise<IntakeCounts> {
  const { telemetry } = config;
  // Waits for neither server (the loop does, saying so), but stops at once on a refused certificate or password.
  await checkTemporalHandshake(config);
  // An outage of Redis or Temporal is two lines (lost, back after N s), not a line per failed try.
  const outages = outagesOf(config, logger);
  const redisLog = { waitForReady: false, log: lineLogger(logger, 'warn'), state: outages.redis };
  const reader = await connectRedis(config, redisLog);
  const writer = await connectRedis(config, redisLog).catch(closeOnFailure(reader));
  const tracing = tracingFor(telemetry, 'permit-chain-intake');
  const connection = Connection.lazy(temporalConnectionOptions(config));
  const client = new Client({
    connection,
    namespace: config.temporalNamespace,
    ...(tracing ? { plugins: [tracing.plugin] } : {}),
  });
  // The checks' own channel, without the SDK's retries: a check in flight when the intake stops must not retry on a
  // closed channel (the SDK's retry timer would throw), and a check is asked again anyway.
  const checks = Connection.lazy({ ...temporalConnectionOptions(config), interceptors: [] });
  outages.watch({ redis: writer, temporal: checks });
  const metrics = new ChainMetrics();
  outages.register(metrics.registry);
  const log = (line: string, level: 'info' | 'warn' = 'info') => {
    if (level === 'warn' && outages.quietLine(line)) return;
    logger[level](line);
  };
  const intake = new PlanIntake({ reader, writer, client, config, log, metrics }, options);
  const stop = () => intake.stop();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  let server: TelemetryServer | undefined;
  try {
    if (telemetry.metricsPort !== null) {
      watchIntake(metrics, writer, config, INTAKE_GROUP, logger);
      const readinessChecks = [
        redisReadiness(writer),
        temporalReadiness(() => connection.workflowService.getSystemInfo({})),
        { name: 'intake', check: () => Promise.resolve(intake.notReading()) },
      ];
      server = await serveTelemetry({
        port: telemetry.metricsPort,
        host: telemetry.metricsHost,
        metrics,
        checks: () => readinessChecks,
        logger,
      });
      logger.info(
        { metrics_url: `${server.url}/metrics` },
        `intake: metrics ${server.url}/metrics, health /healthz, /readyz`,
      );
    }
    return await intake.run();
  } finally {
    outages.close();
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    await server?.close();
    await tracing?.shutdown();
    await connection.close().catch(() => undefined);
    await checks.close().catch(() => undefined);
    reader.disconnect();
    writer.disconnect();
  }
}
