import type { Knex } from 'knex';

/**
 * API keys and the audit log, for the security work (schema only for now).
 * Frozen once merged: change the schema with a new migration.
 */

// jsonb on PostgreSQL; text on SQLite (see 0001). Local on purpose.
const json = (knex: Knex, table: Knex.CreateTableBuilder, name: string) =>
  knex.client.dialect === 'postgresql' ? table.jsonb(name) : table.text(name);

const timestamptz = (table: Knex.CreateTableBuilder, name: string) => table.timestamp(name, { useTz: true });

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('api_keys', (table) => {
    table.text('id').primary();
    table.text('name').notNullable();
    // The visible start of the key, to find its row; unique so lookups are exact.
    table.text('prefix').notNullable().unique({ indexName: 'api_keys_prefix_unique' });
    table.text('key_hash').notNullable();
    json(knex, table, 'scopes').notNullable();
    table.text('created_by').notNullable();
    timestamptz(table, 'created_at').notNullable();
    timestamptz(table, 'expires_at').nullable();
    timestamptz(table, 'last_used_at').nullable();
    timestamptz(table, 'revoked_at').nullable();
  });

  await knex.schema.createTable('audit_log', (table) => {
    // bigint on PostgreSQL: node-postgres returns it as a string.
    table.bigIncrements('id').primary();
    timestamptz(table, 'at').notNullable();
    table.text('actor').notNullable();
    table.text('action').notNullable();
    table.text('target').nullable();
    table.text('client_address').nullable();
    table.text('outcome').notNullable();
    json(knex, table, 'details').nullable();
    table.index(['at'], 'audit_log_at_index');
    table.index(['actor'], 'audit_log_actor_index');
    table.index(['action'], 'audit_log_action_index');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('audit_log');
  await knex.schema.dropTable('api_keys');
}
