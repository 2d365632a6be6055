import type { Principal } from '../auth/principal.js';
import type { JobSpec, SessionService } from '../sessions/session-service.js';
import { succeeded } from '../sessions/session-streaming.js';
import type { Session } from '../sessions/session-types.js';
import type { EnhanceRequest, OutputSource, UpscaleRequest } from './postprocessing-schemas.js';

/**
 * Upscale and enhance as sessions run at once: the input is an uploaded
 * image or an output of one of the caller's sessions (any, for admins); the
 * finished session lists the new file.
 */
export class PostprocessingService {
  constructor(private readonly sessions: SessionService) {}

  /** The source must be an output of the caller's own session (or any, for admins). */
  private async sourcePath(source: OutputSource | undefined, principal: Principal): Promise<string> {
    if (!source) return '';
    await this.sessions.get(source.sessionId, principal);
    return `${source.sessionId}/${source.file}`;
  }

  private async run(spec: JobSpec, principal: Principal, correlationId: string): Promise<Session> {
    const running = await this.sessions.start(spec, principal, { correlationId });
    return succeeded(running.done);
  }

  async upscale(request: UpscaleRequest, principal: Principal, correlationId: string): Promise<Session> {
    const source = await this.sourcePath(request.source, principal);
    const input = { ...(request.image ? { image: request.image } : {}), sourceOutput: source, ...(request.scale ? { scale: request.scale } : {}) };
    const parameters = { source: request.source ?? { uploadedBytes: Buffer.byteLength(request.image!, 'base64') }, scale: request.scale ?? null };
    const model = request.model ?? null;
    return this.run(
      { task: 'upscale', model, parameters, job: { kind: 'postprocess', task: 'upscale', model: request.model ?? '', ...input } },
      principal,
      correlationId,
    );
  }

  async enhance(request: EnhanceRequest, principal: Principal, correlationId: string): Promise<Session> {
    const source = await this.sourcePath(request.source, principal);
    const adjustments = Object.fromEntries(Object.entries(request.adjustments).filter(([, v]) => v !== undefined)) as Record<string, number>;
    const input = { ...(request.image ? { image: request.image } : {}), sourceOutput: source, adjustments };
    const parameters = { source: request.source ?? { uploadedBytes: Buffer.byteLength(request.image!, 'base64') }, adjustments };
    return this.run(
      { task: 'enhance', model: null, parameters, job: { kind: 'postprocess', task: 'enhance', model: '', ...input } },
      principal,
      correlationId,
    );
  }
}
