"""Holds logged-in IMAP, POP3 and submission sessions open with Python's own clients.

argv[1]: JSON list of {"label", "proto": "imap"|"pop3"|"smtp", "port", "user", "pass"}.
Prints "<label> ready" for each, then obeys lines on stdin:
  wait <label>   prints "<label> said: <the next line the server sends>" (or "<label> said: EOF")
  noop <label>   prints "<label> noop: ok" or "<label> noop: failed <reason>"
"""
import imaplib, json, poplib, smtplib, socket, ssl, sys

ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
sessions = {}
for s in json.loads(sys.argv[1]):
    if s["proto"] == "imap":
        c = imaplib.IMAP4_SSL("127.0.0.1", s["port"], ssl_context=ctx, timeout=30)
        c.login(s["user"], s["pass"])
    elif s["proto"] == "pop3":
        c = poplib.POP3_SSL("127.0.0.1", s["port"], context=ctx, timeout=30)
        c.user(s["user"])
        c.pass_(s["pass"])
    else:
        c = smtplib.SMTP_SSL("127.0.0.1", s["port"], context=ctx, timeout=30)
        c.login(s["user"], s["pass"])
    sessions[s["label"]] = (s["proto"], c)
    print(s["label"], "ready", flush=True)

def next_line(proto, c):
    f = c.file or c.sock.makefile("rb")
    line = f.readline()
    return line.decode().rstrip("\r\n") if line else "EOF"

for cmd in sys.stdin:
    verb, label = cmd.split()
    proto, c = sessions[label]
    try:
        if verb == "wait":
            print(label, "said:", next_line(proto, c), flush=True)
        elif proto == "imap":
            typ, _ = c.noop()
            print(label, "noop:", "ok" if typ == "OK" else "failed " + typ, flush=True)
        elif proto == "pop3":
            c.noop()
            print(label, "noop: ok", flush=True)
        else:
            code, _ = c.noop()
            print(label, "noop:", "ok" if code == 250 else "failed %d" % code, flush=True)
    except Exception as e:  # a closed session is an answer too
        print(label, verb + ":", "failed", type(e).__name__, str(e).replace("\n", " "), flush=True)
