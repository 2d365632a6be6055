import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { dashboardsDir } from './observability-files.js';

export interface DatasourceRef {
  type?: string;
  uid?: string;
}

export interface Target {
  refId?: string;
  expr?: string;
  datasource?: DatasourceRef;
}

export interface Panel {
  id?: number;
  type?: string;
  title?: string;
  datasource?: DatasourceRef;
  targets?: Target[];
  /** Panels inside a collapsed row. */
  panels?: Panel[];
}

export interface Dashboard {
  uid?: string;
  title?: string;
  schemaVersion?: number;
  panels?: Panel[];
  templating?: { list?: { name: string; type: string; datasource?: DatasourceRef; query?: unknown }[] };
}

export interface DashboardFile {
  file: string;
  /** The parse error, when the file is not JSON. */
  error?: string;
  dashboard?: Dashboard;
}

/** Every grafana/dashboards/*.json, parsed (or with its parse error). */
export function loadDashboards(): DashboardFile[] {
  return readdirSync(dashboardsDir)
    .filter((name) => name.endsWith('.json'))
    .sort()
    .map((file) => {
      try {
        return { file, dashboard: JSON.parse(readFileSync(join(dashboardsDir, file), 'utf8')) as Dashboard };
      } catch (error) {
        return { file, error: (error as Error).message };
      }
    });
}

/** A dashboard's panels, those inside collapsed rows included; rows themselves hold no query. */
export function panelsOf(dashboard: Dashboard): Panel[] {
  const flat: Panel[] = [];
  for (const panel of dashboard.panels ?? []) {
    if (panel.type === 'row') flat.push(...(panel.panels ?? []));
    else flat.push(panel);
  }
  return flat;
}

export interface PanelQuery {
  /** "<dashboard uid> / <panel title> / <refId>": how allow-lists and failures name a query. */
  key: string;
  dashboard: string;
  panel: string;
  refId: string;
  expr: string;
}

/** Every query of every panel of every dashboard. */
export function panelQueries(dashboards = loadDashboards()): PanelQuery[] {
  const queries: PanelQuery[] = [];
  for (const { dashboard } of dashboards) {
    if (!dashboard) continue;
    for (const panel of panelsOf(dashboard)) {
      for (const target of panel.targets ?? []) {
        if (!target.expr) continue;
        const dashboardUid = dashboard.uid ?? '?';
        const panelTitle = panel.title ?? '?';
        const refId = target.refId ?? '?';
        queries.push({ key: `${dashboardUid} / ${panelTitle} / ${refId}`, dashboard: dashboardUid, panel: panelTitle, refId, expr: target.expr });
      }
    }
  }
  return queries;
}

export interface VariableQuery {
  /** "<dashboard uid> / $<name>" */
  key: string;
  /** PromQL that has a series for each value the variable offers. */
  expr: string;
}

/**
 * The template variables filled by `label_values(selector, label)`, as
 * PromQL: `count by (label) (selector)` has one series per value offered.
 */
export function variableQueries(dashboards = loadDashboards()): VariableQuery[] {
  const queries: VariableQuery[] = [];
  for (const { dashboard } of dashboards) {
    for (const variable of dashboard?.templating?.list ?? []) {
      if (variable.type !== 'query') continue;
      const query = variable.query;
      const text = typeof query === 'string' ? query : String((query as { query?: unknown } | undefined)?.query ?? '');
      const match = /^label_values\((.+),\s*(\w+)\)$/.exec(text.trim());
      const key = `${dashboard!.uid} / $${variable.name}`;
      queries.push({ key, expr: match ? `count by (${match[2]}) (${match[1]})` : `unsupported variable query: ${text}` });
    }
  }
  return queries;
}

/** What Grafana puts in place of its interval variables when it sends a query. */
const GRAFANA_INTERVALS: Record<string, string> = { __rate_interval: '1m', __interval: '1m', __range: '1h' };

/**
 * A panel query as Grafana would send it: interval variables become fixed
 * durations, template variables (`$task`, `${task}`, `${task:regex}`,
 * `[[task]]`) become `.*`, "All" as the dashboards define it.
 */
export function toPromQL(expr: string): string {
  return expr.replace(/\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]/g, (_whole, braced?: string, bare?: string, bracketed?: string) => {
    const name = (braced ?? bare ?? bracketed)!;
    return GRAFANA_INTERVALS[name] ?? '.*';
  });
}
