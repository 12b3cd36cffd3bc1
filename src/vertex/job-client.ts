import { v1 } from '@google-cloud/aiplatform';
import { GoogleAuth, PassThroughClient } from 'google-auth-library';

export type JobServiceClient = InstanceType<typeof v1.JobServiceClient>;

/**
 * The Vertex AI JobService client. Production: the regional endpoint with Application
 * Default Credentials. Emulator: plain HTTP/JSON on loopback with no credentials (the
 * same REST surface, so the same calls).
 */
export function createJobClient(opts: { location: string; endpoint?: string | null }): JobServiceClient {
  if (!opts.endpoint) {
    return new v1.JobServiceClient({ apiEndpoint: `${opts.location}-aiplatform.googleapis.com` });
  }
  const url = new URL(opts.endpoint);
  return new v1.JobServiceClient({
    apiEndpoint: url.hostname,
    port: Number(url.port || (url.protocol === 'https:' ? 443 : 80)),
    protocol: url.protocol.replace(':', ''),
    fallback: true,
    auth: new GoogleAuth({ authClient: new PassThroughClient() }),
  } as ConstructorParameters<typeof v1.JobServiceClient>[0]);
}
