import type { ModelInfo } from '../billing/model-catalog.ts';
import type { BatchErrorCode } from '../errors/codes.ts';
import { isSizeProblem, resolveSize } from './sizes.ts';
import type { ImageRequestBody } from './translate.ts';

/** Why a request cannot be served, with the body field to blame (`prompt`, `size`, …). */
export interface RequestProblem {
  code: BatchErrorCode;
  message: string;
  param: string;
}

/**
 * A prompt must show something: white space, zero-width and other format characters (U+200B,
 * U+2060, U+FEFF), fillers and the blank braille pattern render as nothing and would be billed
 * for an image of nothing.
 */
const VISIBLE = /[^\p{White_Space}\p{Default_Ignorable_Code_Point}\p{Cc}\p{Cf}\p{Zs}\u2800]/u;
export const hasVisibleCharacter = (text: string) => VISIBLE.test(text);

function countCodePoints(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/**
 * The checks of one image request against its model, beyond the JSON schema, shared by batch
 * lines and single images: a readable prompt within the model's length, a size the model makes,
 * no more reference images than it takes. Returns the size tier the request is priced at.
 */
export function checkAgainstModel(
  body: ImageRequestBody,
  model: ModelInfo,
  references: { count: number; param: string },
): RequestProblem | { tier: string } {
  const prompt = body.prompt;
  if (!hasVisibleCharacter(prompt)) {
    return { code: 'invalid_prompt', message: 'prompt must have at least one visible character', param: 'prompt' };
  }
  // Length in code points, counted only when the UTF-16 length could exceed the limit.
  if (prompt.length > model.maxPromptChars && countCodePoints(prompt) > model.maxPromptChars) {
    return {
      code: 'invalid_prompt',
      message: `prompt is longer than ${model.maxPromptChars} characters`,
      param: 'prompt',
    };
  }
  const size = resolveSize(body, model);
  if (isSizeProblem(size))
    return { code: 'unsupported_size', message: size.message, param: size.param.replace(/^body\./, '') };
  if (references.count > model.maxReferenceImages) {
    return {
      code: 'too_many_reference_images',
      message: `model '${model.id}' takes at most ${model.maxReferenceImages} reference images`,
      param: references.param,
    };
  }
  return { tier: size.imageSize };
}
