#!/usr/bin/env python3
"""Slow HTTP clients for the metrics listener's test (issue 16).

Usage: slow_clients.py PORT SOURCE_ADDRESS COUNT
Opens COUNT connections to 127.0.0.1:PORT from SOURCE_ADDRESS (another loopback address),
sends an unfinished request on each and then one header byte every half second, so none is
ever idle for long. Prints "ready N" once N connections are open (refused ones are not
counted), then one line "closed" each time the server closes one, and exits when stdin ends.
"""
import select
import socket
import sys
import time

port, source, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
conns = []
for _ in range(count):
    s = socket.socket()
    s.bind((source, 0))
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        conns.append(s)
    except OSError:
        s.close()
print("ready %d" % len(conns), flush=True)
while True:
    r, _, _ = select.select([sys.stdin] + conns, [], [], 0.5)
    if sys.stdin in r and not sys.stdin.readline():
        break
    for s in list(conns):
        try:
            if s in r and not s.recv(4096):
                raise OSError("closed")
            s.send(b"a")
        except OSError:
            conns.remove(s)
            s.close()
            print("closed", flush=True)
