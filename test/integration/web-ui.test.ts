import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startPlan } from '../../client/plans';
import { PROJECT_ROOT } from '../../cli/servers';
import { statusQuery } from '../../contract/messages';
import { chainHarness, eventually, makePlan, setPositions, testConfig, type ChainHarness } from '../helpers';

/** Debian's Chromium, installed by scripts/setup.sh (CHROMIUM_PATH overrides). */
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARTIFACTS = join(PROJECT_ROOT, 'test-results');

let h: ChainHarness;
let browser: Browser;
beforeAll(async () => {
  h = await chainHarness(testConfig());
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // As root in a sandbox with no network beyond loopback: no Chromium sandbox, no background traffic.
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});
afterAll(async () => {
  await browser?.close();
  await h.close();
});

describe('the Temporal Web UI as the operators’ window', () => {
  it('filters by ChainStage="blocked" and finds the blocked plan by its summary and details', async () => {
    await setPositions(h, 'ETHUSDT', '2', '1');
    const plan = makePlan({ symbol: 'ETHUSDT', qty: '0.5' });
    await h.withWorker(async () => {
      const { workflowId, handle } = await startPlan(h.client, h.config, plan);
      await eventually(async () => ((await handle.query(statusQuery)).stage === 'blocked' ? true : undefined));
      // Visibility follows the search attribute a moment later.
      await eventually(async () => {
        for await (const wf of h.client.workflow.list({
          query: `ChainStage = "blocked" AND PlanId = "${plan.plan_id}"`,
        })) {
          return wf.workflowId;
        }
        return undefined;
      });

      const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
      const query = encodeURIComponent('ChainStage="blocked"');
      await page.goto(`${inject('temporalUiUrl')}/namespaces/default/workflows?query=${query}`);
      // The filter the operators type, shown as applied.
      await page.getByText('ChainStage = "blocked"').first().waitFor({ timeout: 20_000 });
      const row = page.getByRole('link', { name: workflowId }).first();
      await row.waitFor({ timeout: 20_000 });
      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: join(ARTIFACTS, 'web-ui-blocked-list.png') });

      // The operators' columns, added as the runbook says: Symbol and ChainStage beside each plan.
      await page.getByTestId('workflows-summary-table-configuration-button').click();
      for (const column of ['Symbol', 'ChainStage']) {
        await page.getByTestId(`orderable-list-item-${column}-add-button`).click();
      }
      // Room for them on one screen: the run id and the end say little about a running plan.
      for (const column of ['Run ID', 'End']) {
        await page.getByTestId(`orderable-list-item-${column}-remove-button`).click();
      }
      // The browser keeps the choice: the list as it shows from now on.
      await page.reload();
      const headers = await eventually(
        async () => {
          const text = (await page.locator('thead').first().innerText()).replace(/\s+/g, ' ');
          return text.includes('Symbol') && text.includes('ChainStage') ? text : undefined;
        },
        10_000,
        'the Symbol and ChainStage columns',
      );
      expect(headers).toMatch(/Symbol.*ChainStage/);
      const cells = (await page.locator('tr', { hasText: workflowId }).first().innerText()).split(/\s+/);
      expect(cells).toEqual(expect.arrayContaining(['ETHUSDT', 'blocked']));
      await page.screenshot({ path: join(ARTIFACTS, 'web-ui-columns.png') });

      await row.click();
      await page.waitForURL(new RegExp(`/workflows/${workflowId}/`));
      await page
        .getByRole('link', { name: 'User Metadata' })
        .or(page.getByRole('tab', { name: 'User Metadata' }))
        .first()
        .click();
      // The UI renders user metadata (markdown) in sandboxed frames: read the text of every frame.
      const shown = await eventually(
        async () => {
          const texts = await Promise.all(
            page.frames().map((frame) =>
              frame
                .locator('body')
                .innerText()
                .catch(() => ''),
            ),
          );
          const all = texts.join('\n');
          const hasSummary = all.includes(`SELL 0.5 ETHUSDT reduce-only · plan ${plan.plan_id}`);
          const hasDetails =
            /blocked: reconcile_required_qty_mismatch, exchange 2 vs ledger 1, tolerance 0\.001; next re-check/.test(
              all,
            );
          const hasNextStep = all.includes(`permit-chain reconcile ETHUSDT --by NAME`);
          return hasSummary && hasDetails && hasNextStep ? all : undefined;
        },
        20_000,
        'the summary and current details in the Web UI',
      );
      await page.screenshot({ path: join(ARTIFACTS, 'web-ui-blocked-plan.png') });
      expect(shown).toContain(`SELL 0.5 ETHUSDT reduce-only · plan ${plan.plan_id}`);
      // The details end with what to do, ready to copy.
      expect(shown).toContain(`permit-chain retry ${plan.plan_id}`);

      // Each layer is its own step in the Event History, with its summary, though it ran as a local activity.
      await page.goto(`${inject('temporalUiUrl')}/namespaces/default/workflows/${workflowId}`);
      await page
        .getByRole('link', { name: 'Event History' })
        .or(page.getByRole('tab', { name: 'Event History' }))
        .first()
        .click();
      const history = await eventually(
        async () => {
          const text = await page.locator('body').innerText();
          const steps = ['Governor: admit plan, its turn, a permit', 'Apply: publish plan'];
          return [...steps, 'P3.3: position check'].every((step) => text.includes(step)) ? text : undefined;
        },
        20_000,
        'the layers and their summaries in the Event History',
      );
      await page.screenshot({ path: join(ARTIFACTS, 'web-ui-event-history.png'), fullPage: true });
      expect(history).toContain('checkPosition');
      await page.close();

      await h.redis.hset(h.keys.position('ETHUSDT'), 'ledger_amount', '2');
      await handle.signal('retry', {});
      expect((await handle.result()).outcome).toBe('executed');
    });
  });
});
