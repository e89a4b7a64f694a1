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

export interface MachineCheck {
  /** Settings this machine cannot work with: config errors, one line each naming the key. */
  problems: string[];
  /** Checks that could not be made now (a DNS server not answering): no verdict on the setting. */
  unsure: string[];
}

/**
 * What only this machine can judge, as one line per problem naming the key: that the
 * service can listen on LISTEN_ADDRESS (a name must resolve, an address must be one of
 * the machine's), and that TLS_CERT_FILE and TLS_KEY_FILE load and go together. Checked
 * by `--check-config` and before a service starts, which would otherwise fail at its
 * first listen with a stack trace, or only once the files are read.
 */
export async function machineProblems(config: MachineKeys): Promise<MachineCheck> {
  const problems: string[] = [];
  const unsure: string[] = [];
  if (typeof config.listen_address === 'string') {
    const problem = await listenProblem(config.listen_address);
    if (problem) (problem.temporary ? unsure : problems).push(`LISTEN_ADDRESS: ${problem.why}`);
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
  return { problems, unsure };
}

/**
 * Why a listener cannot be opened on `host` (on a port the system picks), or null.
 * `temporary`: the resolver could not answer now (EAI_AGAIN, a DNS server down), which
 * says nothing of the setting.
 */
function listenProblem(host: string): Promise<{ why: string; temporary?: boolean } | null> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', (err: NodeJS.ErrnoException) =>
      resolve(
        err.code === 'EAI_AGAIN'
          ? { why: `${host} could not be resolved now (a temporary DNS failure)`, temporary: true }
          : err.code === 'ENOTFOUND'
            ? { why: `${host} does not resolve to an address` }
            : { why: `cannot listen on ${host}: ${err.code ?? err.message}` },
      ),
    );
    server.listen({ port: 0, host, exclusive: true }, () => server.close(() => resolve(null)));
  });
}
