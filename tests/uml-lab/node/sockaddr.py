#!/usr/bin/python3
"""Write an IPv4 address to a DLM configfs `addr` attribute the way
dlm_controld does: a 128-byte struct sockaddr_storage (family AF_INET in
host byte order, port 0, the address), in one write(2).
usage: sockaddr.py /sys/kernel/config/dlm/cluster/comms/<id>/addr A.B.C.D"""
import os, socket, struct, sys
path, addr = sys.argv[1], sys.argv[2]
buf = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 0) + socket.inet_aton(addr)
buf = buf.ljust(128, b"\0")
fd = os.open(path, os.O_WRONLY)
try:
    n = os.write(fd, buf)
finally:
    os.close(fd)
print("wrote %d bytes to %s" % (n, path))
