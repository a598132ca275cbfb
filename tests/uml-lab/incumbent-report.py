#!/usr/bin/python3
"""Numbers and operator-visible lines from one incumbent scenario's logs
(tests/uml-lab/incumbent collects them). Usage:

    incumbent-report.py DIR T0 LABEL VICTIM [T1 [T2]]

DIR has nodeN/{writer.log,dmesg,corosync.log,dlm_controld.log} and
switch.log; T0 is the event (power-off or partition, host epoch seconds);
VICTIM the powered-off node (0: none); T1 the heal (partition scenarios),
T2 the operator's action after the heal.
Times are seconds relative to T0. Guest clocks are the host's clock (UML);
kernel and dlm_controld times are mapped from uptime with the clock line
the collector writes at the top of dmesg.
"""
import datetime, glob, os, re, sys

d, t0, label, victim = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
t1 = float(sys.argv[5]) if len(sys.argv) > 5 else None
t2 = float(sys.argv[6]) if len(sys.argv) > 6 else None
year = datetime.datetime.utcfromtimestamp(t0).year
day = datetime.datetime.utcfromtimestamp(t0).strftime("%Y-%m-%d")


def epoch_of(s, fmt):
    return datetime.datetime.strptime(s, fmt).replace(tzinfo=datetime.timezone.utc).timestamp()


def rel(t):
    return "%+.2f" % (t - t0)


nodes = sorted(int(os.path.basename(p)[4:]) for p in glob.glob(d + "/node*")
               if os.path.isdir(p) and re.match(r"node\d+$", os.path.basename(p)))


def read(n, f):
    try:
        return open("%s/node%d/%s" % (d, n, f), errors="replace").read().splitlines()
    except OSError:
        return []


print("== %s (t0 %.3f%s%s)" % (label, t0, ", heal at %s" % rel(t1) if t1 else "",
                              ", operator at %s" % rel(t2) if t2 else ""))

key = {}  # event -> first time after t0 (any node)


def mark(name, t):
    if t >= t0 and (name not in key or t < key[name]):
        key[name] = t



# writers
for n in nodes:
    w = []
    for l in read(n, "writer.log"):
        p = l.split()
        if len(p) >= 5:
            w.append((float(p[1]), float(p[2]), p[3], p[4]))
    if not w:
        print("node %d: no writes logged" % n)
        continue
    before = [x for x in w if x[1] <= t0]
    after = [x for x in w if x[1] > t0]
    line = "node %d writer: %d writes before t0 (last end %s)" % (n, len(before), rel(before[-1][1]) if before else "-")
    if after:
        # the stall: the largest gap between consecutive completions across t0
        prev = before[-1][1] if before else t0
        gaps = []
        for x in after:
            gaps.append((x[1] - prev, prev, x))
            prev = x[1]
        g, pe, x = max(gaps, key=lambda g: g[0])
        line += "; %d after; longest gap %.2f s from %s to %s (write started %s): unblocked at %s" % (
            len(after), g, rel(pe), rel(x[1]), rel(x[0]), rel(x[1]))
        if g > 5:
            key["writer node %d unblocked (longest gap %.1f s)" % (n, g)] = x[1]
        if t1:
            mid = [x for x in after if x[1] <= t1]
            post = [x for x in after if x[1] > t1 and (not t2 or x[1] <= t2)]
            line += "; %d writes between partition and heal (last %s), %d after heal (first %s, last %s)" % (
                len(mid), rel(mid[-1][1]) if mid else "-", len(post), rel(post[0][1]) if post else "-",
                rel(post[-1][1]) if post else "-")
            if t2:
                op = [x for x in after if x[1] > t2]
                line += "; %d after the operator's action (first %s)" % (len(op), rel(op[0][1]) if op else "-")
                if op:
                    key["writer node %d: first write after the operator's action" % n] = op[0][1]
            if post:
                key["writer node %d: first write after heal" % n] = post[0][1]
    else:
        line += "; NO write completed after t0 (last end %s)" % (rel(w[-1][1]))
    print(line)

# switch
print("-- power switch (switch.log) after t0")
try:
    for l in open(d + "/switch.log"):
        m = re.match(r"(\d\d:\d\d:\d\d\.\d+) (.*)", l)
        if m:
            t = epoch_of(day + " " + m.group(1), "%Y-%m-%d %H:%M:%S.%f")
            if t >= t0 - 1:
                print("  %s %s" % (rel(t), m.group(2)))
                mm = re.search(r"(\S+): '(off|reboot) (\d+)' -> 'ok", m.group(2))
                if mm:
                    mark("switch: %s %s by %s confirmed" % (mm.group(2), mm.group(3), mm.group(1)), t)
except OSError:
    pass


def clock(n):
    for l in read(n, "dmesg")[:1]:
        m = re.match(r"## clock uptime ([\d.]+) epoch ([\d.]+)", l)
        if m:
            return float(m.group(2)) - float(m.group(1))
    return None


