import { spawn } from 'node:child_process';
import { createPublicKey } from 'node:crypto';
import { chmodSync, chownSync, cpSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WorkflowNotFoundError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyFingerprint } from '../../lib/approval';
import { loadConfig } from '../../lib/config';
import type { ChainStatus } from '../../contract/types';
import { planWorkflowId } from '../../contract/messages';
import { CLI, runCli } from '../../scripts/stack/cli-runner';
import { PROJECT_ROOT } from '../../cli/servers';
import { packageVersion } from '../../cli/version';
import { buildIdOf } from '../../workers/build-id';
import { hashSources } from '../../workers/workflow-code';
import { COMMAND_GROUPS, errorLine } from '../../cli/cli';
import {
  chainHarness,
  eventually,
  logMessages,
  setPositions,
  testApprovers,
  testEnv,
  type ChainHarness,
} from '../helpers';

const env = testEnv();
let h: ChainHarness;
beforeAll(async () => {
  h = await chainHarness(loadConfig(env));
});
afterAll(() => h.close());

describe('permit-chain submit: bad input', () => {
  const planId = 'badbadbadbadbad0';
  const valid = ['--symbol', 'BTCUSDT', '--side', 'SELL', '--qty', '0.062', '--plan-id', planId];
  const withArg = (name: string, value: string) => {
    const args = [...valid];
    args[args.indexOf(name) + 1] = value;
    return args;
  };

  it.each([
    ['a negative qty', withArg('--qty', '-1'), 'qty'],
    ['a qty with 9 decimals', withArg('--qty', '0.000000001'), 'qty'],
    ['a qty that is not a number', withArg('--qty', '12abc'), 'qty'],
    ['a qty with a leading space', withArg('--qty', ' 1'), 'qty'],
    ['a qty with a trailing newline', withArg('--qty', '0.01\n'), 'qty'],
    ['a qty with a no-break space', withArg('--qty', '1\u00a0'), 'qty'],
    ['a padded source', [...valid, '--source', ' exit-monitor'], 'source'],
    ['a side of HOLD', withArg('--side', 'HOLD'), 'side'],
    ['a lower-case symbol', withArg('--symbol', 'btcusdt'), 'symbol'],
    ['an upper-case plan id', withArg('--plan-id', 'BADBADBADBADBAD0'), 'plan_id'],
  ])('refuses %s with one line naming the field, and starts and writes nothing', async (_case, args, field) => {
    const run = await runCli(['submit', ...args], env);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    const lines = run.stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^permit-chain: plan: ${field} `));
    expect(await h.redis.keys(`${env.KEY_PREFIX}:*`)).toEqual([]);
    await expect(h.client.workflow.getHandle(planWorkflowId(planId)).describe()).rejects.toBeInstanceOf(
      WorkflowNotFoundError,
    );
  });

  it('refuses a missing option and an unknown command with one line each', async () => {
    const missing = await runCli(['submit', '--symbol', 'BTCUSDT', '--side', 'SELL'], env);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe("permit-chain: required option '--qty <qty>' not specified\n");
    const unknown = await runCli(['frobnicate'], env);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toBe("permit-chain: unknown command 'frobnicate'\n");
  });

  it('refuses a bad argument under --json with one JSON object naming it, exit 2', async () => {
    const run = await runCli(['status', 'NOT-A-PLAN', '--json'], env);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(JSON.parse(run.stderr)).toEqual({
      error:
        "command-argument value 'NOT-A-PLAN' is invalid for argument 'plan_id'. must be 16 lowercase hex characters",
      exit_code: 2,
    });
    const unknown = await runCli(['frobnicate', '--json'], env);
    expect(unknown.code).toBe(2);
    expect(JSON.parse(unknown.stderr)).toEqual({ error: "unknown command 'frobnicate'", exit_code: 2 });
  });

  it('refuses a bad configuration value, naming the variable', async () => {
    const run = await runCli(['position', 'BTCUSDT'], { ...env, PERMIT_TTL_S: 'sixty' });
    expect(run.code).toBe(2);
    expect(run.stderr).toBe("permit-chain: config: PERMIT_TTL_S must be a whole number of seconds > 0 (got 'sixty')\n");
  });
});

describe('permit-chain: commands and errors', () => {
  it('knows the group of every command (launcher.test.ts shows a command loading its own group only)', async () => {
    const help = await runCli(['--help'], env);
    expect(help.code).toBe(0);
    const listed = help.stdout
      .slice(help.stdout.indexOf('Commands:'))
      .split('\n')
      .flatMap((line) => /^ {2}([a-z][a-z-]*)/.exec(line)?.[1] ?? [])
      .filter((name) => name !== 'help');
    expect(listed.sort()).toEqual(Object.keys(COMMAND_GROUPS).sort());
    // A command's own help loads its group alone, and still knows its options.
    const status = await runCli(['status', '--help'], env);
    expect(status.stdout).toContain('Usage: permit-chain status [options] <plan_id>');
  });

  it.each([
    ['a stack frame', 'boom\n    at run (/app/dist/client/plans.js:12:3)', 'boom'],
    ['a frame on the same line', 'refused at fn (/app/lib/x.ts:3:9) then', 'refused then'],
    ['a bare source path', 'failed in /work/app/workers/worker.ts:41:7', 'failed in'],
    ['a file URL', 'failed (file:///app/dist/lib/config.js:10:2)', 'failed'],
    ['a password in a URL', 'Redis at redis://u:secret@h:6379/0: down', 'Redis at redis://***@h:6379/0: down'],
    [
      'a key file (no line number)',
      'cannot read /etc/permit-chain/alice.key',
      'cannot read /etc/permit-chain/alice.key',
    ],
  ])('shows an operator an error without %s', (_case, message, shown) => {
    expect(errorLine(new Error(message))).toBe(shown);
  });

  it('bounds an error line to 500 characters', () => {
    expect(errorLine(new Error('x'.repeat(2000)))).toBe(`${'x'.repeat(500)}…`);
  });
});

describe('permit-chain --version', () => {
  const manifest = JSON.parse(readFileSync(join(PROJECT_ROOT, 'package.json'), 'utf8')) as { version: string };
  const sdk = JSON.parse(readFileSync(require.resolve('@temporalio/client/package.json'), 'utf8')) as {
    version: string;
  };
  /** The checkout's build id: the hash over its sources, as a worker of it polls with WORKER_VERSIONING. */
  const buildId = buildIdOf(hashSources(PROJECT_ROOT));

  it("prints the chain's version, its build id and the Temporal SDK's, and exits 0 without touching a server", async () => {
    for (const flag of ['--version', '-V']) {
      // Nothing listens on these addresses: --version must not need Redis or Temporal.
      const run = await runCli([flag], { ...env, REDIS_URL: 'redis://127.0.0.1:1/0', TEMPORAL_ADDRESS: '127.0.0.1:1' });
      expect(run.code).toBe(0);
      expect(run.stderr).toBe('');
      expect(run.stdout).toBe(
        `permit-chain ${manifest.version}\nbuild ${buildId}\nTemporal TypeScript SDK ${sdk.version}\n`,
      );
    }
  });

  it('prints one JSON object with --json, and loads no command to do it', async () => {
    for (const args of [
      ['--version', '--json'],
      ['--json', '-V'],
    ]) {
      const run = await runCli(args, { ...env, REDIS_URL: 'redis://127.0.0.1:1/0', TEMPORAL_ADDRESS: '127.0.0.1:1' });
      expect(run.code).toBe(0);
      expect(run.stderr).toBe('');
      expect(JSON.parse(run.stdout)).toEqual({
        version: manifest.version,
        build_id: buildId,
        temporal_sdk: sdk.version,
      });
    }
  });

  it('finds the package version from a compiled copy in a subfolder, and only from this package', () => {
    const root = mkdtempSync(join(tmpdir(), 'permit-chain-version-'));
    cpSync(join(PROJECT_ROOT, 'package.json'), join(root, 'package.json'));
    // A package.json of something else on the way up (as in a bundler's output folder) is not ours.
    mkdirSync(join(root, 'dist', 'cli'), { recursive: true });
    cpSync(require.resolve('@temporalio/client/package.json'), join(root, 'dist', 'package.json'));
    expect(packageVersion(join(root, 'dist', 'cli'))).toBe(manifest.version);
    expect(() => packageVersion(tmpdir())).toThrow(/no package\.json of quantum-permit-chain/);
  });
});

describe('permit-chain against a running worker', () => {
  it('submits and waits, shows status and position, and retries', async () => {
    await setPositions(h, 'LTCUSDT', '3', '3');
    await h.withWorker(async () => {
      const run = await runCli(
        ['submit', '--symbol', 'LTCUSDT', '--side', 'SELL', '--qty', '1.25', '--wait', '--json', '--source', 'ops'],
        env,
      );
      expect(run.stderr).toBe('');
      expect(run.code).toBe(0);
      const status = JSON.parse(run.stdout) as ChainStatus;
      expect(status).toMatchObject({ outcome: 'executed', stage: 'done', attempts: 1 });
      expect(status.execution?.filled_qty).toBe('1.25');

      const shown = await runCli(['status', status.plan_id], env);
      expect(shown.code).toBe(0);
      expect(shown.stdout).toContain(`plan ${status.plan_id}  stage done  outcome executed`);
      expect(shown.stdout).toContain('p33       allowed (positions_reconciled): exchange 3, ledger 3');

      const position = await runCli(['position', 'LTCUSDT', '--json'], env);
      expect(JSON.parse(position.stdout)).toEqual({
        symbol: 'LTCUSDT',
        exchange_amount: '1.75',
        ledger_amount: '1.75',
        discrepancy: '0',
        tolerance: '0.001',
        within_tolerance: true,
        unrecorded_orders: [],
        worker: expect.objectContaining({ exchange: 'paper', mode: 'testnet', task_queue: env.TASK_QUEUE }) as unknown,
        operation_id: expect.stringMatching(/^op-/) as unknown,
      });

      const submitted = await runCli(['submit', '--symbol', 'LTCUSDT', '--side', 'SELL', '--qty', '5', '--json'], env);
      const { plan_id: blockedId } = JSON.parse(submitted.stdout) as { plan_id: string };
      // 5 exceeds the 1.75 held: P3.3 blocks it; a retry wakes it and it stays blocked for the same reason.
      const retried = await runCli(['retry', blockedId, '--by', 'alice'], env);
      expect(retried.code).toBe(0);
      // It waits for the plan's look and says what it saw: still blocked, the positions named.
      expect(retried.stdout).toMatch(
        new RegExp(
          `^retry sent to plan-${blockedId}: 0 moved, 1 still blocked\\n  blocked  1 on LTCUSDT: \\w+, exchange 1\\.75 vs ` +
            `ledger 1\\.75, tolerance 0\\.001: ${blockedId}\\n$`,
        ),
      );
    });
  });

  it('says so when a plan does not exist, with an exit code of its own (4), in text or as one JSON object', async () => {
    const run = await runCli(['status', 'feedfeedfeedfeed'], env);
    expect(run.code).toBe(4);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe('permit-chain: no plan feedfeedfeedfeed (workflow plan-feedfeedfeedfeed not found)\n');
    const json = await runCli(['status', 'feedfeedfeedfeed', '--json'], env);
    expect(json.code).toBe(4);
    expect(json.stdout).toBe('');
    expect(json.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(JSON.parse(json.stderr)).toEqual({
      error: 'no plan feedfeedfeedfeed (workflow plan-feedfeedfeedfeed not found)',
      exit_code: 4,
    });
  });

  it('exits 5 when position shows a reconcile is required, 0 when the positions agree', async () => {
    await setPositions(h, 'ADAUSDT', '0.4', '0.008');
    await h.withWorker(async () => {
      const apart = await runCli(['position', 'ADAUSDT'], env);
      expect(apart.code).toBe(5);
      expect(apart.stdout).toMatch(/^ADAUSDT {2}exchange 0\.4 {2}ledger 0\.008 .* RECONCILE REQUIRED\nanswered by /);
      const json = await runCli(['position', 'ADAUSDT', '--json'], env);
      expect(json.code).toBe(5);
      expect(JSON.parse(json.stdout)).toMatchObject({ within_tolerance: false, discrepancy: '0.392' });
      await setPositions(h, 'ADAUSDT', '0.4', '0.4');
      expect((await runCli(['position', 'ADAUSDT'], env)).code).toBe(0);
    });
  });

  it('lists plans under a header naming the columns', async () => {
    // A symbol of its own: `list` reads the namespace, which other test files share.
    await setPositions(h, 'HEADERUSDT', '2', '2');
    await h.withWorker(async () => {
      const run = await runCli(
        ['submit', '--symbol', 'HEADERUSDT', '--side', 'SELL', '--qty', '1', '--wait', '--json'],
        env,
      );
      const { plan_id: planId } = JSON.parse(run.stdout) as ChainStatus;
      const listed = await eventually(async () => {
        const list = await runCli(['list', '--symbol', 'HEADERUSDT'], env);
        return list.stdout.includes(planId) ? list : undefined;
      });
      expect(listed.code).toBe(0);
      const lines = listed.stdout.trimEnd().split('\n');
      expect(lines[0]).toBe('1 plan(s)');
      expect(lines[1]?.split(/\s+/)).toEqual(['PLAN', 'SYMBOL', 'STAGE', 'OUTCOME', 'MODE', 'STARTED']);
      expect(lines[2]?.split(/\s+/).slice(0, 5)).toEqual([planId, 'HEADERUSDT', 'done', 'executed', 'testnet']);
      // Each value starts under its column's name.
      for (const name of ['SYMBOL', 'STAGE', 'OUTCOME', 'MODE', 'STARTED']) {
        const at = lines[1]?.indexOf(name) ?? -1;
        expect(lines[2]?.[at - 1]).toBe(' ');
        expect(lines[2]?.[at]).not.toBe(' ');
      }
    });
  });

  it.each(['bench', 'chaos'])(
    'has no %s command: a tool of the checkout (npm run %s), not of the CLI',
    async (tool) => {
      const run = await runCli([tool], env);
      expect(run.code).toBe(2);
      expect(run.stderr).toBe(`permit-chain: unknown command '${tool}'\n`);
    },
  );

  it.each(['worker', 'intake'])('refuses to start the %s without an explicit TRADING_MODE', async (command) => {
    const { TRADING_MODE: _unset, ...withoutMode } = env;
    const run = await runCli([command], { ...withoutMode, TRADING_MODE: '' });
    expect(run.code).toBe(2);
    expect(run.stderr).toBe(
      `permit-chain: config: TRADING_MODE must be set for the ${command} (testnet or production): it does not default to auto-approval\n`,
    );
  });

  it('refuses to start a production worker whose approvers have no keys', async () => {
    const run = await runCli(['worker'], { ...env, TRADING_MODE: 'production', APPROVERS: 'alice' });
    expect(run.code).toBe(2);
    expect(run.stderr).toBe(
      "permit-chain: config: APPROVER_KEYS_DIR must name the folder of the approvers' NAME.pub keys\n",
    );
  });

  it('refuses to start a worker on a tampered keys folder, with one line naming the file and the fix', async () => {
    // As found: a folder of mode 0777, and alice.pub (0666, nobody's where the test may give it away) holding
    // mallory's key.
    const approvers = testApprovers('alice', 'mallory');
    const alicePub = join(approvers.dir, 'alice.pub');
    cpSync(join(approvers.dir, 'mallory.pub'), alicePub);
    chmodSync(alicePub, 0o666);
    const root = process.getuid?.() === 0;
    if (root) chownSync(alicePub, 65534, 65534);
    chmodSync(approvers.dir, 0o777);
    const production = { ...env, TRADING_MODE: 'production', APPROVERS: 'alice', APPROVER_KEYS_DIR: approvers.dir };
    const run = await runCli(['worker'], production);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe(
      `permit-chain: config: APPROVER_KEYS_DIR: ${approvers.dir} is writable by group and others (mode 0777), who ` +
        `could put a key there: run chmod go-w ${approvers.dir}\n`,
    );
    // The folder fixed, the file itself is refused.
    chmodSync(approvers.dir, 0o755);
    const again = await runCli(['worker'], production);
    expect(again.code).toBe(2);
    expect(again.stderr).toBe(
      root
        ? `permit-chain: config: APPROVER_KEYS_DIR: ${alicePub} is owned by uid 65534, not by this worker's user ` +
            `(uid 0) or root: run chown root ${alicePub}\n`
        : `permit-chain: config: APPROVER_KEYS_DIR: ${alicePub} is writable by group and others (mode 0666), who ` +
            `could change the key: run chmod go-w ${alicePub}\n`,
    );
  });

  it("refuses to start a worker where one approver's key is a link to another's", async () => {
    const approvers = testApprovers('bob');
    symlinkSync('bob.pub', join(approvers.dir, 'carol.pub'));
    const run = await runCli(['worker'], {
      ...env,
      TRADING_MODE: 'production',
      APPROVERS: 'bob,carol',
      APPROVER_KEYS_DIR: approvers.dir,
    });
    expect(run.code).toBe(2);
    const lines = run.stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      new RegExp(
        `^permit-chain: config: APPROVER_KEYS_DIR: ${join(approvers.dir, 'carol.pub')} holds the same key as ` +
          `${join(approvers.dir, 'bob.pub')} \\(SHA256:[A-Za-z0-9+/]{43}\\), which would sign as both bob and carol: ` +
          'give carol a key of their own \\(permit-chain keygen carol --out DIR\\)$',
      ),
    );
  });

  it('refuses to start a worker whose key differs from the fingerprint pinned for it', async () => {
    const approvers = testApprovers('alice');
    const pinned = `SHA256:${'A'.repeat(43)}`;
    const run = await runCli(['worker'], {
      ...env,
      TRADING_MODE: 'production',
      APPROVERS: 'alice',
      APPROVER_KEYS_DIR: approvers.dir,
      APPROVER_FINGERPRINTS: `alice:${pinned}`,
    });
    expect(run.code).toBe(2);
    const actual = keyFingerprint(createPublicKey(readFileSync(join(approvers.dir, 'alice.pub'))));
    expect(run.stderr).toBe(
      `permit-chain: config: APPROVER_FINGERPRINTS: alice's key ${join(approvers.dir, 'alice.pub')} is ${actual}, ` +
        'pinned ' +
        pinned +
        ": put alice's own key there, or pin the new fingerprint if the key was changed on purpose\n",
    );
  });

  it("prints each approver's and operator's key fingerprint, its exchange and key prefix when a production worker starts", async () => {
    const approvers = testApprovers('alice', 'bob', 'olga');
    const fingerprint = (name: string) =>
      keyFingerprint(createPublicKey(readFileSync(join(approvers.dir, `${name}.pub`))));
    const production = {
      ...env,
      TRADING_MODE: 'production',
      APPROVERS: 'alice,bob',
      APPROVER_KEYS_DIR: approvers.dir,
      APPROVER_FINGERPRINTS: `alice:${fingerprint('alice')}`,
      APPROVAL_QUORUM: '2',
      APPROVAL_QUORUM_ABOVE_NOTIONAL: '10000',
      OPERATORS: 'olga',
      TASK_QUEUE: `${env.TASK_QUEUE}-production`,
    };
    const child = spawn(process.execPath, [CLI, 'worker'], { env: { ...process.env, ...production }, stdio: 'pipe' });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    const exited = new Promise<number | null>((done) => child.once('exit', done));
    await eventually(() => Promise.resolve(out.includes(`task queue ${production.TASK_QUEUE}`) || undefined));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(logMessages(out).filter((line) => line.startsWith('worker: approver keys'))).toEqual([
      `worker: approver keys from ${approvers.dir}: alice ${fingerprint('alice')} (pinned), bob ${fingerprint('bob')}`,
    ]);
    expect(logMessages(out).filter((line) => line.startsWith('worker: operator keys'))).toEqual([
      `worker: operator keys from ${approvers.dir}: olga ${fingerprint('olga')}`,
    ]);
    // The four-eyes rule is part of the mode the worker says it runs in; the exchange and key prefix follow.
    expect(logMessages(out)).toContainEqual(
      expect.stringContaining(
        'worker: production mode (approvers alice, bob; quorum 2 above notional 10000), exchange paper at redis ' +
          `(${env.KEY_PREFIX}:exchange:paper:*), key prefix ${env.KEY_PREFIX}, operators olga, task queue `,
      ),
    );
  });

  it('keygen prints the fingerprint of the key it made, ready to pin', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'permit-chain-keygen-'));
    const run = await runCli(['keygen', 'alice', '--out', dir], env);
    expect(run.code).toBe(0);
    const fingerprint = keyFingerprint(createPublicKey(readFileSync(join(dir, 'alice.pub'))));
    expect(run.stdout).toContain(`fingerprint ${fingerprint} (to pin: APPROVER_FINGERPRINTS=alice:${fingerprint})\n`);
  });

  it('runs the worker process until SIGTERM, then stops cleanly', async () => {
    const child = spawn(process.execPath, [CLI, 'worker'], { env: { ...process.env, ...env }, stdio: 'pipe' });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    const exited = new Promise<number | null>((done) => child.once('exit', done));
    await eventually(() => Promise.resolve(out.includes(`task queue ${env.TASK_QUEUE}`) || undefined));
    // Its lines are JSON (stdout is no terminal here): the start line is one's message.
    expect(logMessages(out)).toContainEqual(
      expect.stringMatching(
        /^worker: testnet mode \(the Governor approves by itself\), exchange paper at .*, task queue /,
      ),
    );
    await setPositions(h, 'DOTUSDT', '1', '1');
    const run = await runCli(
      ['submit', '--symbol', 'DOTUSDT', '--side', 'SELL', '--qty', '1', '--wait', '--json'],
      env,
    );
    expect((JSON.parse(run.stdout) as ChainStatus).outcome).toBe('executed');
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(logMessages(out)).toContain('worker: stopped');
  });
});
