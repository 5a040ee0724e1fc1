import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../../cli/servers';

/**
 * docker-compose.yml, checked without Docker: compose-go, the Compose Specification's own loader (what `docker
 * compose config` runs), validates it against the specification's JSON schema and checks that everything it refers
 * to exists (test/compose-check, built here once per version of its sources); then the project's own rules. Nothing
 * here runs a container: whether the images start is for a machine with Docker (README, deploy/images.md).
 */

const COMPOSE_FILE = join(PROJECT_ROOT, 'docker-compose.yml');
const CHECK_DIR = join(PROJECT_ROOT, 'test', 'compose-check');
/** What the file needs from .env; the values are stand-ins, never real ones. */
const DOTENV = { POSTGRES_PASSWORD: 'stand-in', TRADING_MODE: 'testnet' };

interface Healthcheck {
  test?: string[];
  disable?: boolean;
}
interface Service {
  image?: string;
  build?: { context?: string; target?: string };
  command?: string[] | null;
  entrypoint?: string[] | null;
  environment?: Record<string, string | null>;
  healthcheck?: Healthcheck;
  depends_on?: Record<string, { condition: string }>;
  restart?: string;
  container_name?: string;
  ports?: { host_ip?: string; published?: string; target: number }[];
  volumes?: { type: string; source?: string; target: string }[];
}
interface Loaded {
  project: { services: Record<string, Service> };
  raw: { services: Record<string, { environment?: Record<string, string> | string[] }> };
}

/** The compose-check binary, built from test/compose-check into the cache when its sources change. */
function composeCheck(): string {
  const hash = createHash('sha256');
  for (const file of ['go.mod', 'go.sum', 'main.go']) hash.update(readFileSync(join(CHECK_DIR, file)));
  const cache = process.env.PERMIT_CHAIN_CACHE || join(homedir(), '.cache', 'permit-chain');
  const binary = join(cache, `compose-check-${hash.digest('hex').slice(0, 16)}`);
  if (existsSync(binary)) return binary;
  mkdirSync(cache, { recursive: true });
  const go = spawnSync('sh', ['-c', 'command -v go || ls /usr/local/go/bin/go'], { encoding: 'utf8' }).stdout.trim();
  if (!go) throw new Error('compose-check needs Go (1.24 or later) to build: none on PATH or in /usr/local/go');
  const building = `${binary}.${process.pid}`;
  execFileSync(go, ['build', '-o', building, '.'], { cwd: CHECK_DIR, stdio: ['ignore', 'ignore', 'inherit'] });
  renameSync(building, binary);
  return binary;
}

let checker: string;
beforeAll(() => {
  checker = composeCheck();
}, 300_000);

/** Loads a compose file with only `vars` in the environment (compose-check reads no .env file). */
function load(file: string, vars: Record<string, string>): { ok: true; loaded: Loaded } | { ok: false; error: string } {
  const run = spawnSync(checker, [file], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '', ...vars } });
  if (run.status === 0) return { ok: true, loaded: JSON.parse(run.stdout) as Loaded };
  return { ok: false, error: run.stderr.trim() };
}

function loadOurs(): Loaded {
  const result = load(COMPOSE_FILE, DOTENV);
  if (!result.ok) throw new Error(result.error);
  return result.loaded;
}

/** A copy of our file with one change, in a folder of its own. */
function variant(change: (text: string) => string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'compose-variant-')), 'docker-compose.yml');
  const text = readFileSync(COMPOSE_FILE, 'utf8');
  const changed = change(text);
  if (changed === text) throw new Error('the variant changed nothing');
  writeFileSync(file, changed);
  return file;
}

/** Services that others wait for to exit 0: they run once, at each `up`. */
function oneShots(services: Record<string, Service>): Set<string> {
  const names = new Set<string>();
  for (const service of Object.values(services))
    for (const [name, dependency] of Object.entries(service.depends_on ?? {}))
      if (dependency.condition === 'service_completed_successfully') names.add(name);
  return names;
}

