#!/usr/bin/env bash
# Postfix and Mailyard under the same load: Postfix's own smtp-source against each.
#
#   bench/postfix-compare.sh [-m MESSAGES] [-s SESSIONS] [-l BYTES] [-w WARMUP] [-r ROUNDS]
#                            [-x 'EXTRA ARGS FOR bench/inbound.ts'] [-j] [-p]
#
# -p compares with every policy check on: Mailyard runs `bench:inbound --policy` (the
# policy service, the default lists, rspamd and clamd); Postfix a comparable set, below.
#
# -j puts both servers' queue and mailboxes on a fresh ext4 with a journal (a 4 GB file
# in /var/tmp, loop-mounted), as a mail server's disk would be, instead of /tmp.
#
# Needs root (Postfix drops privileges itself), the Debian postfix package (for postfix and
# smtp-source) and RabbitMQ and Redis as for the tests. Nothing here is used by CI.
#
# Postfix runs as a private instance: main.cf/master.cf, queue, data and mailboxes all in
# one temporary directory (`postfix -c DIR`), smtpd on a free loopback port, delivering
# with virtual(8) into Maildir for the virtual domain bench.test, no DNS anywhere. The
# system's own Postfix (if any) is not touched. The directory is removed at the end.
#
# Both servers get a warm-up run (not counted), then the measured run; the order alternates
# between rounds. Delivered files are only removed at the end: on ext4 without a journal,
# thousands of inodes freed just before a run make every new file's inode allocation skip
# them (ext4's recently_deleted check), which would charge a run for the clean-up before it.
#   smtp-source -s SESSIONS -l BYTES -m MESSAGES -f sender@bench.test -t user@bench.test
# End to end = MESSAGES / (newest file's ctime in new/ - start of smtp-source).
# Postfix latency is the sum of its own `delays=a/b/c/d` per delivery (arrival in the
# queue -> delivered, 10 ms resolution), Mailyard's its delivery latency histogram.
#
# Postfix's comparable set (-p): the client (127.0.0.1) is not in mynetworks and has
# forward-confirmed reverse DNS (mx.sender.test), the sender domain has an MX, both
# answered by an unbound on 127.0.2.53 (local data, NXDOMAIN for anything else) that
# Postfix reads through a private mount namespace's /etc/resolv.conf (and /etc/hosts,
# without the entries that name 127.0.0.1 localhost);
#   smtpd_client_restrictions = check_client_access (texthash)
#   smtpd_helo_restrictions   = reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname
#   smtpd_sender_restrictions = reject_non_fqdn_sender, check_sender_access,
#                               reject_unknown_sender_domain
#   smtpd_relay_restrictions  = permit_mynetworks, reject_unauth_destination
#   smtpd_recipient_restrictions = reject_non_fqdn_recipient, check_recipient_access,
#                               check_policy_service (postgrey, greylisting; the client is on
#                               its whitelist, as Mailyard greylists only clients without FCrDNS)
#   smtpd_milters = rspamd (its proxy worker in milter mode) and clamav-milter, the scanners
#                   configured as the tests start them (bench/postfix-scanners.ts)
# Needs the Debian packages postgrey, clamav-milter, unbound, rspamd and clamav-daemon.
set -euo pipefail

MESSAGES=5000
SESSIONS=20
SIZE=10240
WARMUP=500
ROUNDS=1
EXTRA=
JOURNALED=
POLICY=
while getopts 'm:s:l:w:r:x:jph' opt; do
  case $opt in
    m) MESSAGES=$OPTARG ;;
    s) SESSIONS=$OPTARG ;;
    l) SIZE=$OPTARG ;;
    w) WARMUP=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    x) EXTRA=$OPTARG ;;
    j) JOURNALED=1 ;;
    p) POLICY=1 ;;
    *) sed -n '2,11p' "$0"; exit 2 ;;
  esac
done

