import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import { setLogLevel } from '../../src/logger.ts';
import { eventually } from '../support/batches.ts';
import { call, expectEnvelope } from '../support/http.ts';
import { createTestDatabase, startTestService, type TestService } from '../support/service.ts';

const UNAVAILABLE_MSG = 'database unavailable: answering 503 until it is back';
const BACK_MSG = 'database reachable again';

/**
 * A TCP proxy between the service and its Postgres: cutting it (no listener, every open
 * connection dropped) is a database outage as the service sees it; listening again on the same
 * port ends it.
 */
class TcpProxy {
  private server: net.Server | null = null;
  private readonly sockets = new Set<net.Socket>();
  port = 0;

  private readonly host: string;
  private readonly targetPort: number;

  constructor(host: string, targetPort: number) {
    this.host = host;
    this.targetPort = targetPort;
  }

  /** Accept connections but never forward a byte: a database that hangs rather than refuses. */
  hang = false;

  private readonly handle = (client: net.Socket) => {
    if (this.hang) {
      this.sockets.add(client);
      client.on('error', () => {});
      client.on('close', () => this.sockets.delete(client));
      return;
    }
    const upstream = net.connect(this.targetPort, this.host);
    this.sockets.add(client);
    this.sockets.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', () => {
      this.sockets.delete(client);
      upstream.destroy();
    });
    upstream.on('close', () => {
      this.sockets.delete(upstream);
      client.destroy();
    });
    client.pipe(upstream);
    upstream.pipe(client);
  };

  get listening(): boolean {
    return this.server !== null;
  }

  /** Listens on `port` (0 the first time: any free port, kept from then on). */
  async listen(): Promise<void> {
    const server = net.createServer(this.handle);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.port = (server.address() as net.AddressInfo).port;
    this.server = server;
  }

  /** Drops every open connection (both sides), still listening. */
  dropAll(): void {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  /** Stops accepting and destroys every proxied connection, both sides. */
  async cut(): Promise<void> {
    const server = this.server;
    this.server = null;
    const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    this.dropAll();
    await closed;
  }
}

type LogLine = { level: string; msg: string; [key: string]: unknown };

