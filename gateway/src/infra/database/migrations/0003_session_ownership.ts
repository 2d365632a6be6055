import type { Knex } from 'knex';

/**
 * Sessions owned by gateway instances under a lease, a durable queue of
 * background work, and the worker's event sequence beside each stored event
 * (docs/adr/0022, 0023). Frozen once merged: change the schema with a new migration.
 */

// jsonb on PostgreSQL; text on SQLite (see 0001). Local on purpose.
const json = (knex: Knex, table: Knex.AlterTableBuilder | Knex.CreateTableBuilder, name: string) =>
  knex.client.dialect === 'postgresql' ? table.jsonb(name) : table.text(name);

const timestamptz = (table: Knex.AlterTableBuilder | Knex.CreateTableBuilder, name: string) => table.timestamp(name, { useTz: true });

export async function up(knex: Knex): Promise<void> {
  // One row per gateway process that ever ran; its heartbeat is its lease.
  await knex.schema.createTable('gateway_instances', (table) => {
    table.text('id').primary();
    table.text('hostname').notNullable();
    table.integer('pid').notNullable();
    timestamptz(table, 'started_at').notNullable();
    timestamptz(table, 'heartbeat_at').notNullable();
    timestamptz(table, 'stopped_at').nullable();
  });

  await knex.schema.alterTable('sessions', (table) => {
    // The instance relaying the job; null while it waits in the queue (or once ended).
    table.text('owner_instance').nullable();
    // The job to run, as accepted (the worker request's source); cleared when the session ends.
    json(knex, table, 'request').nullable();
    table.text('correlation_id').nullable();
    // A queued session not dispatched by then fails (QUEUE_TIMEOUT_SECONDS).
    timestamptz(table, 'queue_deadline_at').nullable();
    // Set at dispatch: when the job must have ended, whoever relays it.
    timestamptz(table, 'deadline_at').nullable();
    timestamptz(table, 'cancel_requested_at').nullable();
    table.integer('dispatch_count').notNullable().defaultTo(0);
    // The last event sequence before the current dispatch: its worker events come after it.
    table.integer('dispatch_sequence').notNullable().defaultTo(0);
    table.index(['status', 'owner_instance', 'created_at'], 'sessions_queue_index');
    table.index(['owner_instance'], 'sessions_owner_instance_index');
  });

  await knex.schema.alterTable('session_events', (table) => {
    // The worker's own event sequence (InferEvent.sequence), so a new owner
    // reattaches after the last one stored; null for the gateway's own events.
    table.integer('worker_sequence').nullable();
  });

  await knex.schema.alterTable('batches', (table) => {
    // Items of the batch relayed at once, across every instance.
    table.integer('concurrency').nullable();
    timestamptz(table, 'cancel_requested_at').nullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('batches', (table) => {
    table.dropColumn('cancel_requested_at');
    table.dropColumn('concurrency');
  });
  await knex.schema.alterTable('session_events', (table) => table.dropColumn('worker_sequence'));
  await knex.schema.alterTable('sessions', (table) => {
    table.dropIndex(['owner_instance'], 'sessions_owner_instance_index');
    table.dropIndex(['status', 'owner_instance', 'created_at'], 'sessions_queue_index');
    for (const column of ['dispatch_sequence', 'dispatch_count', 'cancel_requested_at', 'deadline_at', 'queue_deadline_at', 'correlation_id', 'request', 'owner_instance']) {
      table.dropColumn(column);
    }
  });
  await knex.schema.dropTable('gateway_instances');
}
