import { defineRoute, type RouteSpec } from '../../http/route.js';
import { DeviceListSchema } from './device-schemas.js';
import type { DeviceService } from './device-service.js';

export function deviceRoutes(devices: DeviceService): RouteSpec[] {
  return [
    defineRoute({
      method: 'get',
      path: '/api/device/list',
      operationId: 'listDevices',
      summary: 'List the devices of every worker',
      description:
        'Asks every worker in parallel. Workers that fail or miss the deadline are named in `missingWorkers` ' +
        'and `partial` is true; when no worker answers the response is 503.',
      tags: ['Devices'],
      auth: { scope: null },
      responses: {
        200: { description: 'Devices of the workers that answered.', schema: DeviceListSchema },
        503: { description: 'No worker answered.' },
      },
      handler: async ({ context }) => ({ status: 200, body: await devices.listDevices(context.correlationId) }),
    }),
  ];
}
