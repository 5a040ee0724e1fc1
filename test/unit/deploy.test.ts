import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../../cli/servers';

const ALERTS = join(PROJECT_ROOT, 'deploy', 'prometheus', 'alerts.yml');
const ALERT_CASES = join(PROJECT_ROOT, 'deploy', 'prometheus', 'alerts.test.yml');
const DASHBOARD = join(PROJECT_ROOT, 'deploy', 'grafana', 'permit-chain.json');

/** Debian's promtool (package `prometheus`, installed by `scripts/setup.sh --tests`). */
function promtool(...args: string[]) {
  const run = spawnSync('promtool', args, { encoding: 'utf8' });
  if (run.error) throw new Error(`promtool: ${run.error.message} (bash scripts/setup.sh --tests installs it)`);
  return { code: run.status, output: `${run.stdout}${run.stderr}` };
}

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  targets?: { expr: string; datasource?: { uid: string } }[];
}

describe('deploy/prometheus/alerts.yml', () => {
  it('is valid for promtool', () => {
    const check = promtool('check', 'rules', ALERTS);
    expect(check.output).toContain('SUCCESS: 13 rules found');
    expect(check.code).toBe(0);
  });

  it('fires each tested alert on its series and not before its `for` (alerts.test.yml)', () => {
    const test = promtool('test', 'rules', ALERT_CASES);
    expect(test.output).toContain('SUCCESS');
    expect(test.code).toBe(0);
  });
});

describe('deploy/grafana/permit-chain.json', () => {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
    uid: string;
    templating: { list: { name: string; type: string; query: string }[] };
    panels: Panel[];
  };

  it('is a dashboard over a chosen Prometheus data source, every panel with a query', () => {
    expect(dashboard.uid).toBe('permit-chain');
    expect(dashboard.templating.list).toContainEqual(
      expect.objectContaining({ name: 'datasource', type: 'datasource', query: 'prometheus' }),
    );
    const panels = dashboard.panels.filter((panel) => panel.type !== 'row');
    expect(new Set(dashboard.panels.map((panel) => panel.id)).size).toBe(dashboard.panels.length);
    for (const panel of panels) {
      expect(panel.datasource?.uid, panel.title).toBe('${datasource}');
      expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
      for (const target of panel.targets ?? []) expect(target.expr.trim(), panel.title).not.toBe('');
    }
  });
});
