import { createServer } from 'node:net';
import { ConfigError } from './config-error.js';
import { readTlsPair } from './tls.js';

/** The keys the checks read, where a service has them. */
interface MachineKeys {
  listen_address?: unknown;
  tls_cert_file?: unknown;
  tls_key_file?: unknown;
  acme_enabled?: unknown;
}

/**
 * What only this machine can judge, as one line per problem naming the key: that the
 * service can listen on LISTEN_ADDRESS (a name must resolve, an address must be one of
 * the machine's), and that TLS_CERT_FILE and TLS_KEY_FILE load and go together. Checked
 * by `--check-config` and before a service starts, which would otherwise fail at its
 * first listen with a stack trace, or only once the files are read.
 */
export async function machineProblems(config: MachineKeys): Promise<string[]> {
  const problems: string[] = [];
  if (typeof config.listen_address === 'string') {
    const problem = await listenProblem(config.listen_address);
    if (problem) problems.push(`LISTEN_ADDRESS: ${problem}`);
  }
  // with ACME the files may not be written yet: the service serves a self-signed
  // certificate until they are (packages/certs)
  if (
    typeof config.tls_cert_file === 'string' &&
    typeof config.tls_key_file === 'string' &&
    !config.acme_enabled
  )
    try {
      readTlsPair(config.tls_cert_file, config.tls_key_file);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problems.push(...err.problems);
    }
  return problems;
}

/** Why a listener cannot be opened on `host` (on a port the system picks), or null. */
function listenProblem(host: string): Promise<string | null> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', (err: NodeJS.ErrnoException) =>
      resolve(
        err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN'
          ? `${host} does not resolve to an address`
          : `cannot listen on ${host}: ${err.code ?? err.message}`,
      ),
    );
    server.listen({ port: 0, host, exclusive: true }, () => server.close(() => resolve(null)));
  });
}
