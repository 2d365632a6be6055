import { defineRpc, type RpcSpec } from '../../grpc/rpc.js';

export function authRpcs(): RpcSpec[] {
  return [
    defineRpc({
      name: 'WhoAmI',
      operationId: 'whoAmI',
      unary: async ({ context }) => {
        const { id, subject, method, scopes } = context.principal!;
        return { id, subject, method, scopes };
      },
    }),
  ];
}
