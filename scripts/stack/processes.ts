/**
 * Separate processes for the tests that run the chain as it is deployed: start one with its environment, wait for
 * it to say it is ready, keep its output in a log file, hurt it (SIGKILL, SIGSTOP/SIGCONT), start it again, and stop
 * everything at the end, whatever happened.
 *
 * ```ts
 * const group = new ProcessGroup('test-results/cluster');
 * try {
 *   const worker = await group.start({ name: 'worker-a', command: process.execPath, args: [CLI, 'worker'],
 *                                      env, ready: /^worker: / });
 *   await worker.kill();          // SIGKILL, resolves once it has exited
 *   await worker.start();         // the same spec again; the log file goes on, with a header per start
 *   worker.pause(); worker.resume();
 * } finally {
 *   await group.stopAll();        // SIGTERM (SIGCONT first), SIGKILL after the grace; never throws
 * }
 * ```
 *
 * Each process's stdout and stderr go, line by line, to `<logDir>/<name>.log` and to a bounded buffer kept in
 * memory (`output()`, `waitForLine`). The group keeps a timeline of starts, signals and exits (`events`) for a
 * test's summary. If the test process itself dies, the group SIGKILLs whatever it started (an `exit` hook).
 * Nothing here knows about the chain: a worker, an intake, a redis-server or a Temporal server are all a command,
 * an environment and a way to tell that it is ready.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

/** How to start one process, and how to tell that it is ready. */
export interface ProcessSpec {
  /** Unique within its group; names the log file. */
  name: string;
  command: string;
  args?: readonly string[];
  /** Added to the test process's environment. */
  env?: Readonly<Record<string, string>>;
  cwd?: string;
  /**
   * Ready when a line of its output (stdout or stderr) matches, or when the probe answers true (polled every
   * 100 ms: a port that answers, a health command). Absent: ready once spawned.
   */
  ready?: RegExp | (() => Promise<boolean>);
  /** Default 60 s. A process that exits first, or is not ready in time, fails `start` with its last lines. */
  readyTimeoutMs?: number;
  /** The polite stop; default SIGTERM. */
  stopSignal?: NodeJS.Signals;
  /** How long `stop` waits after the polite signal before SIGKILL; default 10 s. */
  stopTimeoutMs?: number;
}

/** How a run of a process ended. */
export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export type ProcessEventKind = 'start' | 'ready' | 'signal' | 'exit';

/** One line of a group's timeline. `at` is ms since the epoch. */
export interface ProcessEvent {
  at: number;
  name: string;
  kind: ProcessEventKind;
  detail: string;
}

/** Lines kept in memory per process (the log file keeps everything). */
const KEPT_LINES = 5_000;

const living = new Set<ChildProcess>();
let exitHookInstalled = false;
/** A test process that dies (an uncaught error, vitest giving up) takes what it started with it. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of living) child.kill('SIGKILL');
  });
}

/** One process, started and restarted from its spec. See the module's comment. */
export class ManagedProcess {
  readonly logFile: string;
  private child: ChildProcess | undefined;
  private exit: Promise<ProcessExit> | undefined;
  private log: WriteStream | undefined;
  private lines: string[] = [];
  /** Total lines seen in this run, so that `waitForLine` can look only at lines after a point. */
  private lineCount = 0;
  private lineWaiters = new Set<() => void>();
  private runs = 0;
  private paused = false;

  constructor(
    readonly spec: ProcessSpec,
    logDir: string,
    private readonly record: (kind: ProcessEventKind, detail: string) => void,
  ) {
    this.logFile = join(logDir, `${spec.name}.log`);
  }

  get name(): string {
    return this.spec.name;
  }

  /** The current run's pid, while it has not exited. */
  get pid(): number | undefined {
    return this.running ? this.child?.pid : undefined;
  }

  /** True from spawn until exit; a paused (SIGSTOP) process is still running. */
  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** How many times it has been started. */
  get starts(): number {
    return this.runs;
  }

