#!/usr/bin/env python3
"""Reliability of nodediag against what it reads: the cases too heavy for `cargo test`
(tests/bad_input.rs and tests/hung_reads.rs have the quick ones).

  1. every file of the fixture trees corrupted one at a time, five ways (garbage,
     empty, binary, negative, a 1 MiB line): `check` must exit 0, 1 or 2 (never a
     panic), and name the file whenever it changed the answer to "could not tell";
  2. a FIFO in place of a kernel file: `check` ends within its deadline with exit 2,
     and `serve` exits within the pod's grace period on SIGTERM;
  3. a 200 MB mount table: the collection is refused at the size cap, the agent's
     peak RSS stays small;
  4. 1,000 network namespaces with a veth pair each, churned while /metrics is
     scraped 20 times a second: scrape errors, and series of deleted veths left
     behind (stale series) once a collection has passed.

Usage: python3 tests/reliability/data.py [BIN]   (default target/release/nodediag)
Cases 1-3 run on copies of tests/fixtures in a temporary directory; case 4 needs root
and creates namespaces named ndchurn-*, removed at the end. Prints the figures last.
"""

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/nodediag")
TREES = ["healthy", "degraded"]
CORRUPTIONS = {
    "garbage": b"x!#@ not a number\n",
    "empty": b"",
    "binary": bytes([0xFF, 0xFE, 0x00, 0x41]) * 16,
    "negative": b"-5\n",
    "1 MiB line": b"9" * (1 << 20),
}
figures = []
# Fixture files nodediag never opens (they are in the trees for realism): corrupting
# them cannot change an answer, so they are not counted.
NOT_READ = {"bridge/stp_state"}


def fixture_args(tree):
    return [
        "--no-netlink",
        "--path.procfs", os.path.join(tree, "proc"),
        "--path.sysfs", os.path.join(tree, "sys"),
        "--path.rootfs", os.path.join(tree, "rootfs"),
    ]


def check(tree, *extra, timeout=60):
    out = subprocess.run(
        [BIN, "check", "--check.delay", "50ms", *fixture_args(tree), *extra],
        capture_output=True, timeout=timeout,
    )
    return out.returncode, out.stdout.decode(errors="replace")


def corruption_replay(work):
    cases = panics = silent = 0
    codes = {}
    for name in TREES:
        src = os.path.join(ROOT, "tests/fixtures", name)
        files = sorted(
            os.path.relpath(os.path.join(d, f), src)
            for d, _, fs in os.walk(src) for f in fs
            if not os.path.islink(os.path.join(d, f)) and not f.startswith("README")
            and not any(os.path.join(d, f).endswith(n) for n in NOT_READ)
        )
        for rel in files:
            for kind, content in CORRUPTIONS.items():
                tree = os.path.join(work, "tree")
                shutil.rmtree(tree, ignore_errors=True)
                shutil.copytree(src, tree, symlinks=True)
                with open(os.path.join(tree, rel), "wb") as f:
                    f.write(content)
                code, text = check(tree)
                cases += 1
                codes[code] = codes.get(code, 0) + 1
                if code not in (0, 1, 2):
                    panics += 1
                    print(f"  exit {code}: {name}/{rel} {kind}")
                # Whatever the answer, a damaged file the agent read is named in it.
                elif rel.split("/", 1)[1] not in text:
                    silent += 1
                    print(f"  not named: {name}/{rel} ({kind}), exit {code}")
    figures.append(("corrupted files, one at a time", f"{cases} cases, {panics} panics, "
                    f"{silent} where the report did not name the file; exit codes "
                    + ", ".join(f"{c}: {n}" for c, n in sorted(codes.items()))))


