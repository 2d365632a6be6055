import { defineRpc, type RpcSpec } from '../../grpc/rpc.js';
import type { DeviceService } from './device-service.js';

/** The device rpcs: the REST device routes' operations over gRPC (grpc/rpc.ts). */
export function deviceRpcs(devices: DeviceService): RpcSpec[] {
  const params = (message: Record<string, unknown>) => ({ params: { deviceId: message.deviceId } });
  return [
    defineRpc({ name: 'ListDevices', operationId: 'listDevices', unary: ({ context }) => devices.listDevices(context.correlationId) }),
    defineRpc({
      name: 'GetDevice',
      operationId: 'getDevice',
      input: params,
      unary: ({ params, context }) => devices.device(params.deviceId as string, context.correlationId),
    }),
    defineRpc({
      name: 'GetDeviceStatus',
      operationId: 'deviceStatus',
      input: params,
      unary: ({ params, context }) => devices.status(params.deviceId as string, context.correlationId),
    }),
    defineRpc({
      name: 'GetDeviceCapabilities',
      operationId: 'deviceCapabilities',
      input: params,
      unary: ({ params, context }) => devices.capabilities(params.deviceId as string, context.correlationId),
    }),
  ];
}
