import { z } from 'zod';
import { cidrList } from './fields.js';

/**
 * The webmail's own login to IMAP and submission (SASL PLAIN with an authorisation
 * identity, as Dovecot's master users): the same keys on the webmail, which uses the
 * secret, and on retrieval and msa, which accept it. One environment can feed all three.
 */
export const serviceLoginSchema = {
  /** The service's login name (authcid); never an address, so no account can have it. */
  service_login_name: z
    .string()
    .regex(
      /^[a-z0-9][a-z0-9._-]{0,63}$/i,
      'expected a name of letters, digits, dots, dashes (not an address)',
    )
    .default('webmail'),
  /** Its secret; unset (and no file): retrieval and msa let no one act for another user. */
  service_login_password: z.string().min(16, 'expected a random secret of at least 16 characters').optional(),
  /** A file holding the secret (a container secret), read at start when the password is unset. */
  service_login_password_file: z.string().optional(),
};

/** On the services that accept the service login: where it may come from. */
export const serviceLoginNetworksSchema = {
  /** Networks the service login is accepted from (the webmail's addresses); anyone else is refused. */
  service_login_networks: cidrList(['127.0.0.0/8', '::1/128']),
};
