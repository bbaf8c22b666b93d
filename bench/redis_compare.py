#!/usr/bin/env python3
"""Redis sorted-set baseline for the silence table (issue 4, "Scale").

The same workload as `benches/silence.rs`, on a Redis sorted set: one member per device
(the device id), score = newest fix time (Unix seconds). 99% of the devices have a fresh fix
(now - 60 s), 1% are silent (now - 4 days). Measures, per size:

* memory per device: `INFO memory` used_memory after loading, minus before, / devices;
* update throughput: one `ZADD key score member` per update (what a per-fix update is),
  pipelined 1,000 deep, end to end through the Python client and server-side only
  (`INFO commandstats` usec_per_call); also `ZADD` with 100 members per command;
* the due set: `ZRANGEBYSCORE key -inf (now - warning)` (1% of the devices) and all members,
  median of 5; server-side execution time from SLOWLOG (no network, no client parsing) and
  end-to-end time through the Python client.

It starts its own redis-server on a private Unix socket (no TCP port, no persistence) and
always stops it, also on error or Ctrl-C.

Usage (from the repository root):

    python3 -m venv /tmp/redisvenv && /tmp/redisvenv/bin/pip install redis
    /tmp/redisvenv/bin/python bench/redis_compare.py [--sizes 1000000,10000000]

Needs `redis-server` on PATH (Debian: `apt-get install redis-server`).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import redis

NOW_S = 1_800_000_000
WARN_S = 2 * 86_400
FRESH_S = NOW_S - 60
SILENT_S = NOW_S - 4 * 86_400
SILENT_ONE_IN = 100
KEY = "hexflow:last_fix"
LOAD_MEMBERS_PER_CMD = 1_000
PIPELINE_DEPTH = 1_000
READY_TIMEOUT_S = 10.0


def start_server(workdir):
    sock = os.path.join(workdir, "redis.sock")
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port", "0",
            "--unixsocket", sock,
            "--save", "",
            "--appendonly", "no",
            "--dir", workdir,
            "--maxmemory", "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        if os.path.exists(sock):
            try:
                client = redis.Redis(unix_socket_path=sock)
                client.ping()
                return proc, client
            except redis.exceptions.ConnectionError:
                pass
        time.sleep(0.05)
    raise RuntimeError("redis-server did not become ready")


def stop_server(proc, client):
    try:
        if client is not None:
            client.shutdown(nosave=True)
    except redis.exceptions.ConnectionError:
        pass  # shutdown closes the connection: expected
    except Exception as e:  # noqa: BLE001 - fall through to terminate
        print(f"shutdown failed: {e}", file=sys.stderr)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(timeout=10)


def score_of(device_id):
    return SILENT_S if device_id % SILENT_ONE_IN == 0 else FRESH_S


def load(client, devices):
    pipe = client.pipeline(transaction=False)
    queued = 0
    for start in range(1, devices + 1, LOAD_MEMBERS_PER_CMD):
        end = min(start + LOAD_MEMBERS_PER_CMD, devices + 1)
        pipe.zadd(KEY, {str(d): score_of(d) for d in range(start, end)})
        queued += 1
        if queued == 100:
            pipe.execute()
            queued = 0
    pipe.execute()


def update_single(client, devices, updates, new_score):
    """`updates` single-member ZADDs (scattered ids), pipelined; returns seconds."""
    pipe = client.pipeline(transaction=False)
    # Pre-build arguments so the timing is mostly the server and the socket.
    ids = [str((i * 0x9E3779B9) % devices + 1) for i in range(updates)]
    t0 = time.perf_counter()
    for n, d in enumerate(ids, 1):
        pipe.execute_command("ZADD", KEY, new_score, d)
        if n % PIPELINE_DEPTH == 0:
            pipe.execute()
    pipe.execute()
    return time.perf_counter() - t0


def update_multi(client, devices, updates, new_score, per_cmd=100):
    pipe = client.pipeline(transaction=False)
    ids = [str((i * 0x9E3779B9) % devices + 1) for i in range(updates)]
    t0 = time.perf_counter()
    for n in range(0, updates, per_cmd):
        pipe.zadd(KEY, {d: new_score for d in ids[n:n + per_cmd]})
        if (n // per_cmd + 1) % 100 == 0:
            pipe.execute()
    pipe.execute()
    return time.perf_counter() - t0


def timed_range(client, lo, hi, runs=5):
    """Median end-to-end seconds and median server-side microseconds (SLOWLOG) of
    ZRANGEBYSCORE KEY lo hi; also the number of members returned."""
    e2e, server_us, count = [], [], 0
    for _ in range(runs):
        client.slowlog_reset()
        t0 = time.perf_counter()
        members = client.zrangebyscore(KEY, lo, hi)
        e2e.append(time.perf_counter() - t0)
        count = len(members)
        log = [e for e in client.slowlog_get(10) if e["command"].startswith(b"ZRANGEBYSCORE")]
        if log:
            server_us.append(log[0]["duration"])
    return statistics.median(e2e), (statistics.median(server_us) if server_us else None), count


def measure(client, devices):
    client.flushall()
    base = client.info("memory")["used_memory"]
    t0 = time.perf_counter()
    load(client, devices)
    load_s = time.perf_counter() - t0
    assert client.zcard(KEY) == devices
    used = client.info("memory")["used_memory"] - base
    updates = min(devices, 1_000_000)
    client.config_resetstat()
    single_s = update_single(client, devices, updates, NOW_S + 1)
    # Server-side cost of one single-member ZADD (no socket, no client): INFO commandstats.
    single_server_us = client.info("commandstats")["cmdstat_zadd"]["usec_per_call"]
    multi_s = update_multi(client, devices, updates, NOW_S + 2)
    # Put the workload back (updates raised some silent devices).
    load(client, devices)
    due_hi = f"({NOW_S + 1 - WARN_S}"  # silent for at least the warning threshold
    due_e2e, due_srv, due_n = timed_range(client, "-inf", due_hi)
    assert due_n == devices // SILENT_ONE_IN, due_n
    all_e2e, all_srv, all_n = timed_range(client, "-inf", "+inf", runs=3)
    assert all_n == devices
    return {
        "devices": devices,
        "used_memory_bytes": used,
        "bytes_per_device": used / devices,
        "load_s": load_s,
        "zadd_single_updates": updates,
        "zadd_single_ns_per_update": single_s / updates * 1e9,
        "zadd_single_updates_per_s": updates / single_s,
        "zadd_single_server_ns_per_update": single_server_us * 1e3,
        "zadd_100_per_cmd_ns_per_update": multi_s / updates * 1e9,
        "due_count": due_n,
        "zrangebyscore_due_server_ms": None if due_srv is None else due_srv / 1e3,
        "zrangebyscore_due_e2e_ms": due_e2e * 1e3,
        "zrangebyscore_all_server_ms": None if all_srv is None else all_srv / 1e3,
        "zrangebyscore_all_e2e_ms": all_e2e * 1e3,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000",
                        help="comma-separated device counts (default: 1M and 10M)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if shutil.which("redis-server") is None:
        sys.exit("redis-server not found on PATH")
    workdir = tempfile.mkdtemp(prefix="hexflow-redis-")
    proc, client = None, None
    try:
        proc, client = start_server(workdir)
        print(f"redis {client.info('server')['redis_version']}, "
              f"allocator {client.info('memory').get('mem_allocator')}", flush=True)
        client.config_set("slowlog-log-slower-than", 0)
        for devices in sizes:
            result = measure(client, devices)
            print(json.dumps(result), flush=True)
            client.flushall()
    finally:
        if proc is not None:
            stop_server(proc, client)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
