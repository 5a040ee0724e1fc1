import { lstatSync, readlinkSync, realpathSync, statSync, type Stats } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { ConfigError } from './config';

/**
 * The approvers' public keys decide who may let an order out, so their files are trusted like private keys: a key
 * counts only when nobody but the worker's user or root could have put it there. Every folder on the real path to a
 * key (the keys folder, the folders its links lead through, and their parents) and every link and file on the way is
 * owned by the worker's user or root, and none is writable by group or others. A folder with the sticky bit (`/tmp`,
 * the root of a Kubernetes secret volume) may be writable by all: there, nobody but an entry's owner can replace it,
 * and each entry on the way is checked to be owned by the worker or root.
 */

/** Links followed before a path counts as a loop (Linux's own limit). */
const MAX_LINKS = 40;
const STICKY = 0o1000;
const GROUP_OR_OTHERS_WRITE = 0o022;

/** The user the worker runs as; root where the platform has no users. */
function workerUid(): number {
  return process.getuid?.() ?? 0;
}

function ownedByTrusted(stats: Stats): boolean {
  return stats.uid === 0 || stats.uid === workerUid();
}

function writers(mode: number): string {
  const group = (mode & 0o020) !== 0;
  const others = (mode & 0o002) !== 0;
  return group && others ? 'group and others' : group ? 'group' : 'others';
}

const octal = (mode: number) => `0${(mode & 0o7777).toString(8).padStart(3, '0')}`;

function refuse(path: string, why: string, fix: string): never {
  throw new ConfigError(`config: APPROVER_KEYS_DIR: ${path} ${why}: ${fix}`);
}

function checkOwner(path: string, stats: Stats): void {
  if (ownedByTrusted(stats)) return;
  const uid = workerUid();
  refuse(
    path,
    `is owned by uid ${stats.uid}, not by this worker's user (uid ${uid}) or root`,
    `run chown ${uid === 0 ? 'root' : uid} ${path}`,
  );
}

/** One folder on the way: owned by the worker or root, writable by nobody else unless sticky. */
function checkFolder(path: string, checked: Set<string>): void {
  if (checked.has(path)) return;
  const stats = statSync(path);
  checkOwner(path, stats);
  if ((stats.mode & GROUP_OR_OTHERS_WRITE) !== 0 && (stats.mode & STICKY) === 0) {
    refuse(
      path,
      `is writable by ${writers(stats.mode)} (mode ${octal(stats.mode)}), who could put a key there`,
      `run chmod go-w ${path}`,
    );
  }
  checked.add(path);
}

/** A real folder and each of its parents up to the root. */
function checkFolderAndParents(real: string, checked: Set<string>): void {
  for (let path = real; ; path = dirname(path)) {
    checkFolder(path, checked);
    if (dirname(path) === path) return;
  }
}

/**
 * The real path of the keys folder, checked with its parents. Throws a {@link ConfigError} naming the folder and the
 * fix when it is not a folder the worker can trust.
 */
export function trustedKeyFolder(dir: string, checked: Set<string> = new Set()): string {
  let real: string;
  try {
    real = realpathSync(dir);
  } catch (err) {
    throw new ConfigError(`config: APPROVER_KEYS_DIR: ${dir} cannot be read (${(err as NodeJS.ErrnoException).code})`);
  }
  if (!statSync(real).isDirectory()) refuse(real, 'is not a folder', "name the folder of the approvers' NAME.pub keys");
  checkFolderAndParents(real, checked);
  return real;
}

/**
 * Follows `file` link by link to the file it names, checking each link, the file and every folder on the way;
 * returns the real file. Throws a {@link ConfigError} naming the first entry that is not to be trusted and the fix.
 * A file that does not exist throws the `lstat` error (ENOENT), for the caller to say which key is missing.
 */
export function trustedKeyFile(file: string, checked: Set<string> = new Set()): string {
  let path = resolve(file);
  for (let links = 0; links <= MAX_LINKS; links++) {
    const folder = realpathSync(dirname(path));
    checkFolderAndParents(folder, checked);
    path = join(folder, basename(path));
    const stats = lstatSync(path);
    checkOwner(path, stats);
    if (stats.isSymbolicLink()) {
      path = resolve(folder, readlinkSync(path));
      continue;
    }
    if (!stats.isFile()) refuse(path, 'is not a file', 'put the PEM public key there');
    if ((stats.mode & GROUP_OR_OTHERS_WRITE) !== 0) {
      refuse(
        path,
        `is writable by ${writers(stats.mode)} (mode ${octal(stats.mode)}), who could change the key`,
        `run chmod go-w ${path}`,
      );
    }
    return path;
  }
  return refuse(resolve(file), `leads through more than ${MAX_LINKS} links`, 'point it at the key file');
}
