#!/usr/bin/env bash
# Postfix relaying the same load as `pnpm bench:outbound` to the same kind of sink, for
# comparison:
#
#   bench/outbound-postfix.sh [-m MESSAGES] [-l BYTES] [-c CONCURRENCY]
#
# Needs root (Postfix's master starts as root) and the Debian postfix package (postfix,
# smtp-source, smtp-sink). A private Postfix instance (`postfix -c DIR`, everything in
# one temporary directory, removed at the end) relays everything to smtp-sink on a free
# loopback port (relayhost = [127.0.0.1]:PORT, no DNS). As in bench/outbound.ts the queue
# is filled first: MESSAGES messages of BYTES bytes are injected with smtp-source while
# the smtp transport is held (defer_transports = smtp); then the hold is lifted, the
# queue flushed, and the rate is MESSAGES / (time until the queue is empty).
# CONCURRENCY (default 32, one outbound-relay instance's prefetch) is Postfix's
# smtp_destination_concurrency_limit for the one destination. Both reuse SMTP
# connections: Postfix when a destination is backlogged (smtp_connection_cache_on_demand),
# outbound-relay for any destination (its own smtp_connection_cache_on_demand).
set -euo pipefail

MESSAGES=2000
SIZE=10240
CONCURRENCY=32
while getopts 'm:l:c:h' opt; do
  case $opt in
    m) MESSAGES=$OPTARG ;;
    l) SIZE=$OPTARG ;;
    c) CONCURRENCY=$OPTARG ;;
    *) sed -n '2,6p' "$0"; exit 2 ;;
  esac
done

die() { echo "outbound-postfix: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (Postfix's master must start as root)"
for cmd in postfix smtp-source smtp-sink; do
  command -v $cmd >/dev/null || die "$cmd not found (Debian: apt-get install postfix)"
done

DIR=$(mktemp -d /tmp/postfix-outbound.XXXXXX)
chmod 755 "$DIR"
# shellcheck source=bench/postfix-instance.sh
. "$(dirname "$0")/postfix-instance.sh"
PORT=$(free_port)
SINK_PORT=$(free_port)
SINK_PID=

cleanup() {
  postfix_remove
  [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null || true
}
trap cleanup EXIT

smtp-sink -u nobody -c "127.0.0.1:$SINK_PORT" 1024 >/dev/null 2>&1 &
SINK_PID=$!

postfix_configure "$PORT" <<EOF
relayhost = [127.0.0.1]:$SINK_PORT
smtp_destination_concurrency_limit = $CONCURRENCY
default_process_limit = 200
defer_transports = smtp
EOF
postfix_start "$PORT"

queued() { find "$DIR/spool/deferred" "$DIR/spool/active" "$DIR/spool/incoming" -type f 2>/dev/null | wc -l; }

smtp-source -s 20 -l "$SIZE" -m "$MESSAGES" -f sender@bench.test -t user@sink0.test "127.0.0.1:$PORT"
deadline=$((SECONDS + 300))
until [ "$(find "$DIR/spool/deferred" -type f | wc -l)" -ge "$MESSAGES" ]; do
  [ $SECONDS -lt $deadline ] || die "only $(queued) messages queued"
  sleep 0.2
done

postconf -c "$CF" -e 'defer_transports ='
postfix -c "$CF" reload >/dev/null 2>&1
start=$(date +%s.%N)
postqueue -c "$CF" -f
deadline=$((SECONDS + 600))
until [ "$(queued)" -eq 0 ]; do
  [ $SECONDS -lt $deadline ] || die "$(queued) messages still queued after 10 minutes"
  sleep 0.05
done
end=$(date +%s.%N)
sent=$(grep -c 'status=sent' "$DIR/maillog" || true)
[ "$sent" -ge "$MESSAGES" ] || die "only $sent of $MESSAGES relayed (see $DIR/maillog)"
echo "postfix -> smtp-sink: $MESSAGES messages of $SIZE bytes, smtp_destination_concurrency_limit $CONCURRENCY"
awk -v n="$MESSAGES" -v a="$start" -v b="$end" 'BEGIN { printf "postfix: %.0f msgs/s\n", n / (b - a) }'
