"""Latency of the web UI's translate API with 1 and with 8 clients at once, as `python -m app` serves it.

    .venv/bin/python benchmarks/web_ui_latency.py                    # the shipped model, 5 repetitions, ~2 minutes
    .venv/bin/python benchmarks/web_ui_latency.py --checkpoint runs/demo --clients 1,4,16 --requests 48

The server is `python -m app` in its own process with its default flags (the
shipped model unless --checkpoint; queue concurrency 16, warm-up up to batches
of 4, its default compilation cache). Timing starts once its background
warm-up is done and one untimed round of every client count has run, so the
batch shapes that concurrent requests form are compiled: this is a server in
use, not one starting (that is cold_start.py). Each client is a gradio_client
`Client` calling `/translate` with one short UI sentence per request, source
"auto" (the page's default: the language is detected), target German, beam 4,
one request after the other; the clients of a round run in threads of this
process. Per repetition and client count, --requests requests in all (shared
out among the clients): their p50 and p95 latency, and sentences/s (requests
over the round's wall time). Concurrent requests are batched by the app's model
thread (app/batching.py), so throughput grows with the clients while each
request waits longer.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import os
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, ROOT)

from benchmarks import protocol  # noqa: E402
from benchmarks.app_process import AppProcess  # noqa: E402

NAME = "web_ui_latency"
TARGET = "de"  # German
SENTENCES = [
    "The document could not be saved because the disk is full.",
    "Click here to insert a new table.",
    "Do you want to save the changes?",
    "The file name is not valid.",
    "Select the cells that you want to format.",
    "Open the file in read-only mode.",
    "The connection to the server was lost.",
    "Choose a language for the user interface.",
]


def percentile(values, q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q of all at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def round_of(clients: list, requests: int) -> dict:
    """`requests` translations shared out among `clients`, all at once; latencies and throughput."""
    per_client = requests // len(clients)

    def one_client(index: int) -> list[float]:
        latencies = []
        for i in range(per_client):
            started = time.perf_counter()
            clients[index].predict(SENTENCES[(index + i) % len(SENTENCES)], "auto", TARGET, api_name="/translate")
            latencies.append(time.perf_counter() - started)
        return latencies

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
        latencies = [t for client in pool.map(one_client, range(len(clients))) for t in client]
    wall = time.perf_counter() - started
    return {"p50": percentile(latencies, 0.5), "p95": percentile(latencies, 0.95),
            "sentences_per_s": len(latencies) / wall, "latencies": latencies}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="model directory (default: the app's, the shipped model)")
    parser.add_argument("--clients", default="1,8", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--requests", type=int, default=40,
                        help="requests per repetition and client count (a multiple of every client count)")
    protocol.add_arguments(parser, name=NAME)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.clients.split(",") if n]
    if any(n < 1 or args.requests % n for n in counts):
        parser.error(f"--requests {args.requests} must be a multiple of every --clients count ({args.clients})")
    run = protocol.Run(NAME, args, argv=argv)

    with AppProcess(checkpoint=args.checkpoint) as app:
        app.wait_for_port()
        warm_up = app.wait_for_warm_up()
        clients = {n: [app.client() for _ in range(n)] for n in counts}
        for n in counts:  # compiles the batch shapes concurrent requests form
            round_of(clients[n], args.requests)
        print(f"server up, warm-up done ({warm_up:.1f} s by its log), one untimed round done", flush=True)
        rounds = {n: [] for n in counts}
        for rep, order in enumerate(protocol.orders(counts, args.reps)):
            for n in order:
                rounds[n].append(round_of(clients[n], args.requests))
                r = rounds[n][-1]
                print(f"rep {rep + 1} {n} client(s): p50 {r['p50'] * 1000:.0f} ms, p95 {r['p95'] * 1000:.0f} ms, "
                      f"{r['sentences_per_s']:.1f} sentences/s", flush=True)

    summary = {n: {key: protocol.spread(r[key] for r in rs) for key in ("p50", "p95", "sentences_per_s")}
               for n, rs in rounds.items()}
    model = args.checkpoint or "data/models/mswitch-release"
    headline = " ".join(
        f"{n} client{'s at once' if n > 1 else ''}: p50 {s['p50']['median'] * 1000:.0f} ms, "
        f"p95 {s['p95']['median'] * 1000:.0f} ms, {s['sentences_per_s']['median']:.1f} sentences/s."
        for n, s in summary.items())
    run.write(
        title="Web UI latency",
        about=(f"`python -m app` (default flags, model `{model}`) in its own process, warmed up; clients call "
               "`/translate` through gradio_client over loopback, one short UI sentence per request, source "
               f"\"auto\", target German, beam 4. Each repetition sends {args.requests} requests per client count, "
               "shared out among the clients, each client one request after the other. Latency is per request; "
               "sentences/s is all requests over the round's wall time."),
        table={"columns": ["clients at once", "p50 latency, ms", "p95 latency, ms", "sentences/s"],
               "rows": [[str(n), protocol.fmt_spread(s["p50"], "{:.0f}", 1000),
                         protocol.fmt_spread(s["p95"], "{:.0f}", 1000), protocol.fmt_spread(s["sentences_per_s"], "{:.1f}")]
                        for n, s in summary.items()]},
        headline=headline,
        notes=["The clients run in threads of the benchmark's process, on the same cores as the server."],
        results={"target": TARGET, "checkpoint": model, "requests": args.requests, "warm_up_seconds": warm_up,
                 "summary": {str(n): s for n, s in summary.items()},
                 "rounds": {str(n): rs for n, rs in rounds.items()}},
    )


if __name__ == "__main__":
    main()
