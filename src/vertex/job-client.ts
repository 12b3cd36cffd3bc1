import { v1 } from '@google-cloud/aiplatform';
import { GoogleAuth, PassThroughClient } from 'google-auth-library';

export type JobServiceClient = InstanceType<typeof v1.JobServiceClient>;
export type PredictionServiceClient = InstanceType<typeof v1.PredictionServiceClient>;

type ClientOptions = NonNullable<ConstructorParameters<typeof v1.JobServiceClient>[0]>;

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

/** The Vertex AI JobService client (batch prediction jobs). */
export function createJobClient(opts: { location: string; endpoint?: string | null }): JobServiceClient {
  return new v1.JobServiceClient(vertexClientOptions(opts));
}

/** The Vertex AI PredictionService client (online `generateContent`). */
export function createPredictionClient(opts: { location: string; endpoint?: string | null }): PredictionServiceClient {
  return new v1.PredictionServiceClient(vertexClientOptions(opts));
}
