import type { ModelInfo } from '../billing/model-catalog.ts';
import { ApiError } from '../errors/api-error.ts';
import type { HttpErrorCode } from '../errors/codes.ts';
import { compileBatchLineValidator, describeSchemaError } from '../pipeline/line-validator.ts';
import { checkAgainstModel } from '../vertex/request-rules.ts';
import type { ImageRequestBody } from '../vertex/translate.ts';

/** A single-image request checked as a batch line is: the body, its model and its price tier. */
export interface CheckedRequest {
  body: ImageRequestBody;
  model: ModelInfo;
  tier: string;
}

/**
 * Checks an image request body with the batch line's schema and rules, so a body valid in a
 * batch is valid here and the same mistakes get the same codes (answered as HTTP errors, `param`
 * without the line's `body.` prefix). `model` may be left out: the first enabled model is used.
 * `references` counts the reference images the request brings besides `image_file_ids`.
 */
export function checkImageRequest(
  raw: unknown,
  models: ModelInfo[],
  references: { count: number; param: string } = { count: 0, param: 'image_file_ids' },
): CheckedRequest {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ApiError('invalid_body', 'Send a JSON object with at least a `prompt`.');
  }
  const body = { ...(raw as Record<string, unknown>) };
  if (body.model === undefined && models[0]) body.model = models[0].id;
  // The body is checked as the body of a batch line: one schema, one set of messages.
  const validate = compileBatchLineValidator();
  if (!validate({ custom_id: 'request', body })) {
    const e = describeSchemaError(validate.errors![0]);
    throw new ApiError(
      e.code as HttpErrorCode,
      e.message.replace(/\bbody\./g, ''),
      e.param?.replace(/^body\./, '') ?? null,
    );
  }
  const request = body as unknown as ImageRequestBody;
  const model = models.find((m) => m.id === request.model);
  if (!model) {
    throw new ApiError('model_not_found', `The model '${request.model}' does not exist or is not available.`, 'model');
  }
  const fileIds = request.image_file_ids?.length ?? (request.image_file_id ? 1 : 0);
  const checked = checkAgainstModel(request, model, {
    count: references.count + fileIds,
    param: references.count ? references.param : request.image_file_ids ? 'image_file_ids' : 'image_file_id',
  });
  if ('code' in checked) throw new ApiError(checked.code as HttpErrorCode, checked.message, checked.param);
  return { body: request, model, tier: checked.tier };
}
