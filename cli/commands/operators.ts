import { DEFAULT_DECISION_LIFE_MS, MAX_DECISION_LIFE_MS, generateApproverKeys } from '../../lib/approval';
import { durationArg, oneOf, planIdArg, symbolArg } from '../cli-args';
import { type Command } from 'commander';
import { formatReconcilePreview, type Output } from '../output';
import { UsageError, type CommandContext } from './context';
import { describeUnrecorded, type UnrecordedOrder } from '../../activities/unrecorded';
import { OperationRefused, WorkersUnreachable, type Answered } from '../../client/chain-client';
import { redisKeys } from '../../contract/keys';
import { identityLine } from '../../lib/venue';

/** The operators' actions: signed decisions, cancel, the kill switch, reconcile, keys, and the cluster's search attributes. */
export function addOperatorsCommands(program: Command, ctx: CommandContext): void {
  for (const kind of ['approve', 'reject'] as const) {
    const command = program
      .command(kind)
      .description(`${kind} a plan that awaits approval (production mode), signed with your key`)
      .argument('<plan_id>', 'the plan id', planIdArg)
      .requiredOption('--by <name>', `who ${kind}s (an approver the worker has a key for)`);
    if (kind === 'approve') command.option('--note <text>', 'kept with the approval');
    else command.requiredOption('--reason <text>', 'why');
    command
      .requiredOption('--key <file>', "the approver's private key (from permit-chain keygen)")
      .option(
        '--expires-in <age>',
        `how long the signature holds, at most ${MAX_DECISION_LIFE_MS / 60_000}m`,
        durationArg,
      )
      .option('--print', 'print the signed payload instead of sending it (for temporal workflow signal --input)')
      .action(
        (
          planId: string,
          opts: { by: string; note?: string; reason?: string; key: string; expiresIn?: number; print?: boolean },
        ) =>
          ctx.withChain(async (chain, o) => {
            const fields = {
              by: opts.by,
              ...(opts.note !== undefined ? { note: opts.note } : {}),
              ...(opts.reason !== undefined ? { reason: opts.reason } : {}),
            };
            const signing = {
              keyFile: opts.key,
              lifeMs: opts.expiresIn ?? DEFAULT_DECISION_LIFE_MS,
              ...(opts.print ? { print: true } : {}),
            };
            const answer = await chain.decide(planId, kind, fields, signing);
            if ('printed' in answer) return o.result(JSON.stringify(answer.printed), answer.printed);
            ctx.reply(o, planId, answer);
          }),
      );
  }
  program
    .command('cancel')
    .description('end a plan before its order is placed')
    .argument('<plan_id>', 'the plan id', planIdArg)
    .requiredOption('--by <name>', 'who cancels')
    .requiredOption('--reason <text>', 'why')
    .action((planId: string, opts: { by: string; reason: string }) =>
      ctx.withChain(async (chain, o) => ctx.reply(o, planId, await chain.cancel(planId, opts.by, opts.reason))),
    );
  program
    .command('kill-switch')
    .description(
      "set or clear the Governor's kill switch, in a worker: while on, no permit is issued and no order placed; " +
        'on is open to anyone (and set in Redis directly with REDIS_URL when no worker answers)',
    )
    .argument('<state>', 'on or off', oneOf(['on', 'off'] as const))
    .requiredOption('--by <name>', 'who sets it (with --key: the operator whose key signs)')
    .option('--key <file>', "an operator's private key (OPERATORS): signs `off`, required in production mode")
    .action((state: 'on' | 'off', opts: { by: string; key?: string }) =>
      ctx.withChain(async (chain, o) => {
        const signer = state === 'off' && opts.key !== undefined ? { keyFile: opts.key } : undefined;
        try {
          const answer = await chain.killSwitch(state === 'on', opts.by, signer);
          o.result(`kill switch ${state} (by ${answer.recorded_as ?? opts.by})\n${identityLine(answer.worker)}`, {
            kill_switch: state,
            by: opts.by,
            recorded_as: answer.recorded_as,
            worker: answer.worker,
            operation_id: answer.operation_id,
          });
        } catch (err) {
          if (refused(err, o, ctx)) return;
          if (!(err instanceof WorkersUnreachable) || state === 'off') throw err;
          // The brake never depends on the rest: with REDIS_URL, this shell sets the switch itself.
          const keys = redisKeys(chain.config.keyPrefix);
          if (ctx.env.REDIS_URL === undefined) {
            throw new Error(
              `${err.message}; the kill switch is NOT set: set it yourself with redis-cli SET ${keys.killSwitch} 1 ` +
                '(or give this shell REDIS_URL)',
            );
          }
          const direct = await chain.killSwitchDirect(opts.by, err.message);
          o.result(
            `${err.message}\nkill switch on (by ${opts.by}), set directly in Redis: ${direct.key} at ${direct.redis}`,
            { kill_switch: 'on', by: opts.by, set_directly: true, workers: err.message, ...direct },
          );
        }
      }),
    );
  program
    .command('reconcile')
    .description(
      "in a worker: show what setting the ledger to the exchange's amount changes; with --yes, do it (audited) and " +
        "wake the symbol's blocked plans",
    )
    .argument('<symbol>', 'exchange symbol, e.g. BTCUSDT', symbolArg)
    .requiredOption('--by <name>', 'who reconciles (with --key: the operator whose key signs)')
    .option('--key <file>', "an operator's private key (OPERATORS): signs the change, required in production mode")
    .option('--yes', 'change the ledger without asking')
    .option('--dry-run', 'show what would change, and change nothing')
    .action((symbol: string, opts: { by: string; key?: string; yes?: boolean; dryRun?: boolean }) => {
      if (opts.yes && opts.dryRun) throw new UsageError('reconcile: --yes and --dry-run exclude each other: give one');
      const ask = !opts.yes && !opts.dryRun;
      // Off a terminal nobody can answer, and one JSON object has no room for a question.
      if (ask && (ctx.out().json || !ctx.terminal())) {
        throw new UsageError(
          'reconcile: this changes the ledger: pass --yes to do it (or --dry-run to see what it would change)',
        );
      }
      const signer = opts.key !== undefined ? { keyFile: opts.key } : undefined;
      return ctx.withChain(async (chain, o) => {
        try {
          if (opts.yes) return printReconciled(o, symbol, await chain.reconcile(symbol, opts.by, undefined, signer));
          const { result: preview, worker } = await chain.reconcilePreview(symbol);
          const shown = `${formatReconcilePreview(preview, opts.by)}\n${identityLine(worker)}`;
          if (opts.dryRun) {
            return o.result(`${shown}\ndry run: nothing changed`, {
              symbol,
              by: opts.by,
              exchange_amount: preview.exchange,
              ledger_before: preview.before,
              ledger_after: preview.exchange,
              fills_to_account: preview.fills.length,
              plan_ids: preview.fills,
              unrecorded_orders: preview.orders,
              applied: false,
              worker,
            });
          }
          o.line(shown);
          if (!(await ctx.confirm('apply? [y/N] '))) {
            o.line('nothing changed');
            return ctx.setExit(1);
          }
          // Only what was shown: if the ledger, the exchange or the fills moved meanwhile, nothing changes.
          printReconciled(o, symbol, await chain.reconcile(symbol, opts.by, preview, signer));
        } catch (err) {
          if (!refused(err, o, ctx)) throw err;
        }
      });
    });
  program
    .command('keygen')
    .description("make an approver's Ed25519 key pair: NAME.key (private, 0600) and NAME.pub (for APPROVER_KEYS_DIR)")
    .argument('<name>', "the approver's name, as in APPROVERS")
    .requiredOption('--out <dir>', 'the folder to write both files to')
    .action((name: string, opts: { out: string }) => {
      const { privateFile, publicFile, fingerprint } = generateApproverKeys(name, opts.out);
      const text = [
        `private key ${privateFile} (keep it to yourself)`,
        `public key ${publicFile} (for the worker)`,
        `fingerprint ${fingerprint} (to pin: APPROVER_FINGERPRINTS=${name}:${fingerprint})`,
      ].join('\n');
      ctx.out().result(text, { private_key: privateFile, public_key: publicFile, fingerprint });
    });
  program
    .command('register-search-attributes')
    .description("register the chain's search attributes (all Keyword) in the namespace of a real cluster")
    .action(() =>
      ctx.withChain(async (chain, o) => {
        const added = await chain.registerSearchAttributes();
        const namespace = chain.config.temporalNamespace;
        const text =
          added.length > 0
            ? `registered ${added.join(', ')} in ${namespace}`
            : `all registered already in ${namespace}`;
        o.result(text, { namespace, added });
      }),
    );
}

