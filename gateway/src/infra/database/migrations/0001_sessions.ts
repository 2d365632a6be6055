import type { Knex } from 'knex';

/**
 * Sessions (one per job sent to a worker), their events, and batches.
 * Frozen once merged: change the schema with a new migration.
 */

// jsonb on PostgreSQL; text on SQLite, where a `json` column would get
// NUMERIC affinity. Local to this file so that later edits elsewhere cannot
// change what this migration does.
const json = (knex: Knex, table: Knex.CreateTableBuilder, name: string) =>
  knex.client.dialect === 'postgresql' ? table.jsonb(name) : table.text(name);

const timestamptz = (table: Knex.CreateTableBuilder, name: string) => table.timestamp(name, { useTz: true });

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('batches', (table) => {
    table.text('id').primary();
    table.text('owner').notNullable();
    table.text('status').notNullable();
    table.integer('item_count').notNullable();
    timestamptz(table, 'created_at').notNullable();
    timestamptz(table, 'finished_at').nullable();
  });

  await knex.schema.createTable('sessions', (table) => {
    table.text('id').primary();
    table.text('owner').notNullable();
    table.text('task').notNullable();
    table.text('model').nullable();
    table.text('device_id').nullable();
    table.text('worker_id').nullable();
    table.text('status').notNullable();
    json(knex, table, 'parameters').notNullable();
    json(knex, table, 'result').nullable();
    table.text('error_code').nullable();
    table.text('error_message').nullable();
    table.text('batch_id').nullable().references('id').inTable('batches');
    timestamptz(table, 'created_at').notNullable();
    timestamptz(table, 'started_at').nullable();
    timestamptz(table, 'finished_at').nullable();
    table.index(['owner', 'created_at'], 'sessions_owner_created_at_index');
    table.index(['status'], 'sessions_status_index');
    table.index(['batch_id'], 'sessions_batch_id_index');
  });

  await knex.schema.createTable('session_events', (table) => {
    table.text('session_id').notNullable().references('id').inTable('sessions').onDelete('CASCADE');
    table.integer('sequence').notNullable();
    table.text('type').notNullable();
    json(knex, table, 'data').notNullable();
    timestamptz(table, 'created_at').notNullable();
    table.primary(['session_id', 'sequence']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('session_events');
  await knex.schema.dropTable('sessions');
  await knex.schema.dropTable('batches');
}
