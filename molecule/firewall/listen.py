"""Accept (and close) TCP connections on the scanned ports, on every address.

Installed on the nodes by prepare.yml, so that the firewall alone decides
whether a scanned port answers.
"""

import selectors
import socket
import sys

sel = selectors.DefaultSelector()
for port in (int(p) for p in sys.argv[1:]):
    sel.register(socket.create_server(("0.0.0.0", port)), selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        conn.close()