die() { echo "postfix-compare: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (Postfix's master must start as root)"
command -v postfix >/dev/null && command -v smtp-source >/dev/null ||
  die "postfix and smtp-source not found (Debian: apt-get install postfix)"
if [ -n "$POLICY" ]; then
  for b in postgrey clamav-milter unbound; do
    command -v $b >/dev/null || [ -x /usr/sbin/$b ] || die "$b not found (apt-get install postgrey clamav-milter unbound)"
  done
  EXTRA="--policy $EXTRA"
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=/tmp
if [ -n "$JOURNALED" ]; then
  IMG=$(mktemp /var/tmp/mailyard-bench.XXXXXX.img)
  SCRATCH=$(mktemp -d /tmp/mailyard-bench-fs.XXXXXX)
  truncate -s 4G "$IMG"
  mkfs.ext4 -q -F "$IMG"
  mount -o loop "$IMG" "$SCRATCH" || die "cannot loop-mount an ext4 image (-j)"
  chmod 1777 "$SCRATCH"
fi
# Mailyard's bench (os.tmpdir()) writes its mailboxes here too
export TMPDIR=$SCRATCH
DIR=$(mktemp -d "$SCRATCH/postfix-bench.XXXXXX")
chmod 755 "$DIR"
# shellcheck source=bench/postfix-instance.sh
. "$ROOT/bench/postfix-instance.sh"
VUID=5000 # owner of the virtual mailboxes; needs no passwd entry

PORT=$(free_port)

cleanup() {
  policy_world_stop
  postfix_remove
  if [ -n "$JOURNALED" ]; then
    umount "$SCRATCH" && rmdir "$SCRATCH"
    rm -f "$IMG"
  fi
}
trap cleanup EXIT

mkdir -p "$DIR/vmail" "$CF"
chown "$VUID:$VUID" "$DIR/vmail"
echo "user@bench.test bench.test/user/" >"$CF/vmailbox"
postfix_configure "$PORT" <<EOF
virtual_mailbox_domains = bench.test
virtual_mailbox_base = $DIR/vmail
virtual_mailbox_maps = texthash:$CF/vmailbox
virtual_uid_maps = static:$VUID
virtual_gid_maps = static:$VUID
EOF

if [ -n "$POLICY" ]; then
  # the client and sender of bench:inbound --policy
  FROM=sender@sender.test
  HELO=(-M mx.sender.test)
  : >"$CF/client_access"
  : >"$CF/sender_access"
  : >"$CF/recipient_access"
  echo "mx.sender.test" >"$CF/postgrey_whitelist_clients"
  GREY_PORT=$(free_port)
  postconf -c "$CF" -e "mynetworks = 192.0.2.0/24" "smtpd_peername_lookup = yes"
  cat >>"$CF/main.cf" <<CONF
smtpd_client_restrictions = permit_mynetworks, check_client_access texthash:$CF/client_access
smtpd_helo_restrictions = permit_mynetworks, reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname
smtpd_sender_restrictions = permit_mynetworks, reject_non_fqdn_sender,
  check_sender_access texthash:$CF/sender_access, reject_unknown_sender_domain
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject_non_fqdn_recipient,
  check_recipient_access texthash:$CF/recipient_access,
  check_policy_service inet:127.0.0.1:$GREY_PORT
milter_default_action = tempfail
milter_protocol = 6
CONF
else
  FROM=sender@bench.test
  HELO=()
fi

DNS_IP=127.0.2.53
WORLD_PIDS=()
# unbound (DNS), postgrey, clamd + rspamd and clamav-milter for Postfix's run; Postfix's
# resolver reads a private /etc/resolv.conf naming the unbound
policy_world_start() {
  mkdir -p "$DIR/world/postgrey"
  chown postgrey "$DIR/world/postgrey" 2>/dev/null || true
  cat >"$DIR/world/unbound.conf" <<CONF
server:
  interface: $DNS_IP
  port: 53
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$DIR/world"
  pidfile: ""
  use-syslog: no
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  local-zone: "." static
  local-zone: "sender.test." static
  local-data: "sender.test. 300 IN MX 10 mx.sender.test."
  local-data: 'sender.test. 300 IN TXT "v=spf1 ip4:$PF_ADDR -all"'
  local-data: "mx.sender.test. 300 IN A $PF_ADDR"
  local-zone: "127.in-addr.arpa." static
  local-data-ptr: "$PF_ADDR 300 mx.sender.test."
remote-control:
  control-enable: no
CONF
  /usr/sbin/unbound -c "$DIR/world/unbound.conf" >"$DIR/world/unbound.log" 2>&1 &
  WORLD_PIDS+=($!)
  echo "nameserver $DNS_IP" >"$DIR/world/resolv.conf"
  grep -v '^127\.0\.0\.1[[:space:]]' /etc/hosts >"$DIR/world/hosts" || true
  postgrey --inet="127.0.0.1:$GREY_PORT" --dbdir="$DIR/world/postgrey" --delay=300 \
    --whitelist-clients="$CF/postgrey_whitelist_clients" --whitelist-clients=/etc/postgrey/whitelist_clients \
    --pidfile="$DIR/world/postgrey.pid" >"$DIR/world/postgrey.log" 2>&1 &
  WORLD_PIDS+=($!)
  coproc SCANNERS { cd "$ROOT" && exec node --conditions=development --import tsx bench/postfix-scanners.ts "$DNS_IP:53"; }
  WORLD_PIDS+=("$SCANNERS_PID")
  local line clamd="" milter=""
  while read -r -t 300 line <&"${SCANNERS[0]}"; do
    case $line in
      CLAMD_TCP=*) clamd=${line#CLAMD_TCP=} ;;
      RSPAMD_MILTER=*) milter=${line#RSPAMD_MILTER=}; break ;;
    esac
  done
  [ -n "$clamd" ] && [ -n "$milter" ] || die "clamd and rspamd did not start"
  local cm_port
  cm_port=$(free_port)
  cat >"$DIR/world/clamav-milter.conf" <<CONF
MilterSocket inet:$cm_port@127.0.0.1
ClamdSocket tcp:$clamd
Foreground yes
User root
OnInfected Reject
OnFail Defer
AddHeader Replace
LogFile $DIR/world/clamav-milter.log
CONF
  /usr/sbin/clamav-milter -c "$DIR/world/clamav-milter.conf" &
  WORLD_PIDS+=($!)
  postconf -c "$CF" "smtpd_milters = $milter, inet:127.0.0.1:$cm_port"
  for _ in $(seq 100); do
    ss -Hltn "sport = :$cm_port" | grep -q . && ss -Hltn "sport = :$GREY_PORT" | grep -q . && break
    sleep 0.1
  done
  echo "postfix   policy: unbound $DNS_IP, postgrey :$GREY_PORT, milters $milter and clamav-milter :$cm_port"
}
policy_world_stop() {
  local pid
  for pid in "${WORLD_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${WORLD_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  WORLD_PIDS=()
}
# postfix_start in a mount namespace whose /etc/resolv.conf names the bench's unbound and
# whose /etc/hosts does not name 127.0.0.1
postfix_start_policy() {
  unshare -m --propagation private sh -c \
    "mount --bind '$DIR/world/resolv.conf' /etc/resolv.conf && mount --bind '$DIR/world/hosts' /etc/hosts && exec postfix -c '$CF' start" \
    >"$DIR/start.log" 2>&1 || { cat "$DIR/start.log" "$DIR/maillog" 2>/dev/null || true; die "postfix did not start"; }
  for _ in $(seq 50); do ss -Hltn "sport = :$1" | grep -q . && break; sleep 0.1; done
}

MAILDIR_NEW=$DIR/vmail/bench.test/user/new

count_new() { { find "$MAILDIR_NEW" -maxdepth 1 -type f 2>/dev/null || true; } | wc -l; }
wait_for() {
  local want=$1 deadline=$((SECONDS + 120))
  while [ "$(count_new)" -lt "$want" ]; do
    [ $SECONDS -lt $deadline ] || die "only $(count_new) of $want messages delivered by Postfix"
    sleep 0.1
  done
}

# CPU clock ticks of the Postfix instance: live processes of the master, plus what the master
# collected from children that already exited (cutime/cstime of the master).
postfix_cpu() {
  local master pid sum=0
  master=$(tr -d ' ' <"$DIR/spool/pid/master.pid")
  for pid in $master $(pgrep -P "$master"); do
    [ -r "/proc/$pid/stat" ] || continue
    sum=$(awk -v s="$sum" -v m="$([ "$pid" = "$master" ] && echo 1 || echo 0)" \
      '{ sub(/.*\) /, ""); t = $12 + $13; if (m) t += $14 + $15; print s + t }' "/proc/$pid/stat")
  done
  echo "$sum"
}
# CPU clock ticks of every live process with one of these names (the scanners, their milter,
# postgrey and unbound, with all their workers).
named_cpu() {
  local names=" $* " pid comm sum=0
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
    case $names in *" $comm "*) ;; *) continue ;; esac
    sum=$(awk -v s="$sum" '{ sub(/.*\) /, ""); print s + $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || echo "$sum")
  done
  echo "$sum"
}
HELPER_PROCESSES="rspamd clamd clamav-milter postgrey unbound"
# named_cpu of each of HELPER_PROCESSES, in that order, on one line
helpers_cpu() {
  local name
  for name in $HELPER_PROCESSES; do printf '%s ' "$(named_cpu "$name")"; done
}
machine_cpu() { awk '/^cpu /{ b = $2+$3+$4+$7+$8+$9; print b, b + $5 + $6 }' /proc/stat; }