/** A worker's refusal of an operation: printed as `refused: …`, exit 3. False for any other error. */
function refused(err: unknown, o: Output, ctx: CommandContext): boolean {
  if (!(err instanceof OperationRefused)) return false;
  o.result(`refused: ${err.message}`, { accepted: false, detail: err.message });
  ctx.setExit(3);
  return true;
}

function printReconciled(
  o: Output,
  symbol: string,
  answer: Answered<{ before: string; after: string; fills: string[]; orders: UnrecordedOrder[]; woken: string[] }>,
): void {
  const { before, after, fills, orders, woken } = answer.result;
  const accounted =
    (fills.length > 0 ? `; accounted for ${fills.length} unapplied fill(s)` : '') +
    orders.map((order) => `; accounted for ${describeUnrecorded(order)}`).join('');
  o.result(
    `${symbol} ledger ${before} -> ${after} (the exchange's amount)${accounted}; woke ${woken.length} blocked ` +
      `plan(s); by ${answer.recorded_as ?? '?'}\n${identityLine(answer.worker)}`,
    {
      recorded_as: answer.recorded_as,
      worker: answer.worker,
      operation_id: answer.operation_id,
      unrecorded_orders: orders,
      symbol,
      exchange_amount: after,
      ledger_before: before,
      ledger_after: after,
      fills_accounted: fills.length,
      accounted_plan_ids: fills,
      woken: woken.length,
      applied: true,
    },
  );
}