describe('docker-compose.yml against the Compose Specification (compose-go)', () => {
  it('loads: the schema, interpolation and every reference between services and volumes check out', () => {
    const { project } = loadOurs();
    expect(Object.keys(project.services).sort()).toEqual([
      'intake',
      'postgresql',
      'redis',
      'search-attributes',
      'temporal',
      'temporal-namespace',
      'temporal-schema',
      'temporal-ui',
      'worker',
    ]);
  });

  it('is a real check: it refuses a field of the wrong type, an unknown field and a dependency on no service', () => {
    const wrongType = load(
      variant((t) => t.replace("test: ['CMD', 'redis-cli', 'ping']", 'test: 5')),
      DOTENV,
    );
    expect(wrongType).toMatchObject({ ok: false, error: expect.stringContaining('healthcheck.test') as unknown });
    const unknownField = load(
      variant((t) => t.replace('  stop_grace_period: 70s', '  stop_grace_perod: 70s')),
      DOTENV,
    );
    expect(unknownField).toMatchObject({ ok: false, error: expect.stringContaining('stop_grace_perod') as unknown });
    const noSuchService = load(
      variant((t) =>
        t.replace('      temporal-namespace:\n        condition', '      temporal-namespaces:\n        condition'),
      ),
      DOTENV,
    );
    expect(noSuchService).toMatchObject({ ok: false, error: expect.stringContaining('undefined service') as unknown });
  });

  it('will not start without the password and the trading mode from .env: no default stands in for them', () => {
    for (const missing of Object.keys(DOTENV)) {
      const vars: Record<string, string> = { ...DOTENV };
      delete vars[missing];
      const result = load(COMPOSE_FILE, vars);
      expect(result).toMatchObject({
        ok: false,
        error: expect.stringContaining(`required variable ${missing}`) as unknown,
      });
    }
  });
});

