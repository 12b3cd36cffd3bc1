import { afterAll, afterEach } from '@jest/globals';
import { assertNoViolations } from './openapi-check.ts';

/**
 * Fails the test (or the file's last hooks) during which a test service gave an answer that the
 * OpenAPI document does not describe (see openapi-check.ts).
 */
afterEach(assertNoViolations);
afterAll(assertNoViolations);
