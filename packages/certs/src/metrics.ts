import { Gauge, type Registry } from '@mailyard/observability';
import type { TlsSource } from './tls-source.js';

/**
 * `mailyard_<service>_tls_cert_expiry_seconds`: what the certificate the service serves
 * has left (the MailyardCertificateExpiring/Expired alerts read it).
 */
export function registerCertificateExpiry(registry: Registry, service: string, source: TlsSource): void {
  new Gauge({
    name: `mailyard_${service.replace(/-/g, '_')}_tls_cert_expiry_seconds`,
    help: 'Seconds until the served TLS certificate expires (negative once expired)',
    registers: [registry],
    collect() {
      this.set(source.expiresIn());
    },
  });
}
