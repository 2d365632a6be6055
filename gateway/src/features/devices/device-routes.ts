import { defineRoute, type RouteSpec } from '../../http/route.js';
import { DeviceCapabilitiesSchema, DeviceIdParams, DeviceListSchema, DeviceSchema, DeviceStatusSchema } from './device-schemas.js';
import type { DeviceService } from './device-service.js';
import { NEEDS_CREDENTIAL } from '../auth/scopes.js';

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
      auth: NEEDS_CREDENTIAL,
      responses: {
        200: { description: 'Devices of the workers that answered.', schema: DeviceListSchema },
        503: { description: 'No worker answered.' },
      },
      handler: async ({ context }) => ({ status: 200, body: await devices.listDevices(context.correlationId) }),
    }),
    defineRoute({
      method: 'get',
      path: '/api/device/{deviceId}',
      operationId: 'getDevice',
      summary: 'One device',
      tags: ['Devices'],
      auth: NEEDS_CREDENTIAL,
      request: { params: DeviceIdParams },
      responses: { 200: { description: 'The device.', schema: DeviceSchema }, 404: { description: 'Unknown device.' } },
      handler: async ({ params, context }) => ({ status: 200, body: await devices.device(params.deviceId, context.correlationId) }),
    }),
    defineRoute({
      method: 'get',
      path: '/api/device/{deviceId}/status',
      operationId: 'deviceStatus',
      summary: 'Live utilization, memory, running and queued jobs, and resident models of a device',
      tags: ['Devices'],
      auth: NEEDS_CREDENTIAL,
      request: { params: DeviceIdParams },
      responses: { 200: { description: 'Live status.', schema: DeviceStatusSchema }, 404: { description: 'Unknown device.' } },
      handler: async ({ params, context }) => ({ status: 200, body: await devices.status(params.deviceId, context.correlationId) }),
    }),
    defineRoute({
      method: 'get',
      path: '/api/device/{deviceId}/capabilities',
      operationId: 'deviceCapabilities',
      summary: 'Precisions a device supports, tasks it can run, and its memory',
      tags: ['Devices'],
      auth: NEEDS_CREDENTIAL,
      request: { params: DeviceIdParams },
      responses: { 200: { description: 'Capabilities.', schema: DeviceCapabilitiesSchema }, 404: { description: 'Unknown device.' } },
      handler: async ({ params, context }) => ({
        status: 200,
        body: await devices.capabilities(params.deviceId, context.correlationId),
      }),
    }),
  ];
}
