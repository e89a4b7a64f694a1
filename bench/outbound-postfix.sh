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
# smtp_destination_concurrency_limit for the one destination. Postfix reuses SMTP
# connections when a destination is backlogged (smtp_connection_cache_on_demand);
# outbound-relay opens one session per message.
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

free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 20000))
    ss -Hltn "sport = :$p" | grep -q . || { echo "$p"; return; }
  done
  die "no free port found"
}
PORT=$(free_port)
SINK_PORT=$(free_port)
DIR=$(mktemp -d /tmp/postfix-outbound.XXXXXX)
chmod 755 "$DIR"
CF=$DIR/etc
SINK_PID=

cleanup() {
  postfix -c "$CF" stop >/dev/null 2>&1 || true
  for _ in $(seq 50); do
    [ -e "$DIR/spool/pid/master.pid" ] && kill -0 "$(tr -d ' ' <"$DIR/spool/pid/master.pid")" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

smtp-sink -u nobody -c "127.0.0.1:$SINK_PORT" 1024 >/dev/null 2>&1 &
SINK_PID=$!

mkdir -p "$CF" "$DIR/spool" "$DIR/data"
chown postfix "$DIR/data"
cp /etc/postfix/master.cf "$CF/master.cf"
[ -e /etc/postfix/dynamicmaps.cf ] && cp -r /etc/postfix/dynamicmaps.cf /etc/postfix/dynamicmaps.cf.d "$CF/" 2>/dev/null || true
cat >"$CF/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $DIR/spool
data_directory = $DIR/data
mail_owner = postfix
setgid_group = postdrop
myhostname = pf.bench.test
mydomain = pf.bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
relayhost = [127.0.0.1]:$SINK_PORT
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_peername_lookup = no
smtp_destination_concurrency_limit = $CONCURRENCY
default_process_limit = 200
defer_transports = smtp
maillog_file = $DIR/maillog
maillog_file_prefixes = $DIR
biff = no
append_dot_mydomain = no
EOF
postconf -c "$CF" -M# smtp/inet
postconf -c "$CF" -Me "127.0.0.1:$PORT/inet = 127.0.0.1:$PORT inet n - n - - smtpd"
postconf -c "$CF" -F '*/*/chroot = n'

postfix -c "$CF" start >"$DIR/start.log" 2>&1 || { cat "$DIR/start.log"; die "postfix did not start"; }
for _ in $(seq 50); do ss -Hltn "sport = :$PORT" | grep -q . && break; sleep 0.1; done

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
