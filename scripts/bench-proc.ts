import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';

/** CPU time and resident memory of a process at one moment. */
export interface ProcessSample {
  at: number;
  cpuMs: number;
  rssBytes: number;
}

/** Clock ticks per second of /proc/PID/stat's times (100 on every Linux we know of; asked once). */
const CLOCK_TICKS = (() => {
  const asked = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const ticks = Number(asked.stdout?.trim());
  return asked.status === 0 && ticks > 0 ? ticks : 100;
})();

/** This process (the bench's client and its worker, every thread): Node's own counters. */
export function sampleSelf(): ProcessSample {
  const { user, system } = process.cpuUsage();
  return { at: performance.now(), cpuMs: (user + system) / 1000, rssBytes: process.memoryUsage().rss };
}

/** Another process on this machine, from /proc/PID/stat (utime + stime) and /proc/PID/status (VmRSS). */
export function sampleProcess(pid: number): ProcessSample | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may hold spaces and parentheses: the fields proper start after its last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 of what follows the name.
    const ticks = Number(fields[11]) + Number(fields[12]);
    const rssKb = Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
    return { at: performance.now(), cpuMs: (ticks / CLOCK_TICKS) * 1000, rssBytes: rssKb * 1024 };
  } catch {
    return undefined;
  }
}

/** A process's command name (/proc/PID/comm), to show whose CPU is measured. */
export function processName(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '?';
  }
}

/** The inodes of the sockets listening on a local TCP port (/proc/net/tcp and tcp6; state 0A is LISTEN). */
function listeningInodes(port: number): Set<string> {
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      const local = cols[1]?.split(':')[1];
      if (local && parseInt(local, 16) === port && cols[3] === '0A' && cols[9]) inodes.add(cols[9]);
    }
  }
  return inodes;
}

/**
 * The pid of the process listening on a local TCP port: the socket's inode in /proc/net/tcp(6), then the process
 * holding it among /proc/PID/fd. Undefined when nobody listens or the process is not ours to look into.
 */
export function listeningPid(port: number): number | undefined {
  const inodes = listeningInodes(port);
  if (inodes.size === 0) return undefined;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${entry}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = readlinkSync(`/proc/${entry}/fd/${fd}`);
      } catch {
        continue;
      }
      const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
      if (inode && inodes.has(inode)) return Number(entry);
    }
  }
  return undefined;
}
