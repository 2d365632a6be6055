"""The worker engine: placement, queues, batching, cancellation, memory."""
