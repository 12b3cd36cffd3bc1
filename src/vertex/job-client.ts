// The two clients' own modules, not the package's index: that also loads every other client,
// v1beta1 and the generated `protos` module, some 130 MB of memory this process never uses.
import { JobServiceClient as JobClient } from '@google-cloud/aiplatform/build/src/v1/job_service_client.js';
import { PredictionServiceClient as PredictionClient } from '@google-cloud/aiplatform/build/src/v1/prediction_service_client.js';
import { GoogleAuth, PassThroughClient } from 'google-auth-library';

export type JobServiceClient = JobClient;
export type PredictionServiceClient = PredictionClient;

type ClientOptions = NonNullable<ConstructorParameters<typeof JobClient>[0]>;

/**
 * Options of every Vertex AI client. Production (no endpoint): the regional endpoint with
 * Application Default Credentials. Emulator: plain HTTP/JSON (`fallback: true`) with no
 * credentials (the same REST surface, so the same calls).
 */
function vertexClientOptions(opts: { location: string; endpoint?: string | null }): ClientOptions {
  if (!opts.endpoint) return { apiEndpoint: `${opts.location}-aiplatform.googleapis.com` };
  const url = new URL(opts.endpoint);
  return {
    apiEndpoint: url.hostname,
    port: Number(url.port || (url.protocol === 'https:' ? 443 : 80)),
    protocol: url.protocol.replace(':', ''),
    fallback: true,
    auth: new GoogleAuth({ authClient: new PassThroughClient() }),
  } as ClientOptions;
}

/** Told of every finished call: its RPC method (e.g. `GetBatchPredictionJob`) and its error, or null. */
export type VertexCallObserver = (method: string, err: unknown) => void;

interface ClientSettings {
  location: string;
  endpoint?: string | null;
  onCall?: VertexCallObserver;
}

/** The Vertex AI JobService client (batch prediction jobs). */
export function createJobClient(opts: ClientSettings): JobServiceClient {
  const client = new JobClient(vertexClientOptions(opts));
  if (opts.onCall) {
    observeCalls(client, opts.onCall, {
      createBatchPredictionJob: 'CreateBatchPredictionJob',
      getBatchPredictionJob: 'GetBatchPredictionJob',
      listBatchPredictionJobs: 'ListBatchPredictionJobs',
      cancelBatchPredictionJob: 'CancelBatchPredictionJob',
      deleteBatchPredictionJob: 'DeleteBatchPredictionJob',
    });
  }
  return client;
}

/** The Vertex AI PredictionService client (online `generateContent`). */
export function createPredictionClient(opts: ClientSettings): PredictionServiceClient {
  const client = new PredictionClient(vertexClientOptions(opts));
  if (opts.onCall) observeCalls(client, opts.onCall, { generateContent: 'GenerateContent' });
  return client;
}

/**
 * Every call the service makes to Vertex goes through these client methods: each is wrapped, on
 * this client only, to report how its promise settled (after the client's own retries).
 */
function observeCalls(client: object, onCall: VertexCallObserver, methods: Record<string, string>) {
  const target = client as Record<string, (...args: unknown[]) => unknown>;
  for (const [name, rpc] of Object.entries(methods)) {
    const call = target[name].bind(client);
    target[name] = (...args: unknown[]) => {
      const result = call(...args);
      if (typeof (result as Promise<unknown> | undefined)?.then === 'function') {
        (result as Promise<unknown>).then(
          () => onCall(rpc, null),
          (err: unknown) => onCall(rpc, err),
        );
      }
      return result;
    };
  }
}
