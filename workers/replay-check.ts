import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { basename, join } from 'node:path';
import { Worker, type ReplayWorkerOptions } from '@temporalio/worker';
import { DeterminismViolationError } from '@temporalio/workflow';
import { WORKFLOW_INTERCEPTOR_MODULES, workflowCode } from './workflow-code';

/** A history to replay, named by where it came from: the workflow id (and run), or the file. */
export interface NamedHistory {
  workflowId: string;
  /** What the report calls it: `plan-… (run …)` or a file's path. */
  name: string;
  history: unknown;
}

/** A history that would not replay against this workflow code: the first event where it diverges, and why. */
export interface ReplayDivergence {
  workflow_id: string;
  name: string;
  /** The history event the replay diverges at: the one the SDK names, or the first recording what it names. */
  event_id: number | null;
  /** How the event was found, when the SDK named an activity rather than an event. */
  event_note?: string;
  /** `nondeterminism` (the code would issue other commands than the history holds) or another replay failure. */
  kind: 'nondeterminism' | 'error';
  detail: string;
}

export interface ReplayReport {
  replayed: number;
  code: string;
  divergences: ReplayDivergence[];
}

/**
 * The histories in a file or a folder of `.json` (or gzipped `.json.gz`) files (`temporal workflow show -o json`, as test/histories/ holds
 * them), each named by its file.
 */
export function historiesFromPath(path: string): NamedHistory[] {
  if (!existsSync(path)) throw new Error(`--histories: no such file or folder (got '${path}')`);
  const files = statSync(path).isDirectory()
    ? readdirSync(path)
        .filter((file) => /\.json(\.gz)?$/.test(file))
        .sort()
        .map((file) => join(path, file))
    : [path];
  return files.map((file) => {
    let history: unknown;
    try {
      const raw = readFileSync(file);
      history = JSON.parse((file.endsWith('.gz') ? gunzipSync(raw) : raw).toString('utf8'));
    } catch (err) {
      throw new Error(`--histories: ${file} is not JSON (${err instanceof Error ? err.message : String(err)})`);
    }
    return { workflowId: basename(file).replace(/\.json(\.gz)?$/, ''), name: file, history };
  });
}

type JsonOrProtoEvent = {
  eventId?: unknown;
  markerRecordedEventAttributes?: { details?: Record<string, { payloads?: { data?: unknown }[] }> } | null;
  activityTaskScheduledEventAttributes?: { activityType?: { name?: string | null } | null } | null;
};

/** A payload's bytes: base64 in a JSON history, bytes in one fetched from the server. */
function payloadText(data: unknown): string {
  if (typeof data === 'string') return Buffer.from(data, 'base64').toString('utf8');
  if (data instanceof Uint8Array) return Buffer.from(data).toString('utf8');
  return '';
}

/** The activity type an event records: a local activity's marker or a regular activity's schedule. */
function recordedActivity(event: JsonOrProtoEvent): string | undefined {
  const scheduled = event.activityTaskScheduledEventAttributes?.activityType?.name;
  if (scheduled) return scheduled;
  const data = event.markerRecordedEventAttributes?.details?.data?.payloads?.[0]?.data;
  if (data === undefined) return undefined;
  try {
    return (JSON.parse(payloadText(data)) as { activity_type?: string }).activity_type;
  } catch {
    return undefined;
  }
}

/**
 * Where a replay failure diverges: the history event its message names (`HistoryEvent(id: 10, …)`), or, when it
 * names only the recorded activity that does not match the code's command (`recorded marker 'checkPosition'`,
 * `scheduled event 'X'`), the first event of the history that records that activity.
 */
export function divergingEvent(message: string, history: unknown): { eventId: number | null; note?: string } {
  const named = /HistoryEvent\(id: (\d+)/.exec(message) ?? /\bevent id:? (\d+)/i.exec(message);
  if (named) return { eventId: Number(named[1]) };
  const activity = /recorded (?:marker|event) '([^']+)'|scheduled event '([^']+)'/.exec(message);
  const type = activity?.[1] ?? activity?.[2];
  const command = /command '([^']+)'/.exec(message)?.[1];
  const events = (history as { events?: JsonOrProtoEvent[] } | undefined)?.events ?? [];
  const first = type ? events.find((event) => recordedActivity(event) === type) : undefined;
  if (!first) return { eventId: null };
  return {
    eventId: Number(first.eventId),
    note: `the first event recording ${type}${command ? `, where the code now issues ${command}` : ''}`,
  };
}

/** The SDK's own line in a replay failure (`[TMPRL1100] Nondeterminism error: …`), else its first line. */
function failureLine(message: string): string {
  return /\[TMPRL\d+\][^"]*/.exec(message)?.[0] ?? message.split('\n')[0] ?? message;
}

/**
 * Replays the histories against a workflow code with the SDK's replayer: by default the code this worker runs
 * (workers/workflow-code.ts: the sources bundled with the workflow interceptors, or the prebuilt bundle when
 * compiled); `workflowBundlePath` replays against another prebuilt bundle instead. Nothing runs on a server.
 */
export async function replayCheck(
  histories: NamedHistory[],
  { workflowBundlePath }: { workflowBundlePath?: string } = {},
): Promise<ReplayReport> {
  const code = workflowBundlePath
    ? { option: { workflowBundle: { codePath: workflowBundlePath } }, description: `the bundle ${workflowBundlePath}` }
    : workflowCode();
  const options: ReplayWorkerOptions = {
    ...code.option,
    interceptors: { workflowModules: WORKFLOW_INTERCEPTOR_MODULES },
    replayName: 'replay-check',
  };
  const divergences: ReplayDivergence[] = [];
  let replayed = 0;
  const input = histories.map(({ workflowId, history }) => ({ workflowId, history }));
  // The replayer answers in the order it was given: a plan's runs share a workflow id, their names differ.
  for await (const result of Worker.runReplayHistories(options, input)) {
    const given = histories[replayed];
    replayed += 1;
    if (!result.error) continue;
    const message = result.error instanceof Error ? result.error.message : String(result.error);
    const mine = given?.workflowId === result.workflowId ? given : undefined;
    const where = divergingEvent(message, mine?.history);
    divergences.push({
      workflow_id: result.workflowId,
      name: mine?.name ?? result.workflowId,
      event_id: where.eventId,
      ...(where.note ? { event_note: where.note } : {}),
      kind: result.error instanceof DeterminismViolationError ? 'nondeterminism' : 'error',
      detail: failureLine(message),
    });
  }
  return { replayed, code: code.description, divergences };
}
