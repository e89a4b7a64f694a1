import type { CheckName } from '@mailyard/policy-rules';
import type { CheckImplementation } from '../check-context.js';
import { checkAuthentication } from './check-authentication.js';
import { checkBulk } from './check-bulk.js';
import { checkClientAccess } from './check-client-access.js';
import { checkPolicyGreylistSuspicious } from './check-policy-greylist-suspicious.js';
import { checkPolicyGreylist } from './check-policy-greylist.js';
import { checkRate } from './check-rate.js';
import { checkRecipientAccess } from './check-recipient-access.js';
import { checkSenderAccess } from './check-sender-access.js';
import { checkSpam } from './check-spam.js';
import { checkUserLists } from './check-user-lists.js';
import { checkVirus } from './check-virus.js';
import { defer } from './defer.js';
import { permitFcrdnsClient } from './permit-fcrdns-client.js';
import { permitMynetworks } from './permit-mynetworks.js';
import { permitSaslAuthenticated } from './permit-sasl-authenticated.js';
import { permit } from './permit.js';
import { reject } from './reject.js';
import { rejectInvalidHeloHostname } from './reject-invalid-helo-hostname.js';
import { rejectNonFqdnHeloHostname } from './reject-non-fqdn-helo-hostname.js';
import { rejectNonFqdnRecipient } from './reject-non-fqdn-recipient.js';
import { rejectNonFqdnSender } from './reject-non-fqdn-sender.js';
import { rejectRblClient } from './reject-rbl-client.js';
import { rejectRhsblSender } from './reject-rhsbl-sender.js';
import { rejectSpfFail } from './reject-spf-fail.js';
import { rejectUnauthDestination } from './reject-unauth-destination.js';
import { rejectUnknownClientHostname } from './reject-unknown-client-hostname.js';
import { rejectUnknownReverseClientHostname } from './reject-unknown-reverse-client-hostname.js';
import { rejectUnknownSenderDomain } from './reject-unknown-sender-domain.js';

/**
 * How each check of the table (CHECKS in @mailyard/policy-rules) runs, by the same
 * name. Typed over CheckName: a check defined there without an implementation here,
 * one implemented twice, or one here the table does not define, does not compile.
 */
export const CHECK_IMPLEMENTATIONS: { readonly [N in CheckName]: CheckImplementation<N> } = {
  permit,
  reject,
  defer,
  permit_mynetworks: permitMynetworks,
  permit_fcrdns_client: permitFcrdnsClient,
  permit_sasl_authenticated: permitSaslAuthenticated,
  reject_unauth_destination: rejectUnauthDestination,
  reject_unknown_reverse_client_hostname: rejectUnknownReverseClientHostname,
  reject_unknown_client_hostname: rejectUnknownClientHostname,
  reject_invalid_helo_hostname: rejectInvalidHeloHostname,
  reject_non_fqdn_helo_hostname: rejectNonFqdnHeloHostname,
  reject_non_fqdn_sender: rejectNonFqdnSender,
  reject_non_fqdn_recipient: rejectNonFqdnRecipient,
  reject_unknown_sender_domain: rejectUnknownSenderDomain,
  check_client_access: checkClientAccess,
  check_sender_access: checkSenderAccess,
  check_recipient_access: checkRecipientAccess,
  reject_rbl_client: rejectRblClient,
  reject_rhsbl_sender: rejectRhsblSender,
  check_policy_greylist: checkPolicyGreylist,
  check_policy_greylist_suspicious: checkPolicyGreylistSuspicious,
  check_rate: checkRate,
  check_user_lists: checkUserLists,
  check_virus: checkVirus,
  check_authentication: checkAuthentication,
  reject_spf_fail: rejectSpfFail,
  check_spam: checkSpam,
  check_bulk: checkBulk,
};
