import { afterAll, afterEach } from '@jest/globals';
import { takeViolations } from './openapi-check.ts';

/**
 * Fails the test (or the file's last hooks) during which a test service gave an answer that the
 * OpenAPI document does not describe (see openapi-check.ts).
 */
function failOnViolations() {
  const violations = takeViolations();
  if (violations.length) {
    throw new Error(`Answers that break the OpenAPI document (src/http/openapi.ts):\n  ${violations.join('\n  ')}`);
  }
}

afterEach(failOnViolations);
afterAll(failOnViolations);
