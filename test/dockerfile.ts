import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join, posix, relative } from 'node:path';

/** One instruction of a Dockerfile: its keyword, its flags (`--from=build`) and the rest of the line. */
export interface Instruction {
  keyword: string;
  flags: Record<string, string>;
  args: string;
}

export interface Stage {
  name: string;
  image: string;
  instructions: Instruction[];
}

/** The stages of a Dockerfile, with the global ARGs' defaults put into FROM. Comments and continuations handled. */
export function parseDockerfile(text: string): { args: Record<string, string>; stages: Stage[] } {
  const lines = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  const args: Record<string, string> = {};
  const stages: Stage[] = [];
  for (const line of lines) {
    const [, keyword = '', rest = ''] = /^(\S+)\s*(.*)$/.exec(line) ?? [];
    const flags: Record<string, string> = {};
    let body = rest;
    for (let flag = /^--([\w-]+)=(\S+)\s+/.exec(body); flag; flag = /^--([\w-]+)=(\S+)\s+/.exec(body)) {
      flags[flag[1] ?? ''] = flag[2] ?? '';
      body = body.slice(flag[0].length);
    }
    const upper = keyword.toUpperCase();
    if (upper === 'FROM') {
      const [, image = '', name = ''] = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(body) ?? [];
      stages.push({ name, image: image.replace(/\$\{(\w+)\}/g, (_, n: string) => args[n] ?? ''), instructions: [] });
    } else if (upper === 'ARG' && stages.length === 0) {
      const [name = '', value = ''] = body.split('=');
      args[name] = value;
    } else {
      const stage = stages.at(-1);
      if (!stage) throw new Error(`Dockerfile: ${keyword} before the first FROM`);
      stage.instructions.push({ keyword: upper, flags, args: body });
    }
  }
  return { args, stages };
}

export interface LocalStage {
  /** The stage's filesystem root on this machine: the image's `/app` is `root/app`. */
  root: string;
  workdir: string;
  env: Record<string, string>;
  user: string | undefined;
  command: string[];
}

/**
 * Runs a stage's steps on this machine, without Docker: COPY from the build context or an earlier stage, RUN with
 * `sh -c` in the WORKDIR, ENV, USER, ENTRYPOINT and CMD recorded. The base image is this machine (its Node is
 * the pinned one, as the image's is). Any other instruction is refused, so that this stays true to the Dockerfile.
 */
export function runStageLocally(
  stage: Stage,
  options: { root: string; context: string; stages: Record<string, LocalStage> },
): LocalStage {
  const ignored = dockerignore(options.context);
  const local: LocalStage = { root: options.root, workdir: '/', env: {}, user: undefined, command: [] };
  const onDisk = (path: string, from: LocalStage = local) => join(from.root, posix.resolve(local.workdir, path));
  let entrypoint: string[] = [];
  let cmd: string[] = [];
  for (const { keyword, flags, args } of stage.instructions) {
    switch (keyword) {
      case 'WORKDIR':
        local.workdir = posix.resolve(local.workdir, args);
        mkdirSync(onDisk('.'), { recursive: true });
        break;
      case 'ENV': {
        const [name = '', value = ''] = args.split('=');
        local.env[name] = value;
        break;
      }
      case 'COPY': {
        const parts = args.split(/\s+/);
        const dest = parts.pop() ?? '.';
        const from = flags.from ? options.stages[flags.from] : undefined;
        if (flags.from && !from) throw new Error(`COPY --from=${flags.from}: no such stage run`);
        for (const source of parts) {
          const path = from ? join(from.root, source) : join(options.context, source);
          const target = onDisk(dest);
          // As Docker does: a folder's contents into dest; a file into dest/ (or to dest itself).
          const filter = from ? undefined : (copied: string) => !ignored(relative(options.context, copied));
          if (statSync(path).isDirectory()) cpSync(path, target, { recursive: true, ...(filter ? { filter } : {}) });
          else cpSync(path, dest.endsWith('/') ? join(target, basename(source)) : target);
        }
        break;
      }
      case 'RUN': {
        // Niced: the image's build is background work beside the other test files, whose timing is not its to spend.
        const run = spawnSync('nice', ['-n', '10', 'sh', '-c', args], {
          cwd: onDisk('.'),
          env: { ...withoutNpmVariables(process.env), ...local.env },
          encoding: 'utf8',
        });
        if (run.status !== 0)
          throw new Error(`RUN ${args}: exit ${run.status ?? run.signal}\n${run.stdout}${run.stderr}`);
        break;
      }
      case 'USER':
        local.user = args;
        break;
      case 'ENTRYPOINT':
        entrypoint = JSON.parse(args) as string[];
        break;
      case 'CMD':
        cmd = JSON.parse(args) as string[];
        break;
      default:
        throw new Error(`Dockerfile: ${keyword} is not run locally; teach test/dockerfile.ts what it does`);
    }
  }
  local.command = [...entrypoint, ...cmd];
  return local;
}

/**
 * The context's `.dockerignore` as a test of a path relative to the context: its lines name files or folders from
 * the context's root. Patterns (`*`, `?`, `!`) are refused rather than half understood.
 */
function dockerignore(context: string): (path: string) => boolean {
  const file = join(context, '.dockerignore');
  const names = existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .map((line) => line.trim().replace(/^\/+|\/+$/g, ''))
        .filter((line) => line !== '' && !line.startsWith('#'))
    : [];
  const pattern = names.find((name) => /[*?![\]]/.test(name));
  if (pattern) throw new Error(`.dockerignore: ${pattern}: patterns are not run locally; teach test/dockerfile.ts`);
  return (path) => names.some((name) => path === name || path.startsWith(`${name}/`));
}

/** A nested npm must not take the outer `npm test`'s settings (npm_config_*, npm_lifecycle_*). */
function withoutNpmVariables(env: NodeJS.ProcessEnv): Record<string, string> {
  return Object.fromEntries(
    Object.entries(env).filter(
      (entry): entry is [string, string] => !/^npm_/i.test(entry[0]) && entry[1] !== undefined,
    ),
  );
}
