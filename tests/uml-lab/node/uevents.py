#!/usr/bin/python3
"""Kernel uevent listener (NETLINK_KOBJECT_UEVENT, multicast group 1), one
line per event: CLOCK_MONOTONIC seconds (comparable with dmesg), the
header (action@devpath) and the KEY=VALUE pairs. Used by `probe` to record
what the DLM and GFS2 announce."""
import socket, sys, time
s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15)  # NETLINK_KOBJECT_UEVENT
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind((0, 1))
print("%.6f listening" % time.monotonic(), flush=True)
while True:
    d = s.recv(1 << 16)
    parts = [p.decode(errors="replace") for p in d.split(b"\0") if p]
    if parts and parts[0].startswith("libudev"):
        continue
    print("%.6f %s" % (time.monotonic(), " ".join(parts)), flush=True)
