#!/usr/bin/env python3
"""Hostile and heavy HTTP clients for nodediag's reliability script (http.sh).

Only the loopback address is ever a target; every mode is bounded in count and
time and stops by itself. Prints one JSON object per run on stdout.

  halfopen ADDR N HOLD     open N connections that send nothing; wait up to HOLD s
                           for the server to close them; count answers (503s)
  slowheads ADDR N HOLD    the same, each sending the start of a request head
                           that it never finishes (slowloris)
  concurrent ADDR N SECS   N clients with one keep-alive connection each, GETting
                           /metrics back to back for SECS s; count errors
  trickle ADDR INTERVAL    send a request head one byte every INTERVAL s; report
                           when and how the server cut it
"""
import http.client
import json
import resource
import selectors
import socket
import sys
import threading
import time


def loopback(addr):
    host, port = addr.rsplit(":", 1)
    if not (host.startswith("127.") or host in ("localhost", "[::1]")):
        sys.exit(f"refusing to target {host}: loopback only")
    return host, int(port)


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, need + 100))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < need + 100:
        sys.exit(f"need {need + 100} open files, hard limit is {hard}")


def halfopen(addr, n, hold, send=b""):
    host, port = loopback(addr)
    raise_nofile(n)
    socks, refused = [], 0
    started = time.monotonic()
    for i in range(n):
        # In bursts of 500: faster than that, the kernel's accept queue overflows and
        # drops connections the agent never sees (the client thinks them open).
        if i and i % 500 == 0:
            time.sleep(0.05)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex((host, port))
        if err not in (0, 115):  # EINPROGRESS
            refused += 1
            s.close()
            continue
        socks.append(s)
    if send:
        for s in socks:
            writable = selectors.DefaultSelector()
            writable.register(s, selectors.EVENT_WRITE)
            if writable.select(timeout=5):
                try:
                    s.send(send)
                except OSError:
                    pass
            writable.close()
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    opened = time.monotonic() - started
    answered = {}
    closed_at = []
    open_ = len(socks)
    deadline = time.monotonic() + hold
    while open_ and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if data:
                status = data.split(b" ", 2)[1].decode(errors="replace") if b" " in data else "?"
                answered[status] = answered.get(status, 0) + 1
                continue
            sel.unregister(s)
            s.close()
            closed_at.append(time.monotonic() - started)
            open_ -= 1
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    closed_at.sort()
    print(json.dumps({
        "mode": "slowheads" if send else "halfopen", "connections": n, "connect_failed": refused,
        "seconds_to_open": round(opened, 2), "answered": answered,
        "closed_by_server": len(closed_at), "still_open_after_hold": open_,
        "last_closed_after_s": round(closed_at[-1], 2) if closed_at else None,
    }))


def concurrent(addr, n, secs):
    host, port = loopback(addr)
    raise_nofile(n)
    stop = time.monotonic() + secs
    ok, errors, first_error = [0] * n, [0] * n, []

    def client(i):
        conn = http.client.HTTPConnection(host, port, timeout=20)
        while time.monotonic() < stop:
            try:
                conn.request("GET", "/metrics")
                r = conn.getresponse()
                body = r.read()
                if r.status == 200 and b"nodediag_build_info" in body:
                    ok[i] += 1
                else:
                    errors[i] += 1
                    first_error.append(f"status {r.status}")
            except Exception as e:  # noqa: BLE001 - every failure counts
                errors[i] += 1
                first_error.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=20)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - started
    print(json.dumps({
        "mode": "concurrent", "clients": n, "seconds": round(took, 1),
        "requests": sum(ok) + sum(errors), "errors": sum(errors),
        "requests_per_second": round((sum(ok) + sum(errors)) / took),
        "first_error": first_error[0] if first_error else None,
    }))


def trickle(addr, interval):
    host, port = loopback(addr)
    head = b"GET /metrics HTTP/1.1\r\nHost: trickle\r\nUser-Agent: slowloris\r\n"
    s = socket.create_connection((host, port))
    s.settimeout(interval)
    started = time.monotonic()
    answer, sent = b"", 0
    for b in head:
        try:
            s.sendall(bytes([b]))
            sent += 1
        except OSError:
            break
        try:
            data = s.recv(4096)
        except socket.timeout:
            continue
        except OSError:
            break
        answer += data
        break
    s.settimeout(5)
    try:
        while True:
            data = s.recv(4096)
            if not data:
                break
            answer += data
    except OSError:
        pass
    s.close()
    print(json.dumps({
        "mode": "trickle", "bytes_sent": sent, "cut_after_s": round(time.monotonic() - started, 1),
        "answer": answer.split(b"\r\n", 1)[0].decode(errors="replace"),
        "body": answer.rsplit(b"\r\n\r\n", 1)[-1].decode(errors="replace"),
    }))


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "halfopen":
        halfopen(args[0], int(args[1]), float(args[2]))
    elif mode == "slowheads":
        halfopen(args[0], int(args[1]), float(args[2]), b"GET /metrics HTTP/1.1\r\nX-Slow: ")
    elif mode == "concurrent":
        concurrent(args[0], int(args[1]), float(args[2]))
    elif mode == "trickle":
        trickle(args[0], float(args[1]))
    else:
        sys.exit(__doc__)
