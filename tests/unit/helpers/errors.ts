import { expect } from 'vitest';
import { UserError } from '../../../src/engine/errors.ts';

/** The UserError `fn` throws; fails the test if it throws anything else or nothing. */
export function userErrorFrom(fn: () => unknown): UserError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    return e as UserError;
  }
  throw new Error('expected a UserError');
}