def fifo_in_place(work):
    tree = os.path.join(work, "fifo")
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "tests/fixtures/healthy"), tree, symlinks=True)
    worst = 0.0
    for rel in ["proc/sys/net/netfilter/nf_conntrack_count", "proc/meminfo",
                "proc/pressure/cpu", "sys/class/net/eth0/carrier"]:
        path = os.path.join(tree, rel)
        saved = open(path, "rb").read()
        os.remove(path)
        os.mkfifo(path)
        started = time.monotonic()
        code, _ = check(tree, "--check.timeout", "5s")
        took = time.monotonic() - started
        worst = max(worst, took)
        os.remove(path)
        with open(path, "wb") as f:
            f.write(saved)
        print(f"  FIFO at {rel}: check exit {code} in {took:.1f} s")
    path = os.path.join(tree, "proc/meminfo")
    os.remove(path)
    os.mkfifo(path)
    agent = subprocess.Popen(
        [BIN, "serve", "--listen", "127.0.0.1:0", "--web.notrack=false", "--interval", "500ms",
         "--collector.timeout", "1s", *fixture_args(tree)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    # Serving, with the meminfo read hung in a collector thread.
    for line in agent.stderr:
        if "listen=" in line:
            break
    threading.Thread(target=lambda: [None for _ in agent.stderr], daemon=True).start()
    started = time.monotonic()
    agent.send_signal(signal.SIGTERM)
    agent.wait(timeout=30)
    exit_took = time.monotonic() - started
    figures.append(("a FIFO in place of a kernel file", f"check ended within {worst:.1f} s "
                    f"(--check.timeout 5s); serve exited {exit_took:.1f} s after SIGTERM"))


def huge_mount_table(work):
    tree = os.path.join(work, "huge")
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "tests/fixtures/healthy"), tree, symlinks=True)
    line = b"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"
    os.makedirs(os.path.join(tree, "proc/1"), exist_ok=True)
    # A directory for the disk collector to watch, so it reads the mount table.
    os.makedirs(os.path.join(tree, "rootfs/var/lib/kubelet"), exist_ok=True)
    with open(os.path.join(tree, "proc/1/mountinfo"), "wb") as f:
        for _ in range(200 * (1 << 20) // len(line)):
            f.write(line)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.monotonic()
    code, text = check(tree, "--finding", "filesystem_readonly")
    took = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    named = "larger than" in text
    figures.append(("a 200 MB mount table", f"check exit {code} in {took:.1f} s, refused at the "
                    f"cap: {named}; peak RSS of any check so far {max(peak, before) / 1024:.1f} MiB"))


def churn():
    if os.geteuid() != 0:
        figures.append(("namespace churn", "skipped: needs root"))
        return
    agent = subprocess.Popen(
        [BIN, "serve", "--listen", "127.0.0.1:0", "--web.notrack=false", "--interval", "1s",
         "--log-level", "info"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    addr = None
    for line in agent.stderr:
        if "listen=" in line:
            addr = line.split("listen=")[1].split()[0]
            break
    threading.Thread(target=lambda: [None for _ in agent.stderr], daemon=True).start()
    url = f"http://{addr}/metrics"
    stop = threading.Event()
    stats = {"scrapes": 0, "errors": 0}

    def scrape():
        while not stop.is_set():
            try:
                urllib.request.urlopen(url, timeout=5).read()
                stats["scrapes"] += 1
            except Exception:
                stats["errors"] += 1
            time.sleep(0.05)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    names = []
    try:
        for i in range(1000):
            ns, host, peer = f"ndchurn-{i}", f"ndch{i}a", f"ndch{i}b"
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(["ip", "link", "add", host, "type", "veth", "peer", "name", peer,
                            "netns", ns], check=True)
            names.append((ns, host))
            if len(names) > 20:
                old_ns, old_host = names.pop(0)
                subprocess.run(["ip", "link", "del", old_host], stderr=subprocess.DEVNULL)
                subprocess.run(["ip", "netns", "del", old_ns], check=True)
        for ns, host in names:
            subprocess.run(["ip", "link", "del", host], stderr=subprocess.DEVNULL)
            subprocess.run(["ip", "netns", "del", ns], check=True)
        names.clear()
        # Series of the deleted veths must go with the next collections (1 s apart).
        gone_at = time.monotonic()
        deadline = gone_at + 10
        while True:
            body = urllib.request.urlopen(url, timeout=5).read().decode()
            stale = sum(1 for l in body.splitlines() if "ndch" in l)
            if stale == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        gone_after = time.monotonic() - gone_at
    finally:
        stop.set()
        scraper.join()
        for ns, host in names:
            subprocess.run(["ip", "link", "del", host], stderr=subprocess.DEVNULL)
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)
    figures.append(("1,000 namespaces churned under 20 scrapes/s",
                    f"{stats['scrapes']} scrapes, {stats['errors']} errors, "
                    f"{stale} stale series left {gone_after:.1f} s after the churn"))


def main():
    if not os.access(BIN, os.X_OK):
        subprocess.run(["cargo", "build", "--release", "--bin", "nodediag"], check=True, cwd=ROOT)
    with tempfile.TemporaryDirectory(prefix="nodediag-reliability-") as work:
        corruption_replay(work)
        fifo_in_place(work)
        huge_mount_table(work)
    churn()
    print()
    for case, result in figures:
        print(f"{case}: {result}")


if __name__ == "__main__":
    main()
