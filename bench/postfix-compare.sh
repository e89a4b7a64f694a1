#!/usr/bin/env bash
# Postfix and Mailyard under the same load: Postfix's own smtp-source against each.
#
#   bench/postfix-compare.sh [-m MESSAGES] [-s SESSIONS] [-l BYTES] [-w WARMUP] [-r ROUNDS]
#                            [-x 'EXTRA ARGS FOR bench/inbound.ts'] [-j]
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
set -euo pipefail

MESSAGES=5000
SESSIONS=20
SIZE=10240
WARMUP=500
ROUNDS=1
EXTRA=
JOURNALED=
while getopts 'm:s:l:w:r:x:jh' opt; do
  case $opt in
    m) MESSAGES=$OPTARG ;;
    s) SESSIONS=$OPTARG ;;
    l) SIZE=$OPTARG ;;
    w) WARMUP=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    x) EXTRA=$OPTARG ;;
    j) JOURNALED=1 ;;
    *) sed -n '2,8p' "$0"; exit 2 ;;
  esac
done

die() { echo "postfix-compare: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (Postfix's master must start as root)"
command -v postfix >/dev/null && command -v smtp-source >/dev/null ||
  die "postfix and smtp-source not found (Debian: apt-get install postfix)"

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
machine_cpu() { awk '/^cpu /{ b = $2+$3+$4+$7+$8+$9; print b, b + $5 + $6 }' /proc/stat; }

run_postfix() {
  postfix_start "$PORT"
  if [ "$WARMUP" -gt 0 ]; then
    local base0
    base0=$(count_new)
    smtp-source -s "$SESSIONS" -l "$SIZE" -m "$WARMUP" -f sender@bench.test -t user@bench.test "127.0.0.1:$PORT"
    wait_for $((base0 + WARMUP))
  fi
  : >"$DIR/maillog"
  local cpu0 m0 start accepted last cpu1 m1 base
  base=$(count_new)
  cpu0=$(postfix_cpu)
  m0=$(machine_cpu)
  start=$(date +%s.%N)
  smtp-source -s "$SESSIONS" -l "$SIZE" -m "$MESSAGES" -f sender@bench.test -t user@bench.test "127.0.0.1:$PORT"
  accepted=$(date +%s.%N)
  wait_for $((base + MESSAGES))
  cpu1=$(postfix_cpu)
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
  echo "$m0 $m1" | awk '{ printf "machine CPU busy during the run: %.0f%% of all cores\n", 100 * ($3 - $1) / ($4 - $2) }'
  postfix -c "$CF" stop >/dev/null 2>&1
  for _ in $(seq 50); do
    kill -0 "$(tr -d ' ' <"$DIR/spool/pid/master.pid" 2>/dev/null || echo 0)" 2>/dev/null || break
    sleep 0.1
  done
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
