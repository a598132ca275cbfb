#!/usr/bin/python3
"""The lab's power switch: a host-side service on the lab network (runs in
the lab's network namespace, listening on the bridge's address), the way
fence_virtd serves VMs. One request per line, one answer per line:

    off N     -> "ok off N"      the node's UML processes are all gone
    on N      -> "ok on N"       the node is booting (same disk, same tap)
    reboot N  -> "ok reboot N"   off, then on
    status N  -> "ok status N on" | "ok status N off"
    list      -> "ok list 1:on 2:off ..."
    anything else, or a failure -> "error <why>"

A node listed in RUN/switch.deny (node numbers, one per line; `lab
fenceable N off`) is not fenceable: off/reboot for it answer
"error node N is not fenceable" (an unreachable fence device).

Several requests may come on one connection. Every request and its outcome
is logged (stdout, i.e. RUN/switch.log) with the peer's address and timing.
The actions are `lab power N ...` (one code path for the CLI and the switch,
serialised per node by a lock).
"""
import argparse, os, socketserver, subprocess, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("--listen", default="192.0.2.1")
ap.add_argument("--port", type=int, default=1229)
ap.add_argument("--lab", required=True)
ap.add_argument("--run", required=True)
args = ap.parse_args()


def log(msg):
    print(time.strftime("%H:%M:%S") + ".%03d " % (time.time() % 1 * 1000) + msg, flush=True)


def nodes():
    try:
        return int(open(os.path.join(args.run, "n")).read())
    except OSError:
        return 0


def power(n, action):
    argv = [args.lab, "power", str(n), action]
    if action in ("on", "reboot"):
        argv.append("--no-wait")
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    return p.returncode, (p.stdout + p.stderr).strip()


def denied(n):
    try:
        return str(n) in open(os.path.join(args.run, "switch.deny")).read().split()
    except OSError:
        return False


def handle(line):
    w = line.split()
    if w == ["list"]:
        st = []
        for n in range(1, nodes() + 1):
            rc, _ = power(n, "status")
            st.append("%d:%s" % (n, "on" if rc == 0 else "off"))
        return "ok list " + " ".join(st)
    if len(w) != 2 or w[0] not in ("off", "on", "reboot", "status") or not w[1].isdigit():
        return "error usage: off|on|reboot|status N | list"
    a, n = w[0], int(w[1])
    if not 1 <= n <= nodes():
        return "error no node %d" % n
    if a in ("off", "reboot") and denied(n):
        return "error node %d is not fenceable (lab fenceable %d off)" % (n, n)
    rc, out = power(n, a)
    if a == "status":
        if rc in (0, 2):
            return "ok status %d %s" % (n, "on" if rc == 0 else "off")
        return "error status %d: %s" % (n, out)
    if rc == 0:
        return "ok %s %d" % (a, n)
    return "error %s %d: %s" % (a, n, out.replace("\n", " | "))


class H(socketserver.StreamRequestHandler):
    def handle(self):
        peer = self.client_address[0]
        for raw in self.rfile:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            t = time.monotonic()
            try:
                ans = handle(line)
            except Exception as e:  # never let one request kill the switch
                ans = "error %s" % e
            log("%s: %r -> %r (%.0f ms)" % (peer, line, ans, (time.monotonic() - t) * 1000))
            self.wfile.write((ans + "\n").encode())
            self.wfile.flush()


class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


srv = S((args.listen, args.port), H)
log("power switch listening on %s:%d (lab %s, run %s)" % (args.listen, args.port, args.lab, args.run))
try:
    srv.serve_forever()
except KeyboardInterrupt:
    pass
