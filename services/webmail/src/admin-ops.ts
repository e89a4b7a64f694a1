import type { FastifyRequest } from 'fastify';
import { CleanupPendingError, DnsUnavailableError, OperationError, type Operations } from '@mailyard/admin';
import { DirectoryError } from '@mailyard/directory';
import { AccessError, PolicyCommandError, RestrictionError } from '@mailyard/policy-rules';
import { QueueAdminError } from '@mailyard/queue-admin';
import { adminOf, type Ctx } from './context.js';
import { ApiError, errors } from './errors.js';

/** What an admin route handler gets: the operations, audited as the admin who asked. */
export interface AdminRequest {
  ops: Operations;
  admin: string;
}

/**
 * Wraps an admin console route: the admin guard first (role read from the directory on
 * every request: 403 not_admin, 503 when the directory fails), then the handler with the
 * operations audited as this admin, and the operations' refusals as answers the console
 * shows: a bad name 400, an unknown domain or account 404, a duplicate 409, each with its
 * one sentence. Anything else (Redis or the broker failing) is a temporary failure, 503.
 */
export function adminRoute<T>(
  ctx: Pick<Ctx, 'directory' | 'operations' | 'logger'>,
  handler: (req: FastifyRequest, a: AdminRequest) => Promise<T>,
): (req: FastifyRequest) => Promise<T> {
  return async (req) => {
    const { account } = await adminOf(req, ctx);
    try {
      return await handler(req, { ops: ctx.operations.as(account), admin: account });
    } catch (err) {
      throw answer(err, ctx);
    }
  };
}

const sentence = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);

function answer(err: unknown, ctx: Pick<Ctx, 'logger'>): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof DirectoryError) {
    switch (err.code) {
      case 'unknown_domain':
        return new ApiError(404, 'unknown_domain', sentence(err.message));
      case 'not_found':
        return new ApiError(404, 'not_found', sentence(err.message));
      case 'duplicate':
      case 'in_use':
        return errors.conflict(sentence(err.message));
      case 'invalid_address':
      case 'weak_password':
        return errors.badRequest(sentence(err.message));
    }
  }
  if (err instanceof OperationError) {
    switch (err.code) {
      case 'not_found':
        return new ApiError(404, 'not_found', sentence(err.message));
      case 'duplicate':
      case 'limit':
        return errors.conflict(sentence(err.message));
      case 'invalid':
        return errors.badRequest(sentence(err.message));
    }
  }
  // an entry removed that is not there: as for an alias or an account, 404
  if ((err instanceof AccessError || err instanceof RestrictionError) && err.code === 'not_found')
    return new ApiError(404, 'not_found', sentence(err.message));
  // a list saved from a copy another change made stale: load it again, nothing was lost
  if (err instanceof RestrictionError && err.code === 'changed')
    return errors.conflict(sentence(err.message));
  if (err instanceof RestrictionError || err instanceof AccessError || err instanceof PolicyCommandError)
    return errors.badRequest(sentence(err.message));
  if (err instanceof DnsUnavailableError) return new ApiError(503, 'dns_unavailable', sentence(err.message));
  if (err instanceof CleanupPendingError) return new ApiError(503, 'cleanup_pending', sentence(err.message));
  // the broker unreachable, or another reader of the delay queues or the dead letters
  if (err instanceof QueueAdminError) {
    ctx.logger.warn({ err }, 'admin console: queue unavailable');
    return new ApiError(503, 'unavailable', `The queues are unavailable now: ${err.message}`);
  }
  ctx.logger.warn({ err }, 'admin console: operation failed');
  return errors.unavailable();
}
