import { readFileSync } from 'node:fs';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { InvalidArgumentError, type Command } from 'commander';
import type { WhatIfReport } from '../../client/what-if';
import { ConfigError, decisionSettings, isConfigVariable, isDecisionVariable } from '../../lib/config';
import { historiesFromPath, replayCheck, type NamedHistory } from '../../workers/replay-check';
import { durationArg } from '../cli-args';
import { UsageError, type CommandContext } from './context';

/** The proposed settings' flags and the worker's variables they stand for. */
const SETTING_FLAGS = {
  '--p33-tolerance': 'P33_TOLERANCE',
  '--max-qty': 'GOVERNOR_MAX_QTY',
  '--max-notional': 'GOVERNOR_MAX_NOTIONAL',
  '--rate-limit': 'GOVERNOR_RATE_LIMIT',
  '--approvers': 'APPROVERS',
  '--approval-quorum': 'APPROVAL_QUORUM',
  '--approval-quorum-above-notional': 'APPROVAL_QUORUM_ABOVE_NOTIONAL',
} as const;
/** Flags that take a symbol: `--max-qty-BTCUSDT 0.05` is `GOVERNOR_MAX_QTY_BTCUSDT`. */
const PER_SYMBOL = ['--p33-tolerance', '--max-qty', '--max-notional'] as const;

/** A time: ISO-8601, or ms since epoch. */
function timeArg(value: string): Date {
  const date = /^\d+$/.test(value) ? new Date(Number(value)) : new Date(value);
  if (Number.isNaN(date.getTime())) throw new InvalidArgumentError('must be an ISO-8601 time or ms since epoch');
  return date;
}

/**
 * A settings file: JSON (`{"GOVERNOR_MAX_QTY": "0.05"}`) or the env-file form of the worker's variables
 * (`KEY=VALUE` lines, `#` comments, `export` and quotes allowed). Every key must be a worker variable; only the
 * decision variables count.
 */
