import { ApplicationFailure } from '@temporalio/workflow';
import type { z } from 'zod';
import type { FailureType } from '../schemas/progress';

export function fail(type: FailureType, message: string, details?: unknown): never {
  throw ApplicationFailure.create({ type, message, nonRetryable: true, details: details ? [details] : [] });
}

/** Schema validation, before any side effect: a bad input is a non-retryable InvalidRequest. */
export function parseInput<S extends z.ZodType>(schema: S, raw: unknown): z.output<S> {
  const res = schema.safeParse(raw);
  if (!res.success) {
    const issues = res.error.issues.map((i) => `${i.path.join('.') || '(input)'}: ${i.message}`);
    fail('InvalidRequest', `invalid input: ${issues.join('; ')}`, { issues });
  }
  return res.data;
}

/** The `type` of an ApplicationFailure anywhere in an error's cause chain. */
export function failureType(err: unknown): string | undefined {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (e instanceof ApplicationFailure && e.type) return e.type;
  }
  return undefined;
}
