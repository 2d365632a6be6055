import type { Knex } from 'knex';
import type { GatewayMetrics } from '../metrics.js';

const OPERATIONS: Record<string, string> = {
  select: 'select',
  first: 'select',
  pluck: 'select',
  insert: 'insert',
  update: 'update',
  del: 'delete',
  delete: 'delete',
};

interface QueryEvent {
  __knexQueryUid: string;
  method?: string;
}

/** Time every query and count failures, from knex's own query events. */
export function instrumentDatabase(knex: Knex, metrics: GatewayMetrics): void {
  const started = new Map<string, number>();
  const finish = (query: QueryEvent, failed: boolean) => {
    const at = started.get(query.__knexQueryUid);
    started.delete(query.__knexQueryUid);
    if (at === undefined) return;
    metrics.dbDuration.observe({ operation: OPERATIONS[query.method ?? ''] ?? 'other' }, (performance.now() - at) / 1000);
    if (failed) metrics.dbErrors.inc();
  };
  knex.on('query', (query: QueryEvent) => started.set(query.__knexQueryUid, performance.now()));
  knex.on('query-response', (_response: unknown, query: QueryEvent) => finish(query, false));
  knex.on('query-error', (_error: unknown, query: QueryEvent) => finish(query, true));
}
