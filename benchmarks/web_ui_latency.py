"""Latency and throughput of the web UI's `translate` API, through gradio_client over loopback.

    python benchmarks/web_ui_latency.py --checkpoint runs/demo
    python benchmarks/web_ui_latency.py --url http://127.0.0.1:7860/   # a server already running

Measures, for English -> the first other target language of the model, with
the API's defaults (beam 4, source given):
  - one sentence per request, one request at a time: p50 / p95 latency;
  - one sentence per request from --threads clients at once: sentences/s and p95
    (a first round compiles the batch shapes the warm-up missed; the second counts);
  - one paragraph of --paragraph sentences per request (split and translated as
    one batch): sentences/s.
With --checkpoint it serves the model in-process exactly as `python -m app`
does (loaded once, warmed for batches up to --warm-batch, queue concurrency --concurrency). Prints one
markdown table.
"""

import argparse
import concurrent.futures
import os
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def serve(checkpoint: str, *, concurrency: int, warm_batch: int) -> tuple[str, object, str]:
    """Start the app on a free loopback port; returns (url, demo, target language)."""
    from app.page import build_app
    from app.server import launch, make_services
    from mtmoe.translate import Translator

    translator = Translator.from_checkpoint(checkpoint)
    services = make_services({os.path.basename(os.path.normpath(checkpoint)): translator}, warm_batch=warm_batch)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = build_app(services)
    _, url, _ = launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, concurrency=concurrency)
    target = next(code for code in translator.languages if code != "en")
    return url, demo, target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--checkpoint", help="serve this checkpoint in-process")
    where.add_argument("--url", help="measure a server already running (then give --target)")
    parser.add_argument("--target", default=None, help="target language (default: the model's first non-English)")
    parser.add_argument("--requests", type=int, default=40, help="sequential one-sentence requests")
    parser.add_argument("--threads", type=int, default=8, help="concurrent clients")
    parser.add_argument("--per-thread", type=int, default=10, help="requests per concurrent client")
    parser.add_argument("--paragraph", type=int, default=16, help="sentences in the paragraph request")
    parser.add_argument("--warm-batch", type=int, default=8, help="warm-up batch sizes of the in-process server")
    parser.add_argument("--concurrency", type=int, default=16, help="queue concurrency of the in-process server")
    args = parser.parse_args()

    from gradio_client import Client

    demo = None
    if args.checkpoint:
        url, demo, target = serve(args.checkpoint, concurrency=args.concurrency, warm_batch=args.warm_batch)
    else:
        if not args.target:
            parser.error("--url needs --target")
        url, target = args.url, args.target
    target = args.target or target
    client = Client(url, verbose=False)

    def one(c, i):
        started = time.perf_counter()
        c.predict(SENTENCES[i % len(SENTENCES)], "en", target, api_name="/translate")
        return time.perf_counter() - started

    paragraph = " ".join(SENTENCES[i % len(SENTENCES)] for i in range(args.paragraph))
    # Steady state: every sentence and the paragraph once, so each shape is compiled.
    for i in range(len(SENTENCES)):
        one(client, i)
    client.predict(paragraph, "en", target, api_name="/translate")
    sequential = [one(client, i) for i in range(args.requests)]

    def worker(own, w):
        return [one(own, w + i) for i in range(args.per_thread)]

    def load() -> tuple[list[float], float]:
        clients = [Client(url, verbose=False) for _ in range(args.threads)]
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
            times = [t for batch in pool.map(worker, clients, range(args.threads)) for t in batch]
        return times, time.perf_counter() - started

    # The first round compiles the batch shapes the warm-up did not cover; the second is measured.
    _, cold_seconds = load()
    loaded, load_seconds = load()

    started = time.perf_counter()
    client.predict(paragraph, "en", target, api_name="/translate")
    paragraph_seconds = time.perf_counter() - started

    print(f"| measure (en->{target}, beam 4, {os.cpu_count()} CPUs) | value |")
    print("|---|---|")
    print(f"| one sentence, p50 | {statistics.median(sequential) * 1000:.0f} ms |")
    print(f"| one sentence, p95 | {percentile(sequential, 0.95) * 1000:.0f} ms |")
    print(f"| {args.threads} concurrent clients, throughput | {len(loaded) / load_seconds:.1f} sentences/s |")
    print(f"| {args.threads} concurrent clients, p95 latency | {percentile(loaded, 0.95) * 1000:.0f} ms |")
    print(f"| {args.threads} concurrent clients, first round (compiling new shapes) | {cold_seconds:.1f} s |")
    print(f"| one {args.paragraph}-sentence paragraph (one batch) | {args.paragraph / paragraph_seconds:.1f} sentences/s |")
    if demo is not None:
        demo.close()


if __name__ == "__main__":
    main()