run_postfix() {
  if [ -n "$POLICY" ]; then
    policy_world_start
    postfix_start_policy "$PORT"
  else
    postfix_start "$PORT"
  fi
  if [ "$WARMUP" -gt 0 ]; then
    local base0
    base0=$(count_new)
    smtp-source -s "$SESSIONS" -l "$SIZE" -m "$WARMUP" "${HELO[@]}" -f "$FROM" -t user@bench.test "$PF_ADDR:$PORT"
    wait_for $((base0 + WARMUP))
  fi
  : >"$DIR/maillog"
  local cpu0 h0 m0 start accepted last cpu1 h1 m1 base
  base=$(count_new)
  cpu0=$(postfix_cpu)
  h0=$(helpers_cpu)
  m0=$(machine_cpu)
  start=$(date +%s.%N)
  smtp-source -s "$SESSIONS" -l "$SIZE" -m "$MESSAGES" "${HELO[@]}" -f "$FROM" -t user@bench.test "$PF_ADDR:$PORT"
  accepted=$(date +%s.%N)
  wait_for $((base + MESSAGES))
  cpu1=$(postfix_cpu)
  h1=$(helpers_cpu)
  m1=$(machine_cpu)
  last=$(find "$MAILDIR_NEW" -maxdepth 1 -type f -printf '%C@\n' | sort -n | tail -1)
  PF_ACCEPTED=$(awk -v n="$MESSAGES" -v a="$start" -v b="$accepted" 'BEGIN { printf "%.0f", n / (b - a) }')
  PF_DELIVERED=$(awk -v n="$MESSAGES" -v a="$start" -v b="$last" 'BEGIN { printf "%.0f", n / (b - a) }')
  echo "postfix   accepted:  $PF_ACCEPTED msgs/s"
  echo "postfix   delivered: $PF_DELIVERED msgs/s ($MESSAGES in new/ after $(awk -v a="$start" -v b="$last" 'BEGIN { printf "%.2f", b - a }') s)"
  grep -o 'delays=[0-9./]*' "$DIR/maillog" | awk -F'[=/]' '{ print $2 + $3 + $4 + $5 }' | sort -n |
    awk '{ v[NR] = $1 } END { if (NR) printf "postfix   queue arrival -> delivered (delays=): p50 %.0f ms, p99 %.0f ms\n", 1000 * v[int(NR * 0.5) + 1], 1000 * v[int(NR * 0.99) + 1] }'
  awk -v a="$cpu0" -v b="$cpu1" -v n="$MESSAGES" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "postfix   CPU ms per message (all Postfix processes): %.2f\n", 1000 * (b - a) / hz / n }'
  [ -n "$POLICY" ] && awk -v a="$h0" -v b="$h1" -v names="$HELPER_PROCESSES" -v n="$MESSAGES" -v hz="$(getconf CLK_TCK)" \
    'BEGIN {
      k = split(names, name, " "); split(a, x, " "); split(b, y, " ")
      for (i = 1; i <= k; i++) { ms = 1000 * (y[i] - x[i]) / hz / n; all += ms; list = list sprintf(", %s %.2f", name[i], ms) }
      printf "postfix   CPU ms per message of the helpers: %.2f%s\n", all, list
    }'
  echo "$m0 $m1" | awk '{ printf "machine CPU busy during the run: %.0f%% of all cores\n", 100 * ($3 - $1) / ($4 - $2) }'
  postfix -c "$CF" stop >/dev/null 2>&1
  for _ in $(seq 50); do
    kill -0 "$(tr -d ' ' <"$DIR/spool/pid/master.pid" 2>/dev/null || echo 0)" 2>/dev/null || break
    sleep 0.1
  done
  policy_world_stop
}

