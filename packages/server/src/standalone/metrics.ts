import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { MessageMetrics } from '../core/messages.ts';
import type { HttpMetrics } from '../http/app.ts';
import type { SocketMetrics } from '../ws/socket-server.ts';

/** Prometheus metrics for /metrics: requests, envelopes stored and delivered, queue depth, sockets. */
export class ServerMetrics implements HttpMetrics, MessageMetrics, SocketMetrics {
  readonly registry = new Registry();
  private readonly requests = new Counter({
    name: 'hush_http_requests_total',
    help: 'HTTP requests by method, route pattern and status',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [this.registry],
  });
  private readonly duration = new Histogram({
    name: 'hush_http_request_duration_seconds',
    help: 'HTTP request duration by route pattern',
    labelNames: ['route'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [this.registry],
  });
  private readonly stored = new Counter({
    name: 'hush_envelopes_stored_total',
    help: 'Envelopes stored durably',
    registers: [this.registry],
  });
  private readonly delivered = new Counter({
    name: 'hush_envelopes_delivered_total',
    help: 'Envelopes acknowledged by their device (and deleted)',
    registers: [this.registry],
  });
  private readonly sockets = new Gauge({
    name: 'hush_websockets_open',
    help: 'Authenticated WebSocket connections open',
    registers: [this.registry],
  });

  constructor(queueDepth: () => Promise<number>) {
    collectDefaultMetrics({ register: this.registry, prefix: 'hush_' });
    new Gauge({
      name: 'hush_queued_envelopes',
      help: 'Envelopes waiting in device queues',
      registers: [this.registry],
      async collect() {
        this.set(await queueDepth());
      },
    });
  }

  request(method: string, route: string, status: number, seconds: number): void {
    this.requests.inc({ method, route, status: String(status) });
    this.duration.observe({ route }, seconds);
  }

  async render() {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  envelopesStored(count: number): void {
    this.stored.inc(count);
  }

  envelopesDelivered(count: number): void {
    this.delivered.inc(count);
  }

  socketOpened(): void {
    this.sockets.inc();
  }

  socketClosed(): void {
    this.sockets.dec();
  }
}