describe('database outage', () => {
  let proxy: TcpProxy;
  let svc: TestService | null = null;
  let key: string;
  const logged: LogLine[] = [];
  let stdoutSpy: ReturnType<typeof jest.spyOn> | null = null;

  const lines = (msg: string) => logged.filter((l) => l.msg === msg);
  const errors = () => logged.filter((l) => l.level === 'error');
  // A route that reads the database on every call (batch reads may be answered from the read cache).
  const v1 = () => call(`${svc!.url}/v1/files`, { key });
  const readyz = () => call(`${svc!.url}/readyz`);

  beforeAll(async () => {
    const target = new URL(await createTestDatabase());
    proxy = new TcpProxy(target.hostname, Number(target.port));
    await proxy.listen();
    const proxied = new URL(target.href);
    proxied.hostname = '127.0.0.1';
    proxied.port = String(proxy.port);
    svc = await startTestService({ DATABASE_URL: proxied.href, ROLE: 'api' });
    // startTestService made the logger silent; `info` so the end of the outage shows too.
    setLogLevel('info');
    // The service logs JSON lines on stdout.
    const write = process.stdout.write.bind(process.stdout);
    stdoutSpy = jest.spyOn(process.stdout, 'write').mockImplementation(((chunk: unknown, ...rest: unknown[]) => {
      const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString();
      let captured = false;
      for (const l of text.split('\n')) {
        if (!l.startsWith('{')) continue;
        try {
          logged.push(JSON.parse(l) as LogLine);
          captured = true;
        } catch {
          // not one of ours
        }
      }
      return captured ? true : (write as (...args: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof process.stdout.write);
    key = (await svc.createUser()).apiKey;
  });

  afterAll(async () => {
    stdoutSpy?.mockRestore();
    setLogLevel('silent');
    // The service stops best with its database there (pg-boss waits for its own shutdown queries).
    if (proxy?.hang) {
      proxy.hang = false;
      proxy.dropAll();
    }
    if (proxy && !proxy.listening) await proxy.listen().catch(() => {});
    await svc?.stop();
    await proxy?.cut();
  });

  it('answers 503 while Postgres is unreachable, logs it once, and recovers on the same address', async () => {
    expect((await v1()).status).toBe(200);
    expect((await readyz()).status).toBe(200);
    expect(lines(UNAVAILABLE_MSG)).toHaveLength(0);

    await proxy.cut();

    const started = Date.now();
    const first = await v1();
    const firstMs = Date.now() - started;
    expect([first.status, first.text]).toEqual([503, expect.any(String)]);
    const e = expectEnvelope(first);
    expect(e).toEqual({ message: expect.any(String), type: 'server_error', code: 'service_unavailable', param: null });
    expect(first.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(firstMs).toBeLessThan(6000);

    for (let i = 0; i < 5; i++) {
      const again = await v1();
      expect(again.status).toBe(503);
      expect(expectEnvelope(again).code).toBe('service_unavailable');
      expect(again.headers.get('retry-after')).toMatch(/^\d+$/);
    }
    // Other authenticated routes fail the same way.
    const models = await call(`${svc!.url}/v1/models`, { key });
    expect([models.status, expectEnvelope(models).code]).toEqual([503, 'service_unavailable']);

    // Long enough for the job queue's own polling (every second here) to fail as well: still one warning.
    const until = Date.now() + 2500;
    while (Date.now() < until) {
      expect((await v1()).status).toBe(503);
      await new Promise((r) => setTimeout(r, 250));
    }

    expect((await call(`${svc!.url}/healthz`)).status).toBe(200);
    const readyStarted = Date.now();
    const notReady = await readyz();
    expect(notReady.status).toBe(503);
    expect(notReady.body).toEqual({ ok: false, database: false, queue: false });
    expect(Date.now() - readyStarted).toBeLessThan(3000);

    expect(lines(UNAVAILABLE_MSG)).toHaveLength(1);
    expect(lines(UNAVAILABLE_MSG)[0].level).toBe('warn');
    expect(errors()).toEqual([]);

    await proxy.listen();

    await eventually(async () => ((await v1()).status === 200 ? true : null), 20_000);
    await eventually(async () => ((await readyz()).status === 200 ? true : null), 20_000);
    expect((await v1()).status).toBe(200);

    expect(lines(BACK_MSG)).toHaveLength(1);
    expect(lines(BACK_MSG)[0]).toMatchObject({ level: 'info', outageMs: expect.any(Number) });
    expect(lines(UNAVAILABLE_MSG)).toHaveLength(1);
    expect(errors()).toEqual([]);
  });

  it('answers 503 (not hang) while Postgres accepts connections but never answers', async () => {
    logged.length = 0;
    expect((await v1()).status).toBe(200);

    proxy.hang = true;
    proxy.dropAll();
    // Let the pool see its idle connections go, so the request below has to open a new one.
    await new Promise((r) => setTimeout(r, 300));

    const started = Date.now();
    const [list, ready, health] = await Promise.all([
      v1().then((a) => ({ a, ms: Date.now() - started })),
      readyz().then((a) => ({ a, ms: Date.now() - started })),
      call(`${svc!.url}/healthz`).then((a) => ({ a, ms: Date.now() - started })),
    ]);
    expect(health.a.status).toBe(200);
    expect(health.ms).toBeLessThan(1000);
    expect([ready.a.status, ready.a.body]).toEqual([503, { ok: false, database: false, queue: false }]);
    expect(ready.ms).toBeLessThan(3000);
    // The pool gives up connecting after 5 s: a 503, not a request left hanging.
    expect(list.a.status).toBe(503);
    expect(expectEnvelope(list.a)).toMatchObject({ type: 'server_error', code: 'service_unavailable' });
    expect(list.a.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(list.ms).toBeLessThan(8000);

    expect(lines(UNAVAILABLE_MSG)).toHaveLength(1);
    expect(errors()).toEqual([]);

    proxy.hang = false;
    proxy.dropAll();
    await eventually(async () => ((await v1()).status === 200 ? true : null), 20_000);
    await eventually(async () => ((await readyz()).status === 200 ? true : null), 20_000);
    expect(lines(BACK_MSG)).toHaveLength(1);
    expect(lines(UNAVAILABLE_MSG)).toHaveLength(1);
    expect(errors()).toEqual([]);
  });
});