settle() {
  sync
  sleep 3
}

run_mailyard() {
  local out
  out=$(cd "$ROOT" && node --conditions=development --import tsx bench/inbound.ts --smtp-source \
    --messages "$MESSAGES" --concurrency "$SESSIONS" --size "$SIZE" --warmup "$WARMUP" $EXTRA 2>&1 | grep -v '^{')
  echo "$out" | grep -v '^RESULT' | sed 's/^/mailyard  /'
  MY_DELIVERED=$(echo "$out" | sed -n 's/^RESULT .*delivered_per_s=\([0-9.]*\).*/\1/p')
  [ -n "$MY_DELIVERED" ] || die "the Mailyard run printed no result"
}

echo "smtp-source -s $SESSIONS -l $SIZE -m $MESSAGES (warm-up $WARMUP), $(nproc) CPUs, files in $SCRATCH$([ -n "$JOURNALED" ] && echo ' (fresh journaled ext4)'), $(date -u +%Y-%m-%dT%H:%MZ)"
for round in $(seq "$ROUNDS"); do
  [ "$ROUNDS" -gt 1 ] && echo "--- round $round"
  # alternate who goes first, so neither always runs right after the other's clean-up;
  # and before each run the previous one's dirty pages are written out (sync), so no run
  # competes with the writeback of the one before it
  if [ $((round % 2)) -eq 1 ]; then
    settle; run_postfix
    settle; run_mailyard
  else
    settle; run_mailyard
    settle; run_postfix
  fi
  echo "end to end: Mailyard $MY_DELIVERED msgs/s, Postfix $PF_DELIVERED msgs/s, ratio $(awk -v a="$MY_DELIVERED" -v b="$PF_DELIVERED" 'BEGIN { printf "%.2f", a / b }')"
done
