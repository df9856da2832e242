"""Test image `test/listener`: a pod that listens on its pod IP (env POD_IP) at a free port, says
where on stdout, and logs one line per connection it accepts, until it is stopped."""
import os
import socket

with socket.socket() as server:
    server.bind((os.environ["POD_IP"], 0))
    server.listen()
    host, port = server.getsockname()
    print(f"listening on {host}:{port}", flush=True)
    while True:
        conn, peer = server.accept()
        print(f"connection from {peer[0]}", flush=True)
        conn.close()
