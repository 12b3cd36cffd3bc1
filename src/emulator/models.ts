/**
 * Publisher models the Vertex emulator answers for, and what their image
 * answers cost in tokens (Google's published per-image output token counts).
 */

export interface KnownModel {
  id: string;
  /** Output tokens for one image at a given imageSize. */
  imageTokens(imageSize: string | undefined): number;
}

const flashImage = (id: string): KnownModel => ({ id, imageTokens: () => 1290 });
const proImage = (id: string): KnownModel => ({ id, imageTokens: (size) => (size === '4K' ? 2000 : 1120) });

export const KNOWN_MODELS: Record<string, KnownModel> = Object.fromEntries(
  [
    flashImage('gemini-2.5-flash-image'),
    flashImage('gemini-2.5-flash-image-preview'),
    flashImage('gemini-2.0-flash-preview-image-generation'),
    proImage('gemini-3-pro-image-preview'),
  ].map((m) => [m.id, m]),
);

/**
 * `publishers/google/models/X`, `projects/P/locations/L/publishers/google/models/X`,
 * optionally with `@version`. Returns undefined for anything else or an unknown X.
 */
export function resolveModel(resource: string): KnownModel | undefined {
  const m = /^(?:projects\/[^/]+\/locations\/[^/]+\/)?publishers\/google\/models\/([^/@]+)(?:@[^/]+)?$/.exec(resource);
  return m ? KNOWN_MODELS[m[1]] : undefined;
}
