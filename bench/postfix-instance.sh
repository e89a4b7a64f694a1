# Shared by bench/postfix-compare.sh and bench/outbound-postfix.sh (sourced, not run): a
# private Postfix instance in one directory (`postfix -c $CF`), smtpd on a loopback port,
# no chroot, no DNS, logs to a file beside it. The caller sets DIR (made with mktemp -d)
# and defines die().

CF=$DIR/etc
# the address smtpd listens on (and smtp-source's connections come from, on loopback)
PF_ADDR=${PF_ADDR:-127.0.0.1}

free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 20000))
    ss -Hltn "sport = :$p" | grep -q . || { echo "$p"; return; }
  done
  die "no free port found"
}

# Stops the instance, waits for its master (and so its children) to exit, removes DIR
# (KEEP_DIR=1 keeps it, with its maillog, for a look at what went wrong).
postfix_remove() {
  postfix -c "$CF" stop >/dev/null 2>&1 || true
  for _ in $(seq 50); do
    [ -e "$DIR/spool/pid/master.pid" ] && kill -0 "$(tr -d ' ' <"$DIR/spool/pid/master.pid")" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "${KEEP_DIR:-}" ] || rm -rf "$DIR"
}

# postfix_configure PORT: writes main.cf (the common settings, then stdin's lines) and
# master.cf with smtpd on $PF_ADDR:PORT only.
postfix_configure() {
  local port=$1
  mkdir -p "$CF" "$DIR/spool" "$DIR/data"
  chown postfix "$DIR/data"
  cp /etc/postfix/master.cf "$CF/master.cf"
  [ -e /etc/postfix/dynamicmaps.cf ] && cp -r /etc/postfix/dynamicmaps.cf /etc/postfix/dynamicmaps.cf.d "$CF/" 2>/dev/null || true
  {
    cat <<CONF
compatibility_level = 3.6
queue_directory = $DIR/spool
data_directory = $DIR/data
mail_owner = postfix
setgid_group = postdrop
myhostname = pf.bench.test
mydomain = pf.bench.test
mydestination =
inet_interfaces = $PF_ADDR
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
# no DNS: no reverse lookup of the client, no MX lookups
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtp_host_lookup = native
maillog_file = $DIR/maillog
maillog_file_prefixes = $DIR
biff = no
append_dot_mydomain = no
CONF
    cat
  } >"$CF/main.cf"
  # smtpd on a loopback high port only; no chroot (the queue is a temporary directory)
  postconf -c "$CF" -M# smtp/inet
  postconf -c "$CF" -Me "$PF_ADDR:$port/inet = $PF_ADDR:$port inet n - n - - smtpd"
  postconf -c "$CF" -F '*/*/chroot = n'
}

# Starts the instance and waits until smtpd listens on PORT.
postfix_start() {
  postfix -c "$CF" start >"$DIR/start.log" 2>&1 || {
    cat "$DIR/start.log" "$DIR/maillog" 2>/dev/null || true
    die "postfix did not start"
  }
  for _ in $(seq 50); do ss -Hltn "sport = :$1" | grep -q . && break; sleep 0.1; done
}
