#!/usr/bin/env python3
# Open N idle WebSocket subscribers to an authority and report its RSS growth per connection.
import base64, os, socket, sys, time
host, port, key, n, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
def connect():
    s = socket.create_connection((host, port))
    k = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /v1/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {k}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {key}\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    assert data.startswith(b"HTTP/1.1 101"), data[:100]
    return s
# warm up: a few connections so one-time allocations are not counted
warm = [connect() for _ in range(50)]
time.sleep(1)
before = rss_kib(pid)
socks = []
for i in range(n):
    socks.append(connect())
time.sleep(3)
# drain what the server sent (hello + heartbeats) so socket buffers are not what we measure
for s in socks:
    s.setblocking(False)
    try:
        while s.recv(65536): pass
    except BlockingIOError:
        pass
time.sleep(1)
after = rss_kib(pid)
print(f'{{"connections": {n}, "rss_before_kib": {before}, "rss_after_kib": {after}, "bytes_per_connection": {int((after-before)*1024/n)}}}')
