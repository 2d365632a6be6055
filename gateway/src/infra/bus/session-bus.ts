/**
 * What gateway instances tell each other about sessions: events stored (so
 * followers on any instance read them), cancellations (so the owner stops
 * the job), and work queued (so dispatchers look now rather than at their
 * next poll); and API keys revoked (so no instance keeps trusting a cached
 * key). PostgreSQL LISTEN/NOTIFY between replicas
 * (pg-session-bus.ts); in process with SQLite, where there is
 * one. Delivery is best effort: followers and dispatchers also poll slowly,
 * so a notification lost to a reconnect costs latency, not correctness.
 */
export interface SessionBus {
  /** The events of these sessions are stored up to these sequences. */
  publishStored(upTo: ReadonlyMap<string, number>): void;
  publishCancel(sessionId: string): void;
  publishQueued(): void;
  publishKeyRevoked(keyId: string): void;
  onStored(sessionId: string, listener: (upTo: number) => void): () => void;
  onCancel(listener: (sessionId: string) => void): () => void;
  onQueued(listener: () => void): () => void;
  /** A key was revoked; null when notifications may have been missed (so any key may have been). */
  onKeyRevoked(listener: (keyId: string | null) => void): () => void;
  close(): Promise<void>;
}

/** Listener bookkeeping shared by the bus implementations. */
export class BusListeners {
  private readonly stored = new Map<string, Set<(upTo: number) => void>>();
  private readonly cancels = new Set<(sessionId: string) => void>();
  private readonly queued = new Set<() => void>();
  private readonly revoked = new Set<(keyId: string | null) => void>();

  onStored(sessionId: string, listener: (upTo: number) => void): () => void {
    let set = this.stored.get(sessionId);
    if (!set) this.stored.set(sessionId, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.stored.delete(sessionId);
    };
  }

  onCancel(listener: (sessionId: string) => void): () => void {
    this.cancels.add(listener);
    return () => this.cancels.delete(listener);
  }

  onQueued(listener: () => void): () => void {
    this.queued.add(listener);
    return () => this.queued.delete(listener);
  }

  onKeyRevoked(listener: (keyId: string | null) => void): () => void {
    this.revoked.add(listener);
    return () => this.revoked.delete(listener);
  }

  deliverKeyRevoked(keyId: string | null): void {
    for (const listener of this.revoked) listener(keyId);
  }

  deliverStored(sessionId: string, upTo: number): void {
    for (const listener of this.stored.get(sessionId) ?? []) listener(upTo);
  }

  deliverCancel(sessionId: string): void {
    for (const listener of this.cancels) listener(sessionId);
  }

  deliverQueued(): void {
    for (const listener of this.queued) listener();
  }

  /** Whether anyone here follows this session from the store. */
  follows(sessionId: string): boolean {
    return this.stored.has(sessionId);
  }
}

/** The subscribing half every bus shares: listeners kept here, delivered by the transport. */
export abstract class ListeningSessionBus implements SessionBus {
  protected readonly listeners = new BusListeners();

  abstract publishStored(upTo: ReadonlyMap<string, number>): void;
  abstract publishCancel(sessionId: string): void;
  abstract publishQueued(): void;
  abstract publishKeyRevoked(keyId: string): void;
  abstract close(): Promise<void>;

  onStored(sessionId: string, listener: (upTo: number) => void): () => void {
    return this.listeners.onStored(sessionId, listener);
  }

  onCancel(listener: (sessionId: string) => void): () => void {
    return this.listeners.onCancel(listener);
  }

  onQueued(listener: () => void): () => void {
    return this.listeners.onQueued(listener);
  }

  onKeyRevoked(listener: (keyId: string | null) => void): () => void {
    return this.listeners.onKeyRevoked(listener);
  }
}

/** One process (SQLite): the bus is a function call, after the current turn. */
export class LocalSessionBus extends ListeningSessionBus {
  publishStored(upTo: ReadonlyMap<string, number>): void {
    const entries = [...upTo];
    queueMicrotask(() => {
      for (const [sessionId, sequence] of entries) this.listeners.deliverStored(sessionId, sequence);
    });
  }

  publishCancel(sessionId: string): void {
    queueMicrotask(() => this.listeners.deliverCancel(sessionId));
  }

  publishQueued(): void {
    queueMicrotask(() => this.listeners.deliverQueued());
  }

  publishKeyRevoked(keyId: string): void {
    this.listeners.deliverKeyRevoked(keyId);
  }

  async close(): Promise<void> {}
}
