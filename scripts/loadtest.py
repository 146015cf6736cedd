"""Load test for ``kner serve``: requests/s and latency percentiles for N parallel clients.

Starts ``kner serve RUN_DIR`` on a free loopback port in a child process, then for each client
count sends a fixed number of one-sentence ``POST /predict`` requests (KLUE dev sentences), checks
every answer against the model's own ``predict`` and prints a table (and JSON with ``--json``).
Bounded and local: a fixed request count, per-request timeouts, 127.0.0.1 only.

    python scripts/loadtest.py /work/runs/crf --data ../shared/data/klue-ner-v1.1 --clients 1,8,32
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

import kner
from kner.data import load_split


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run_dirs: list[str], port: int, timeout: float) -> subprocess.Popen:
    kner_bin = Path(sys.executable).with_name("kner")
    proc = subprocess.Popen([str(kner_bin), "serve", *run_dirs, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"kner serve exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"kner serve did not answer /health within {timeout:.0f} s")


def run_level(url: str, model: str, texts: list[str], want: dict[str, list], clients: int, per_client: int) -> dict:
    """``clients`` threads, each sending ``per_client`` requests back to back over its own connection."""
    def client(k: int) -> list[tuple[float, bool]]:
        out = []
        with httpx.Client(base_url=url, timeout=60) as http:
            for i in range(per_client):
                text = texts[(k * per_client + i) % len(texts)]
                start = time.perf_counter()
                r = http.post("/predict", json={"text": text, "model": model})
                ms = (time.perf_counter() - start) * 1000
                ok = r.status_code == 200 and r.json()["models"][0]["results"][0]["spans"] == want[text]
                out.append((ms, ok))
        return out

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = [x for chunk in pool.map(client, range(clients)) for x in chunk]
    wall = time.perf_counter() - start
    latencies = [ms for ms, _ in results]
    return {"clients": clients, "requests": len(results), "failures": sum(not ok for _, ok in results),
            "seconds": wall, "requests_per_second": len(results) / wall,
            "p50_ms": float(np.percentile(latencies, 50)), "p95_ms": float(np.percentile(latencies, 95)),
            "mean_ms": statistics.fmean(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="model to serve (the first RUN_DIR of kner serve)")
    parser.add_argument("--data", help="KLUE NER release folder for the dev sentences")
    parser.add_argument("--clients", default="1,8,32", help="comma-separated parallel client counts")
    parser.add_argument("--requests", type=int, default=400, help="requests per client count (split over clients)")
    parser.add_argument("--sentences", type=int, default=500, help="distinct dev sentences to cycle through")
    parser.add_argument("--startup-timeout", type=float, default=120)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    texts = [ex.text for ex in load_split("dev", args.data, limit=args.sentences)]
    tagger = kner.load(args.run_dir)
    want = {t: [s.to_dict(t) for s in spans] for t, spans in zip(texts, tagger.predict(texts))}
    port = free_port()
    proc = start_server([args.run_dir], port, args.startup_timeout)
    url, model = f"http://127.0.0.1:{port}", Path(args.run_dir).resolve().name
    try:
        run_level(url, model, texts, want, 1, 20)  # warm-up: connections, caches
        rows = []
        for clients in (int(c) for c in args.clients.split(",")):
            per_client = max(1, args.requests // clients)
            rows.append(run_level(url, model, texts, want, clients, per_client))
            r = rows[-1]
            print(f"{clients:>3} clients: {r['requests']} requests, {r['requests_per_second']:.1f} req/s, "
                  f"p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, failures {r['failures']}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print("\n| clients | requests | req/s | p50 ms | p95 ms | failures |\n|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['requests_per_second']:.1f} | {r['p50_ms']:.1f} | "
              f"{r['p95_ms']:.1f} | {r['failures']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"run_dir": args.run_dir, "levels": rows}, indent=2), encoding="utf-8")
    if any(r["failures"] for r in rows):
        raise SystemExit("some requests failed or were answered differently from the model's own predict")


if __name__ == "__main__":
    main()
