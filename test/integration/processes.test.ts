import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ProcessGroup, type ProcessSpec } from '../../scripts/stack/processes';

// The process module the cluster test (and the chaos run) drive workers and intakes with, on plain node scripts.

let group: ProcessGroup;
afterEach(async () => {
  await group.stopAll();
});

/** A node script: prints `ready` after a moment, then a numbered tick every 20 ms. */
function ticker(name: string, extra: Partial<ProcessSpec> = {}, script = ''): ProcessSpec {
  const code = `${script}; let n = 0; setTimeout(() => { console.log('ready as ' + process.env.WHO); setInterval(() => console.log('tick ' + n++), 20); }, 100);`;
  return { name, command: process.execPath, args: ['-e', code], env: { WHO: name }, ready: /^ready as /, ...extra };
}

/** The process's state letter in /proc (Linux): `T` while stopped by SIGSTOP. */
async function stateOf(pid: number | undefined): Promise<string> {
  await sleep(50); // a signal is delivered asynchronously
  return /\) (\S) /.exec(readFileSync(`/proc/${pid}/stat`, 'utf8'))?.[1] ?? '?';
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const ticks = (output: string) => output.split('\n').filter((line) => line.startsWith('tick ')).length;

describe('scripts/stack/processes.ts', () => {
  it('starts a process with its environment, waits for its ready line, and logs its output', async () => {
    group = new ProcessGroup(mkdtempSync(join(tmpdir(), 'permit-chain-processes-')));
    const p = await group.start(ticker('alpha'));
    expect(p.running).toBe(true);
    expect(p.output()).toBe('ready as alpha');
    await p.waitForLine(/^tick 3$/, 5_000);
    await group.stopAll();
    expect(p.running).toBe(false);
    expect(await p.exited()).toEqual({ code: null, signal: 'SIGTERM' });
    const log = readFileSync(p.logFile, 'utf8');
    expect(log).toMatch(/^--- .* start #1: /);
    expect(log).toMatch(/\nready as alpha\ntick 0\n/);
    expect(log).toMatch(/--- .* test sends SIGTERM\n[\s\S]*--- .* exit: signal SIGTERM\n$/);
    expect(group.events.map((e) => `${e.name} ${e.kind}`)).toEqual([
      'alpha start',
      'alpha ready',
      'alpha signal',
      'alpha exit',
    ]);
  });

  it('freezes a process with SIGSTOP, thaws it with SIGCONT, kills it with SIGKILL and starts it again', async () => {
    group = new ProcessGroup(mkdtempSync(join(tmpdir(), 'permit-chain-processes-')));
    const p = await group.start(ticker('beta'));
    await p.waitForLine(/^tick 2$/, 5_000);
    p.pause();
    expect(await stateOf(p.pid)).toBe('T'); // stopped, as the kernel sees it
    // Ticks already in the pipe may still arrive; then nothing more.
    let frozen = -1;
    for (let tries = 0; tries < 20 && frozen !== ticks(p.output()); tries++) {
      frozen = ticks(p.output());
      await sleep(150);
    }
    await sleep(300);
    expect(ticks(p.output())).toBe(frozen);
    p.resume();
    expect(await stateOf(p.pid)).not.toBe('T');
    await p.waitForLine(new RegExp(`^tick ${frozen + 3}$`), 5_000);

    const pid = p.pid;
    expect(await p.kill()).toEqual({ code: null, signal: 'SIGKILL' });
    expect(p.pid).toBeUndefined();
    await p.start();
    expect(p.pid).not.toBe(pid);
    expect(p.starts).toBe(2);
    expect(p.output()).toBe('ready as beta'); // this run's output only
    expect(readFileSync(p.logFile, 'utf8').match(/start #\d/g)).toEqual(['start #1', 'start #2']);
    await p.restart();
    expect(p.starts).toBe(3);
  });

  it('SIGKILLs a process that ignores the polite stop once its grace is over, and never throws', async () => {
    group = new ProcessGroup(mkdtempSync(join(tmpdir(), 'permit-chain-processes-')));
    const stubborn = await group.start(
      ticker('stubborn', { stopTimeoutMs: 300 }, `process.on('SIGTERM', () => console.log('not stopping'))`),
    );
    const paused = await group.start(ticker('paused'));
    paused.pause();
    const t0 = Date.now();
    await group.stopAll();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    expect(await stubborn.exited()).toEqual({ code: null, signal: 'SIGKILL' });
    expect(stubborn.output()).toMatch(/not stopping/);
    // A paused process is thawed first, so that it can hear the polite stop.
    expect(await paused.exited()).toEqual({ code: null, signal: 'SIGTERM' });
    await group.stopAll();
  });

  it('fails to start a process that exits before it is ready, or is late, with its last lines', async () => {
    group = new ProcessGroup(mkdtempSync(join(tmpdir(), 'permit-chain-processes-')));
    const crash = {
      name: 'crash',
      command: process.execPath,
      args: ['-e', 'console.error("no config"); process.exit(3)'],
    };
    await expect(group.start({ ...crash, ready: /^ready/ })).rejects.toThrow(/crash: exited before .*\n.*no config/);
    const late = group.add(ticker('late', { ready: /^never$/, readyTimeoutMs: 300 }));
    await expect(late.start()).rejects.toThrow(/late: no line matching \/\^never\$\/ within 300 ms/);
    expect(late.running).toBe(false); // not left half-alive
  });

  it('waits for a probe when the process says nothing', async () => {
    group = new ProcessGroup(mkdtempSync(join(tmpdir(), 'permit-chain-processes-')));
    let asked = 0;
    const quiet = await group.start({
      name: 'quiet',
      command: process.execPath,
      args: ['-e', 'setInterval(() => undefined, 1000)'],
      ready: () => Promise.resolve(++asked >= 3),
    });
    expect(asked).toBe(3);
    expect(quiet.running).toBe(true);
  });
});