KERN = re.compile(r"dlm: |gfs2: |corosync|withdraw|fence|Call Trace|blocked for more")
DLMC = re.compile(r"exit|down|abandon|shutdown|fence|kill|merge|quorum|stateful|daemon|remove|wait|join|leave|fail|check_|start_kernel|done|error|abort|clear|reject|left|ringid", re.I)
COROSYNC = re.compile(r"Killed|exiting|failed|membership|Members|quorum|Quorum|merge|Retransmit|Token|link|host|FAULT|blocked|rejoin|sync", re.I)
lim = int(os.environ.get("REPORT_LINES", "60"))
KEYS = [  # (name, log, regex)
    ("corosync: token not received", "corosync", r"Token has not been received"),
    ("corosync: processor failed", "corosync", r"A processor failed"),
    ("corosync: new membership", "corosync", r"A new membership"),
    ("corosync: quorum lost", "corosync", r"This node is within the non-primary component"),
    ("corosync: quorum regained", "corosync", r"This node is within the primary component"),
    ("dlm_controld: fence request", "dlmc", r"fence request \d+ pid"),
    ("dlm_controld: fence result", "dlmc", r"fence result \d+ pid \d+ result 0"),
    ("dlm_controld: check_fencing done", "dlmc", r"check_fencing done"),
    ("dlm_controld: stateful merge", "dlmc", r"stateful merge$"),
    ("dlm_controld: kill (tell corosync to remove)", "dlmc", r"tell corosync to remove"),
    ("dlm_controld: cluster is down, exiting", "dlmc", r"cluster is down, exiting"),
    ("dlm_controld: abandoned lockspace", "dlmc", r"abandoned lockspace"),
    ("corosync: killed by dlm_controld", "corosync", r"Killed by node"),
    ("kernel: dlm recovery done", "kern", r"dlm: fs1: dlm_recover \d+ generation \d+ done"),
    ("kernel: gfs2 journal replayed", "kern", r"Journal replayed"),
    ("kernel: gfs2 recover done", "kern", r"gfs2: .*recover generation \d+ done"),
]

for n in nodes:
    base = clock(n)
    print("-- node %d corosync.log after t0" % n)
    k = 0
    for l in read(n, "corosync.log"):
        m = re.match(r"(\w\w\w \d\d \d\d:\d\d:\d\d\.\d+) (.*)", l)
        if not m:
            continue
        t = epoch_of("%d %s" % (year, m.group(1)), "%Y %b %d %H:%M:%S.%f")
        if t >= t0 - 0.5 and COROSYNC.search(m.group(2)) and "pmtud" not in m.group(2):
            for name, lg, rx in KEYS:
                if lg == "corosync" and re.search(rx, m.group(2)):
                    mark(name, t)
            k += 1
            if k <= lim:
                print("  %s %s" % (rel(t), re.sub(r"^\[\d+\] node\d+ corosync ", "", m.group(2))))
    if k > lim:
        print("  ... %d more" % (k - lim))
    if base is None:
        continue
    print("-- node %d kernel (dmesg) after t0" % n)
    k = 0
    for l in read(n, "dmesg")[1:]:
        m = re.match(r"\[\s*([\d.]+)\] (.*)", l)
        if not m:
            continue
        t = base + float(m.group(1))
        if t >= t0 - 0.5 and KERN.search(m.group(2)) and "GSO" not in m.group(2):
            for name, lg, rx in KEYS:
                if lg == "kern" and re.search(rx, m.group(2)):
                    mark(name, t)
            k += 1
            if k <= lim:
                print("  %s %s" % (rel(t), m.group(2)))
    if k > lim:
        print("  ... %d more" % (k - lim))
    print("-- node %d dlm_controld after t0 (its clock: whole seconds; a repeated line is shown once)" % n)
    k = 0
    seen = {}
    for l in read(n, "dlm_controld.log"):
        m = re.match(r"(\d+) (.*)", l)
        if not m:
            continue
        t = base + float(m.group(1))
        if t >= t0 - 1 and DLMC.search(m.group(2)):
            for name, lg, rx in KEYS:
                if lg == "dlmc" and re.search(rx, m.group(2)):
                    mark(name, t)
            txt = re.sub(r"\d{6,}", "N", m.group(2))
            seen[txt] = seen.get(txt, 0) + 1
            if seen[txt] > 1:
                continue
            k += 1
            if k <= lim:
                print("  %s %s" % (rel(t), m.group(2)))
    if k > lim:
        print("  ... %d more" % (k - lim))

    # dlm_tool ls / status and quorum, sampled every second: print changes
    print("-- node %d dlm_tool ls / status / quorum (monitor, 1 s samples), changes after t0" % n)
    last = None
    for blk in "\n".join(read(n, "monitor.log")).split("=== ")[1:]:
        ls = blk.splitlines()
        try:
            t = float(ls[0])
        except ValueError:
            continue
        body = [l.strip() for l in ls[1:] if l.strip() and not re.match(r"(name|id|flags +0x0+ *$|dlm lockspaces|daemon now|Ring ID)", l.strip())]
        body = [re.sub(r"\s+", " ", re.sub(r"now \d+ ?", "", l)) for l in body]
        if t >= t0 - 2 and body != last:
            print("  %s | %s" % (rel(t), " | ".join(body)))
        last = body

print("-- key events (first after t0, any node; dlm_controld times are whole seconds)")
for name in sorted(key, key=lambda k: key[k]):
    print("KEY %-44s %s" % (name, rel(key[name])))
