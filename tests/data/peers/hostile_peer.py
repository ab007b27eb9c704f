#!/usr/bin/env python3
"""A misbehaving Dataverse and authority for dwasync's tests (issue 16).

Usage: hostile_peer.py MODE PORTFILE COUNTFILE
  redirect  every /api/ request answers 302 with a Location elsewhere
  big       every /api/ request answers 200 with a 300 kB JSON body
  hugetoken the token endpoint answers expires_in 2^63-1; /api/ answers WhoAmI
Any token request gets a token (expires_in 3600 unless hugetoken). The port is written to
PORTFILE once listening; every request is appended to COUNTFILE as "METHOD PATH".
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE, PORTFILE, COUNTFILE = sys.argv[1], sys.argv[2], sys.argv[3]


class Peer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, headers=()):
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        with open(COUNTFILE, "a") as f:
            f.write("%s %s\n" % (self.command, self.path))
        if "/oauth2/" in self.path:
            life = 9223372036854775807 if MODE == "hugetoken" else 3600
            return self.answer(200, {"token_type": "Bearer", "expires_in": life,
                                     "access_token": "peer-token"})
        if MODE == "redirect":
            return self.answer(302, b"", [("Location", "https://elsewhere.example/api/data/v9.2/")])
        if MODE == "big":
            return self.answer(200, {"value": [], "pad": "x" * 300000})
        return self.answer(200, {"UserId": "00000000-0000-4000-8000-000000000001",
                                 "BusinessUnitId": "00000000-0000-4000-8000-000000000002",
                                 "OrganizationId": "00000000-0000-4000-8000-000000000003"})

    do_GET = do_POST = do_PATCH = do_DELETE = handle_any


server = ThreadingHTTPServer(("127.0.0.1", 0), Peer)
with open(PORTFILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os
os.rename(PORTFILE + ".tmp", PORTFILE)
server.serve_forever()
