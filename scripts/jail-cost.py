#!/usr/bin/env python3
"""What the jail costs a pooled create: two daemons side by side, one whose
shells run in their jail and one started with --no-jail, and (on the jailed
one) creates that ask for their own limits (the daemon then writes them into
the shell's cgroup on the request path). Creates go round-robin between the
three, each served from a pool that is refilled before the next; the medians
of what each create reports are printed: `shell` = the shell's boot request →
the guest's main (execute), `api` = the daemon's request → main. Then what
the jail costs *prepare*: each daemon's pool is emptied and refilled with 10
shells (2 prepared at a time), 5 times, interleaved; the median time per shell.

Usage: scripts/jail-cost.py LIGHTVM IMAGE PLATFORM [ROUNDS]
(root, for the jail's cgroups and uid; IMAGE a unikernel that exits, e.g. hello).
"""

import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def call(sock, method, path, body=None):
    conn = UnixHTTP(sock)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, json.dumps(body) if body is not None else None, headers)
    answer = conn.getresponse()
    data = answer.read()
    conn.close()
    return answer.status, (json.loads(data) if data else None)


def wait_ready(sock, ready, deadline=60):
    end = time.time() + deadline
    while time.time() < end:
        try:
            status, pool = call(sock, "GET", "/pool")
            if status == 200 and pool["ready"] >= ready:
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"{sock}: the pool did not fill")


def main():
    lightvm, image, platform = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 40
    work = tempfile.mkdtemp(prefix="lightvm-jail-cost-")
    daemons = {}
    try:
        for name, extra in [("jail", []), ("no-jail", ["--no-jail"])]:
            sock = os.path.join(work, f"{name}.sock")
            log = open(os.path.join(work, f"{name}.err"), "w")
            daemons[name] = (sock, subprocess.Popen(
                [lightvm, "daemon", "--socket", sock, "--state-dir", os.path.join(work, name),
                 "--platform", platform, "--pool", "2", "--linux-pool", "0",
                 "--personality", image] + extra,
                stdout=subprocess.DEVNULL, stderr=log))
        for sock, _ in daemons.values():
            wait_ready(sock, 2)
        series = {
            "no-jail": (daemons["no-jail"][0], {}),
            "jail": (daemons["jail"][0], {}),
            "jail+limits": (daemons["jail"][0],
                            {"memory_limit": "48M", "cpu_limit": 1, "pids_limit": 16}),
        }
        results = {name: {"shell": [], "api": []} for name in series}
        for _ in range(rounds):
            for name, (sock, limits) in series.items():
                wait_ready(sock, 2)
                status, vm = call(sock, "POST", "/vms", {"image": image, **limits})
                if status != 201:
                    raise SystemExit(f"{name}: create answered {status}: {vm}")
                timings = vm["timings"]
                assert timings["pooled"], vm
                results[name]["shell"].append(timings["shell_boot_done_us"])
                results[name]["api"].append(timings["api_to_boot_done_us"])
                while call(sock, "GET", f"/vms/{vm['id']}")[1]["state"] != "exited":
                    time.sleep(0.01)
                call(sock, "DELETE", f"/vms/{vm['id']}")
        print(f"{platform}: {rounds} pooled creates each, interleaved; medians (p25-p75), µs")
        for name, r in results.items():
            line = [name]
            for key in ("shell", "api"):
                q = statistics.quantiles(r[key], n=4)
                line.append(f"{key} {statistics.median(r[key]):.0f} ({q[0]:.0f}-{q[2]:.0f})")
            print("  " + ", ".join(line))
        refills = {name: [] for name in daemons}
        for _ in range(5):
            for name, (sock, _) in daemons.items():
                call(sock, "PUT", "/pool", {"size": 0})
                wait_ready(sock, 0)
                while call(sock, "GET", "/pool")[1]["preparing"] > 0:
                    time.sleep(0.01)
                started = time.time()
                call(sock, "PUT", "/pool", {"size": 10})
                wait_ready(sock, 10)
                refills[name].append((time.time() - started) / 10 * 1e6)
        print("  prepare (pool refill of 10, per shell, median of 5): " + ", ".join(
            f"{name} {statistics.median(r):.0f} µs" for name, r in refills.items()))
    finally:
        for _, process in daemons.values():
            process.terminate()
            process.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