export function readSettingsFile(path: string): Record<string, string> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`--settings: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  const vars: Record<string, string> = {};
  if (text.trimStart().startsWith('{')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new UsageError(`--settings: ${path} is not JSON (${err instanceof Error ? err.message : String(err)})`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new UsageError(`--settings: ${path} must hold one JSON object of variables`);
    }
    for (const [name, value] of Object.entries(parsed)) {
      if (typeof value !== 'string' && typeof value !== 'number') {
        throw new UsageError(`--settings: ${name} in ${path} must be a string or a number`);
      }
      vars[name] = String(value);
    }
  } else {
    for (const [i, raw] of text.split('\n').entries()) {
      const line = raw.trim();
      if (line === '' || line.startsWith('#')) continue;
      const match = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
      if (!match) throw new UsageError(`--settings: ${path} line ${i + 1} is not KEY=VALUE`);
      vars[match[1] as string] = (match[2] as string).replace(/^(['"])(.*)\1$/, '$2');
    }
  }
  const unknown = Object.keys(vars).find((name) => !isConfigVariable(name));
  if (unknown) throw new UsageError(`--settings: ${unknown} in ${path} is not a variable of the worker`);
  return vars;
}

/** `--max-qty-BTCUSDT 0.05` and `--max-qty-BTCUSDT=0.05`: the per-symbol flags, which commander leaves over. */
function perSymbolFlags(args: string[]): Record<string, string> {
  const vars: Record<string, string> = {};
  for (let i = 0; i < args.length; i += 1) {
    const arg = args[i] as string;
    const [flag, inline] = arg.split(/=(.*)/s) as [string, string | undefined];
    const base = PER_SYMBOL.find((name) => flag.startsWith(`${name}-`));
    const variable = base ? `${SETTING_FLAGS[base]}_${flag.slice(base.length + 1)}` : undefined;
    if (!base || !variable || !isDecisionVariable(variable)) {
      throw new UsageError(`what-if: unknown option or argument '${arg}'`);
    }
    const value = inline ?? args[(i += 1)];
    if (value === undefined) throw new UsageError(`what-if: ${flag} needs a value`);
    vars[variable] = value;
  }
  return vars;
}

/**
 * Each flag's value checked alone first, so that a refusal names the flag and its variable (a quorum with the
 * approvers it counts among: `approvers`, the proposal's APPROVERS).
 */
function checkedFlags(flags: Record<string, string>, names: Record<string, string>, approvers?: string): void {
  for (const [variable, value] of Object.entries(flags)) {
    const among: Record<string, string> =
      variable === 'APPROVAL_QUORUM' && approvers !== undefined ? { APPROVERS: approvers } : {};
    try {
      decisionSettings({ ...among, [variable]: value });
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      throw new UsageError(`what-if: ${names[variable] ?? variable}: ${err.message.replace(/^config: /, '')}`);
    }
  }
}

function time(ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ');
}

/** The report as a person reads it: the window and settings, each flip, then the totals per layer and change. */
export function formatWhatIf(
  report: WhatIfReport & { context_plans: number },
  window: { from: Date; to: Date },
  settings: Record<string, string>,
): string {
  const shown = Object.entries(settings).map(([name, value]) => `${name}=${value}`);
  const lines = [
    `what-if: ${report.plans} plan(s) started ${time(window.from.getTime())} to ${time(window.to.getTime())}, ` +
      `${report.decisions} decision(s) re-decided from their Temporal histories`,
    `proposed: ${shown.length > 0 ? shown.join(' ') : '(the defaults)'}`,
    `${report.flips.length} decision(s) would flip`,
  ];
  for (const f of report.flips) {
    lines.push(
      `  ${f.plan_id}  ${f.symbol.padEnd(10)} ${f.layer.padEnd(8)} ${f.before.decision} (${f.before.reason}) → ` +
        `${f.after.decision} (${f.after.reason}): ${f.why}`,
    );
  }
  lines.push('totals');
  for (const [layer, t] of Object.entries(report.totals)) {
    const changes = Object.entries(t.by_change).map(([change, n]) => `${change} ×${n}`);
    lines.push(
      `  ${layer.padEnd(8)} ${t.decisions} decision(s), ${t.flips} flip(s)${changes.length ? `: ${changes.join(', ')}` : ''}`,
    );
  }
  if (report.after_flip > 0) lines.push(`${report.after_flip} later decision(s) of flipped plans not re-decided`);
  if (report.context_plans > 0) {
    lines.push(`${report.context_plans} plan(s) started the rate window before counted in the rate windows`);
  }
  for (const u of report.undecided) lines.push(`undecided  ${u.plan_id}  ${u.layer}: ${u.why}`);
  lines.push('nothing was written');
  return lines.join('\n');
}

/** Safe changes: what proposed rules would have decided, and whether this code replays the plans on the server. */
export function addSafeChangesCommands(program: Command, ctx: CommandContext): void {
  program
    .command('what-if')
    .description(
      're-decide the plans of a time window under proposed settings (from their Temporal histories); nothing is written',
    )
    .option('--since <age>', 'plans started this long ago until now, e.g. 1h (the default: 1h)', durationArg)
    .option('--from <time>', 'plans started from this time (ISO-8601 or ms)', timeArg)
    .option('--to <time>', 'plans started until this time (default: now)', timeArg)
    .option('--settings <file>', "the proposal as a file: JSON or the worker's env-file (default: this environment)")
    .option('--p33-tolerance <qty>', 'P33_TOLERANCE (and --p33-tolerance-SYMBOL)')
    .option('--max-qty <qty>', 'GOVERNOR_MAX_QTY (and --max-qty-SYMBOL)')
    .option('--max-notional <amount>', 'GOVERNOR_MAX_NOTIONAL (and --max-notional-SYMBOL)')
    .option('--rate-limit <rule>', 'GOVERNOR_RATE_LIMIT, e.g. 30/60s')
    .option('--approvers <names>', 'APPROVERS, comma-separated')
    .option('--approval-quorum <count>', 'APPROVAL_QUORUM: distinct approvers a plan needs')
    .option('--approval-quorum-above-notional <amount>', 'APPROVAL_QUORUM_ABOVE_NOTIONAL')
    .allowUnknownOption()
    .allowExcessArguments()
    .action(
      (
        opts: { since?: number; from?: Date; to?: Date; settings?: string } & Record<string, unknown>,
        command: Command,
      ) =>
        ctx.withChain(async (chain, o) => {
          if (opts.since !== undefined && (opts.from || opts.to)) {
            throw new UsageError('what-if: --since and --from/--to are two ways to say the window; give one');
          }
          const to = opts.to ?? new Date();
          const from = opts.from ?? new Date(to.getTime() - (opts.since ?? 3_600_000));
          if (from > to) throw new UsageError('what-if: --from is after --to');
          const names: Record<string, string> = {};
          const flags: Record<string, string> = {};
          for (const [flag, variable] of Object.entries(SETTING_FLAGS)) {
            const key = flag.slice(2).replace(/-(\w)/g, (_, c: string) => c.toUpperCase());
            const value = opts[key];
            if (typeof value === 'string') {
              flags[variable] = value;
              names[variable] = flag;
            }
          }
          const symbolFlags = perSymbolFlags(command.args);
          for (const variable of Object.keys(symbolFlags)) names[variable] = `--${variable}`;
          Object.assign(flags, symbolFlags);
          const base = opts.settings !== undefined ? readSettingsFile(opts.settings) : ctx.env;
          checkedFlags(flags, names, flags.APPROVERS ?? base.APPROVERS);
          const proposed: Record<string, string> = {};
          for (const [name, value] of Object.entries({ ...base, ...flags })) {
            if (value !== undefined && value !== '' && isDecisionVariable(name)) proposed[name] = value;
          }
          let settings;
          try {
            settings = decisionSettings(proposed);
          } catch (err) {
            if (!(err instanceof ConfigError)) throw err;
            const where = opts.settings !== undefined ? `--settings ${opts.settings}` : 'the environment';
            throw new UsageError(`what-if: ${where}: ${err.message.replace(/^config: /, '')}`);
          }
          const report = await chain.whatIf(from, to, settings);
          o.result(formatWhatIf(report, { from, to }, proposed), {
            window: { from: from.toISOString(), to: to.toISOString() },
            source: 'temporal_history',
            proposed,
            ...report,
          });
        }),
    );
  program
    .command('replay-check')
    .description(
      "replay plans' histories against this checkout's workflow code; exit 3 naming each plan that would not replay",
    )
    .option('--since <age>', 'plans started this long ago until now, fetched from the server (e.g. 24h)', durationArg)
    .option('--running', 'plans running now, fetched from the server')
    .option('--histories <path>', 'history files (temporal workflow show -o json): a file or a folder of .json files')
    .option('--workflow-bundle <file>', "replay against this prebuilt bundle instead of this checkout's workflow code")
    .action(async (opts: { since?: number; running?: boolean; histories?: string; workflowBundle?: string }) => {
      const o = ctx.out();
      const fromServer = opts.since !== undefined || opts.running === true || opts.histories === undefined;
      const histories: NamedHistory[] = opts.histories !== undefined ? historiesFromPath(opts.histories) : [];
      if (fromServer) {
        // Neither asked: the plans of the last day and those running now, what a deploy would meet.
        const since = opts.since ?? (opts.running ? undefined : 86_400_000);
        const running = opts.running === true || (opts.since === undefined && opts.histories === undefined);
        await ctx.withChain(async (chain) => {
          const runs = await chain.planRuns({
            ...(since !== undefined ? { startedFrom: new Date(Date.now() - since) } : {}),
            running,
          });
          for (const run of runs) {
            histories.push({
              workflowId: run.workflowId,
              name: `${run.workflowId} (run ${run.runId})`,
              history: run.history,
            });
          }
        });
      }
      // The replayer's own lines are for its failures: this command prints its report.
      Runtime.install({
        logger: new DefaultLogger('ERROR'),
        telemetryOptions: { logging: { filter: { core: 'ERROR', other: 'ERROR' }, forward: {} } },
      });
      const report = await replayCheck(histories, {
        ...(opts.workflowBundle !== undefined ? { workflowBundlePath: opts.workflowBundle } : {}),
      });
      const lines = [
        `replay-check: ${report.replayed} history(ies) replayed against ${report.code}: ` +
          (report.divergences.length === 0 ? 'all replay' : `${report.divergences.length} would not replay`),
        ...report.divergences.map(
          (d) =>
            `  ${d.name}: diverges at ${d.event_id !== null ? `event ${d.event_id}` : 'an event the SDK does not name'}` +
            `${d.event_note ? ` (${d.event_note})` : ''}: ${d.detail}`,
        ),
      ];
      o.result(lines.join('\n'), report);
      if (report.divergences.length > 0) ctx.setExit(3);
    });
}
