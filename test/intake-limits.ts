// The intake's own default limits (packages/smtp-intake/src/config.ts), as the SMTP
// differential tests give them to Postfix: port 25's (mta-inbound) and submission's (msa).
import { intakeSchema } from '@mailyard/smtp-intake';

export const intakeDefaultLimits = {
  recipients: intakeSchema.smtpd_recipient_limit.parse(undefined),
  hardErrors: intakeSchema.smtpd_hard_error_limit.parse(undefined),
  junk: intakeSchema.smtpd_junk_command_limit.parse(undefined),
};