  /** Spawns it and waits until it is ready. Fails if it is already running, exits first, or is late. */
  async start(): Promise<this> {
    if (this.running) throw new Error(`${this.name}: already running (pid ${this.child?.pid})`);
    const { spec } = this;
    this.runs += 1;
    this.lines = [];
    this.lineCount = 0;
    this.paused = false;
    this.log = createWriteStream(this.logFile, { flags: 'a' });
    this.log.write(
      `--- ${new Date().toISOString()} start #${this.runs}: ${spec.command} ${(spec.args ?? []).join(' ')}\n`,
    );
    const child = spawn(spec.command, [...(spec.args ?? [])], {
      cwd: spec.cwd,
      env: { ...process.env, ...spec.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    living.add(child);
    installExitHook();
    const log = this.log;
    this.exit = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        living.delete(child);
        this.record('exit', signal ? `signal ${signal}` : `code ${code}`);
        this.wakeLineWaiters();
        // The pipes normally close at once; a grandchild that inherited them must not hold the exit up.
        setTimeout(() => [child.stdout, child.stderr].forEach((stream) => stream?.destroy()), 1_000).unref();
      });
      // Resolved once the pipes are drained and the log is on disk: whoever awaits the exit may read the log.
      child.once('close', (code, signal) => {
        const how = signal ? `signal ${signal}` : `code ${code}`;
        log.end(`--- ${new Date().toISOString()} exit: ${how}\n`, () => {
          this.wakeLineWaiters();
          resolve({ code, signal });
        });
      });
    });
    child.once('error', (err) => this.onLine(`[spawn error] ${err.message}`, log));
    for (const stream of [child.stdout, child.stderr]) {
      if (stream) createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => this.onLine(line, log));
    }
    this.record('start', `pid ${child.pid ?? '?'}, run #${this.runs}`);
    try {
      await this.untilReady();
    } catch (err) {
      // Not ready is not left behind half-alive.
      await this.kill();
      throw err;
    }
    this.record('ready', `pid ${child.pid ?? '?'}`);
    return this;
  }

  private onLine(line: string, log: WriteStream): void {
    if (!log.writableEnded) log.write(`${line}\n`);
    this.lines.push(line);
    this.lineCount += 1;
    if (this.lines.length > KEPT_LINES) this.lines.splice(0, this.lines.length - KEPT_LINES);
    this.wakeLineWaiters();
  }

  private wakeLineWaiters(): void {
    for (const wake of [...this.lineWaiters]) wake();
  }

  private async untilReady(): Promise<void> {
    const { ready, readyTimeoutMs = 60_000 } = this.spec;
    if (ready === undefined) return;
    if (ready instanceof RegExp) {
      await this.waitForLine(ready, readyTimeoutMs, 0);
      return;
    }
    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      if (!this.running) throw this.failure('exited before it was ready');
      if (await ready().catch(() => false)) return;
      if (Date.now() > deadline) throw this.failure(`not ready within ${readyTimeoutMs} ms`);
      await sleep(100);
    }
  }

  /**
   * Waits for a line of this run's output that matches, and returns it. `fromLine` (default: the lines already
   * seen) is where to start looking: 0 looks at every line of the run.
   */
  async waitForLine(pattern: RegExp, timeoutMs = 30_000, fromLine = this.lineCount): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let checked = fromLine;
    for (;;) {
      const firstKept = this.lineCount - this.lines.length;
      for (let i = Math.max(checked, firstKept); i < this.lineCount; i++) {
        const line = this.lines[i - firstKept] ?? '';
        if (pattern.test(line) || pattern.test(messageOf(line))) return line;
      }
      checked = this.lineCount;
      if (!this.running) throw this.failure(`exited before printing ${pattern}`);
      const left = deadline - Date.now();
      if (left <= 0) throw this.failure(`no line matching ${pattern} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.lineWaiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, left);
        this.lineWaiters.add(wake);
      });
    }
  }

  /** This run's output so far (the last lines, at most 5,000), one string. */
  output(): string {
    return this.lines.join('\n');
  }

  /** The last `n` lines of this run's output. */
  tail(n = 20): string {
    return this.lines.slice(-n).join('\n');
  }

  private failure(what: string): Error {
    return new Error(`${this.name}: ${what}; last lines (log ${this.logFile}):\n${this.tail(30)}`);
  }

  /** Sends a signal as it is, and records it. False when the process is not running. */
  signal(signal: NodeJS.Signals): boolean {
    if (!this.running || !this.child) return false;
    this.record('signal', signal);
    if (this.log && !this.log.writableEnded) this.log.write(`--- ${new Date().toISOString()} test sends ${signal}\n`);
    return this.child.kill(signal);
  }

  /** Resolves when the current run exits (at once if it has). */
  async exited(): Promise<ProcessExit> {
    if (!this.exit) throw new Error(`${this.name}: never started`);
    return this.exit;
  }

  /** SIGKILL: no handler runs, nothing is flushed, as in a crash. Resolves once it has exited. */
  async kill(): Promise<ProcessExit> {
    this.signal('SIGKILL');
    return this.exited();
  }

  /** SIGSTOP: frozen in place, connections open, as a process that hangs. */
  pause(): void {
    if (this.signal('SIGSTOP')) this.paused = true;
  }

  /** SIGCONT after `pause`. */
  resume(): void {
    if (this.signal('SIGCONT')) this.paused = false;
  }

  /** The polite stop signal, then SIGKILL after `stopTimeoutMs`. A paused process is resumed first. */
  async stop(): Promise<ProcessExit | undefined> {
    if (!this.running) return this.exit ? this.exited() : undefined;
    if (this.paused) this.resume();
    this.signal(this.spec.stopSignal ?? 'SIGTERM');
    const grace = this.spec.stopTimeoutMs ?? 10_000;
    const timedOut = Symbol('timed out');
    let timer: NodeJS.Timeout | undefined;
    const ended = await Promise.race([
      this.exited(),
      new Promise<typeof timedOut>((resolve) => (timer = setTimeout(() => resolve(timedOut), grace))),
    ]);
    clearTimeout(timer);
    return ended === timedOut ? this.kill() : ended;
  }

  /** Stops it if running, then starts it again from its spec. */
  async restart(): Promise<this> {
    await this.stop();
    return this.start();
  }
}

/** Processes started together and stopped together, with one timeline. */
export class ProcessGroup {
  readonly events: ProcessEvent[] = [];
  private readonly processes = new Map<string, ManagedProcess>();

  /** `logDir` is created if missing; each process logs to `<logDir>/<name>.log`. */
  constructor(readonly logDir: string) {
    mkdirSync(logDir, { recursive: true });
  }

  /** Registers a process without starting it. */
  add(spec: ProcessSpec): ManagedProcess {
    if (this.processes.has(spec.name)) throw new Error(`a process named ${spec.name} is already in the group`);
    const managed = new ManagedProcess(spec, this.logDir, (kind, detail) =>
      this.events.push({ at: Date.now(), name: spec.name, kind, detail }),
    );
    this.processes.set(spec.name, managed);
    return managed;
  }

  /** Registers and starts a process; resolves once it is ready. */
  async start(spec: ProcessSpec): Promise<ManagedProcess> {
    return this.add(spec).start();
  }

  get(name: string): ManagedProcess {
    const found = this.processes.get(name);
    if (!found) throw new Error(`no process named ${name} in the group`);
    return found;
  }

  all(): ManagedProcess[] {
    return [...this.processes.values()];
  }

  /** Stops every running process at once (polite, then SIGKILL). Never throws: it runs in `finally` blocks. */
  async stopAll(): Promise<void> {
    await Promise.all(this.all().map((p) => p.stop().catch(() => p.kill().catch(() => undefined))));
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A JSON log line's message (the processes log JSON lines off a terminal: lib/log.ts), or '' for any other line. */
function messageOf(line: string): string {
  if (!line.startsWith('{')) return '';
  try {
    const parsed = JSON.parse(line) as { msg?: unknown };
    return typeof parsed.msg === 'string' ? parsed.msg : '';
  } catch {
    return '';
  }
}
