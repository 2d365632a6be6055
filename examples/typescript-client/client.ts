/**
 * A typed client of the gateway's REST API: types generated from its
 * OpenAPI document by openapi-typescript, requests sent by openapi-fetch.
 *
 *   npx openapi-typescript http://localhost:8080/api-docs/openapi.json -o api.d.ts
 *
 * Every path, body and answer below is checked by the compiler against the
 * document (`strict`); gateway/test/contract/typed-client.test.ts generates
 * the types from the running gateway, compiles this file and runs it.
 */
import createClient from 'openapi-fetch';
import type { paths } from './api.js';

export async function embedAndList(baseUrl: string, token: string) {
  const client = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });

  const devices = await client.GET('/api/device/list');
  if (devices.error) throw new Error(`device list: ${devices.error.detail}`);

  const job = await client.POST('/api/inference/execute', {
    body: { task: 'text-embedding', model: 'minilm', parameters: { texts: ['a lighthouse at dusk'], normalize: true } },
  });
  if (job.error) throw new Error(`embedding: ${job.error.detail}`);

  // An error answer is typed too: problem+json with the field that was wrong.
  const refused = await client.POST('/api/inference/execute', {
    body: { task: 'text-embedding', model: 'minilm', parameters: { texts: [] } },
  });

  return {
    deviceIds: devices.data.devices.map((device) => device.id),
    sessionStatus: job.data.status,
    dimensions: (job.data.result?.embeddings as number[][] | undefined)?.[0]?.length ?? 0,
    refusedStatus: refused.response.status,
    refusedFields: refused.error?.errors?.map((problem) => problem.field) ?? [],
  };
}
