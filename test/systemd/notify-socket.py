#!/usr/bin/env python3
"""A stand-in for systemd's notify socket, for test/notify.test.ts.

Binds an AF_UNIX SOCK_DGRAM socket at argv[1], prints "listening" once bound, then one
JSON line per datagram: {"fields": [...], "pid": sender pid from SCM_CREDENTIALS}.
File descriptors that come with a datagram (systemd-notify's BARRIER=1 pipe) are closed
at once, which is what the service manager does to release the barrier.
"""
import array
import json
import os
import socket
import struct
import sys

path = sys.argv[1]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
print("listening", flush=True)
UCRED = struct.calcsize("3i")
while True:
    data, ancdata, _flags, _addr = sock.recvmsg(65536, socket.CMSG_SPACE(UCRED) + socket.CMSG_SPACE(16 * 4))
    pid = None
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("3i", payload[:UCRED])[0]
        elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
            for fd in fds:
                os.close(fd)
    fields = data.decode("utf-8", "replace").split("\n")
    print(json.dumps({"fields": [f for f in fields if f], "pid": pid}), flush=True)
