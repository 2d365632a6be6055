import { defineRpc, type RpcSpec } from '../../grpc/rpc.js';
import type { ClearMemoryBody } from './memory-schemas.js';
import type { MemoryService } from './memory-service.js';
import type { z } from 'zod';

/** The memory rpcs over the same MemoryService as the REST routes. */
export function memoryRpcs(memory: MemoryService): RpcSpec[] {
  return [
    defineRpc({
      name: 'GetMemoryStatus',
      operationId: 'memoryStatus',
      input: (message) => ({ query: message }),
      unary: ({ query, context }) => memory.status(query.deviceId as string | undefined, context.correlationId),
    }),
    defineRpc({
      name: 'ClearMemory',
      operationId: 'clearMemory',
      input: (message) => ({ body: message }),
      unary: ({ body, context }) => memory.clear(body as z.output<typeof ClearMemoryBody>, context.correlationId),
    }),
  ];
}