describe('docker-compose.yml: our rules', () => {
  it('every long-running service has a healthcheck; the one-shots are awaited to exit 0 and never restarted', () => {
    const { services } = loadOurs().project;
    const once = oneShots(services);
    expect([...once].sort()).toEqual(['search-attributes', 'temporal-namespace', 'temporal-schema']);
    for (const [name, service] of Object.entries(services)) {
      if (once.has(name)) {
        expect(service.restart, name).toBe('no');
        continue;
      }
      expect(service.healthcheck?.disable ?? false, name).toBe(false);
      expect(service.healthcheck?.test?.length ?? 0, `${name} has a healthcheck`).toBeGreaterThan(1);
      expect(service.restart, name).toBe('unless-stopped');
    }
  });

  it('waits on health or on a one-shot exiting 0, never on a mere start', () => {
    const { services } = loadOurs().project;
    const once = oneShots(services);
    for (const [name, service] of Object.entries(services)) {
      for (const [dependency, { condition }] of Object.entries(service.depends_on ?? {})) {
        const expected = once.has(dependency) ? 'service_completed_successfully' : 'service_healthy';
        expect(condition, `${name} -> ${dependency}`).toBe(expected);
      }
    }
    for (const chain of ['worker', 'intake'])
      expect(services[chain]?.depends_on).toEqual({
        redis: { condition: 'service_healthy', required: true },
        temporal: { condition: 'service_healthy', required: true },
        'search-attributes': { condition: 'service_completed_successfully', required: true },
      });
  });

  it('worker and intake scale: no container name, no host port, no fixed consumer, /readyz on METRICS_PORT', () => {
    const { services } = loadOurs().project;
    for (const name of ['worker', 'intake']) {
      const service = services[name];
      expect(service?.container_name, name).toBeUndefined();
      expect(service?.ports ?? [], name).toEqual([]);
      expect(service?.environment?.METRICS_PORT, name).toBe('9464');
      expect(service?.healthcheck?.test?.join(' '), name).toContain("fetch('http://127.0.0.1:9464/readyz')");
      expect(service?.build, name).toMatchObject({ target: 'runtime' });
      expect(service?.image, name).toBe('quantum-permit-chain:local');
    }
    expect(services.worker?.command).toEqual(['worker']);
    expect(services.intake?.command).toEqual(['intake']);
    for (const [name, service] of Object.entries(services)) {
      expect([...(service.command ?? []), ...(service.entrypoint ?? [])], name).not.toContain('--consumer');
      expect(service.container_name, name).toBeUndefined();
    }
  });

  it('runs the workers versioned, as builds of the deployment permit-chain that move waiting plans on to a new build, and says how to make one current', () => {
    const { services } = loadOurs().project;
    expect(services.worker?.environment).toMatchObject({
      WORKER_VERSIONING: 'true',
      WORKER_DEPLOYMENT: 'permit-chain',
      UPGRADE_ON_CONTINUE_AS_NEW: 'true',
    });
    // The worker's own environment adds to the chain's, it does not replace it.
    expect(services.worker?.environment).toMatchObject({ REDIS_URL: 'redis://redis:6379/0', METRICS_PORT: '9464' });
    const text = readFileSync(COMPOSE_FILE, 'utf8');
    expect(text).toContain('docker compose run --rm --no-deps worker deploy BUILD_ID');
  });

  it("registers the search attributes with the project's own command, before any worker or intake starts", () => {
    const { services } = loadOurs().project;
    expect(services['search-attributes']).toMatchObject({
      command: ['register-search-attributes'],
      build: { target: 'runtime' },
    });
    expect(services['search-attributes']?.depends_on).toMatchObject({
      'temporal-namespace': { condition: 'service_completed_successfully' },
    });
    expect(services.temporal?.depends_on).toMatchObject({
      'temporal-schema': { condition: 'service_completed_successfully' },
    });
  });

  it('runs Redis with an append-only file and the keyspace notifications the position watcher needs', () => {
    const command = loadOurs().project.services.redis?.command ?? [];
    const option = (name: string) => command[command.indexOf(name) + 1];
    expect(option('--appendonly')).toBe('yes');
    expect(option('--notify-keyspace-events')).toBe('Kgh');
  });

  it('keeps no secret in the file: each password comes from a required variable, and no URL carries one', () => {
    const { raw } = loadOurs();
    const secretName = /PASSWORD|PASSWD|PWD|SECRET|TOKEN|API_KEY|PRIVATE_KEY/i;
    let secrets = 0;
    for (const [name, service] of Object.entries(raw.services)) {
      const environment = Array.isArray(service.environment)
        ? Object.fromEntries(
            service.environment.map((entry): [string, string] => {
              const [key = '', ...value] = entry.split('=');
              return [key, value.join('=')];
            }),
          )
        : (service.environment ?? {});
      for (const [key, value] of Object.entries(environment)) {
        expect(String(value), `${name}.${key}`).not.toMatch(/\/\/[^/@\s]*:[^/@\s]*@/);
        if (!secretName.test(key)) continue;
        secrets++;
        expect(String(value), `${name}.${key}`).toMatch(/^\$\{[A-Z][A-Z0-9_]*:\?[^}]*\}$/);
      }
    }
    expect(secrets).toBeGreaterThanOrEqual(3);
    // And none of the stand-in for it is left anywhere but where it was asked for.
    expect(readFileSync(COMPOSE_FILE, 'utf8')).not.toContain(DOTENV.POSTGRES_PASSWORD);
    expect(readFileSync(join(PROJECT_ROOT, '.gitignore'), 'utf8').split('\n')).toContain('.env');
  });

  it('publishes ports on loopback only, and mounts only files that exist in the repository', () => {
    const { services } = loadOurs().project;
    for (const [name, service] of Object.entries(services)) {
      for (const port of service.ports ?? []) expect(port.host_ip, `${name} ${port.target}`).toBe('127.0.0.1');
      for (const volume of service.volumes ?? []) {
        if (volume.type !== 'bind') continue;
        expect(existsSync(join(PROJECT_ROOT, volume.source ?? '')), `${name}: ${volume.source}`).toBe(true);
      }
    }
  });

  it('pins every image to a version, as deploy/images.md lists them, with Temporal 1.32 and UI 2', () => {
    const { services } = loadOurs().project;
    const pulled = new Set<string>();
    for (const service of Object.values(services)) {
      if (!service.image || service.build) continue;
      expect(service.image).toMatch(/^[a-z0-9/-]+:\d+\.\d+(\.\d+)?$/);
      pulled.add(service.image);
    }
    const table = readFileSync(join(PROJECT_ROOT, 'deploy', 'images.md'), 'utf8');
    const listed = [...table.matchAll(/^\| `([^`]+)` +\| `([^`]+)` +\|/gm)].map(([, image, tag]) => `${image}:${tag}`);
    expect(new Set(listed)).toEqual(pulled);
    expect(pulled).toContain('temporalio/server:1.32.2');
    expect(pulled).toContain('temporalio/admin-tools:1.32.2');
    expect([...pulled].some((image) => /^temporalio\/ui:2\./.test(image))).toBe(true);
    expect([...pulled].some((image) => /^postgres:1[56]\./.test(image))).toBe(true);
    expect([...pulled].some((image) => /^redis:7\./.test(image))).toBe(true);
  });
});
