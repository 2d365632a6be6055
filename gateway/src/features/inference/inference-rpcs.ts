import { defineRpc, type RpcSpec, type RpcStream } from '../../grpc/rpc.js';
import { toStruct } from '../../grpc/struct.js';
import type { AuditService } from '../audit/audit-service.js';
import { presentSession } from '../sessions/session-schemas.js';
import type { SessionService } from '../sessions/session-service.js';
import { relaySessionEvents, succeeded, type SessionEventSink } from '../sessions/session-streaming.js';
import type { Session } from '../sessions/session-types.js';
import type { StreamAdmission } from '../sessions/stream-admission.js';
import { cancelSession } from './cancel-session.js';
import { inferenceBody, inferenceField, sessionMessage } from './inference-message.js';
import type { InferenceRequest } from './inference-schemas.js';
import type { InferenceService } from './inference-service.js';

/** A gRPC server stream as a follower of session events: each event a SessionEvent message. */
function eventSink(out: RpcStream, release: () => void): SessionEventSink {
  const closers: (() => void)[] = [release];
  const close = () => {
    for (const fn of closers.splice(0)) fn();
  };
  out.onCancel(close);
  return {
    send: (event) => out.write({ sequence: event.sequence ?? 0, type: event.type, data: toStruct(event.data as Record<string, unknown>) }),
    end: () => {
      out.end();
      close();
    },
    onClose: (fn) => {
      if (closers.length === 0) fn();
      else closers.push(fn);
    },
  };
}

/** The inference and session rpcs over the same services as the REST routes, sessions and streams included. */
export function inferenceRpcs(deps: { inference: InferenceService; sessions: SessionService; audit: AuditService; streams: StreamAdmission }): RpcSpec[] {
  const { inference, sessions, streams } = deps;
  const request = (message: Record<string, unknown>) => ({ body: inferenceBody(message) });
  const present = async (session: Session) =>
    sessionMessage(presentSession(session, session.status === 'queued' ? await sessions.queuePosition(session.id) : null));
  return [
    defineRpc({
      name: 'GetInferenceCapabilities',
      operationId: 'inferenceCapabilities',
      unary: ({ context }) => inference.capabilities(context.correlationId),
    }),
    defineRpc({
      name: 'ValidateInference',
      operationId: 'validateInference',
      input: request,
      field: inferenceField,
      unary: ({ body, context }) => inference.validate(body as InferenceRequest, context.correlationId),
    }),
    defineRpc({
      name: 'Execute',
      operationId: 'executeInference',
      input: request,
      field: inferenceField,
      unary: async ({ body, context }) => {
        const running = await inference.start(body as InferenceRequest, context.principal!, context.correlationId);
        return sessionMessage(presentSession(await succeeded(running.done)));
      },
    }),
    defineRpc({
      name: 'ExecuteStream',
      operationId: 'executeInference',
      input: request,
      field: inferenceField,
      stream: async ({ body, context }, out) => {
        // The stream slot first: a refused stream must not leave a job running.
        const release = streams.admit(context.principal!.id);
        try {
          const running = await inference.start(body as InferenceRequest, context.principal!, context.correlationId);
          await relaySessionEvents(sessions, running.session, eventSink(out, release), { after: 0, cancelOnDisconnect: true });
        } catch (error) {
          release();
          throw error;
        }
      },
    }),
    defineRpc({
      name: 'CreateSession',
      operationId: 'createSession',
      input: request,
      field: inferenceField,
      unary: async ({ body, context }) => {
        const { session, position } = await inference.enqueue(body as InferenceRequest, context.principal!, context.correlationId);
        return sessionMessage(presentSession(session, position));
      },
    }),
    defineRpc({
      name: 'GetSession',
      operationId: 'getSession',
      input: (message) => ({ params: { id: message.id } }),
      unary: async ({ params, context }) => present(await sessions.get(params.id as string, context.principal!)),
    }),
    defineRpc({
      name: 'ListSessions',
      operationId: 'listSessions',
      input: (message) => ({ query: message }),
      unary: async ({ query, context }) => {
        const { limit, offset } = query as { limit: number; offset: number };
        const page = await sessions.list(context.principal!, query as Parameters<SessionService['list']>[1]);
        return { items: page.items.map((s) => sessionMessage(presentSession(s))), total: page.total, limit, offset };
      },
    }),
    defineRpc({
      name: 'CancelSession',
      operationId: 'cancelSession',
      input: (message) => ({ params: { id: message.id } }),
      unary: async ({ params, context }) =>
        sessionMessage(presentSession(await cancelSession(deps, params.id as string, context.principal!, context.correlationId, context.clientAddress))),
    }),
    defineRpc({
      name: 'WatchSession',
      operationId: 'followSession',
      input: (message) => ({
        params: { id: message.id },
        query: message.afterSequence !== undefined ? { lastEventId: message.afterSequence } : {},
      }),
      field: (restField) => (restField === 'query.lastEventId' ? 'after_sequence' : restField.replace(/^params\./, '')),
      stream: async ({ params, query, context }, out) => {
        const session = await sessions.get(params.id as string, context.principal!);
        const release = streams.admit(context.principal!.id);
        try {
          const after = (query.lastEventId as number | undefined) ?? 0;
          await relaySessionEvents(sessions, session, eventSink(out, release), { after, cancelOnDisconnect: false });
        } catch (error) {
          release();
          throw error;
        }
      },
    }),
  ];
}
