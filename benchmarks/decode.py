"""Decoding speed of the shipped model: sentences/s, greedy and beam 4, one sentence a call and 32.

    .venv/bin/python benchmarks/decode.py                          # the headline: 5 repetitions, ~3 minutes
    .venv/bin/python benchmarks/decode.py --sentences 64 --single 64 --reps 7

The shipped model (`data/models/mswitch-release`, loaded with
`Translator.from_checkpoint`) translates real English sentences, the first
`--sentences` of the embedded en-de test set (`data/embedded/test/en-de.tsv.gz`,
first column), into German through `Translator.translate`, the call the
evaluation harness and the web UI make: source and decode lengths bucketed per
call, text in and text out (SentencePiece encoding and decoding are included;
they are a negligible share). Four variants, interleaved:

- greedy, and beam 4 with length penalty 0.6 (the harness's and the web UI's default);
- batch 32: the sentences passed in one translate call of 32, which the
  Translator decodes as the harness's sentences, longest first, in calls of up
  to 32 sentences and 1024 source tokens (`Translator._chunks`);
- batch 1: the first `--single` of the same sentences, one call each, as the web
  UI translates one request (by default the first 16 of the 32, to keep the run
  short; the first of the same list, not picked by length).

Compilation is left out: before the repetitions, every variant's whole workload
runs once untimed, which compiles every shape it needs (the Translator keeps
them compiled). A figure is the variant's sentences over the wall time of its
calls in one repetition; the table also gives the mean seconds per call (at
batch 1, what one request waits). The result also says whether every
repetition gave the same translations, and whether each sentence translated
alone gave the same text as in its batch of 32 (the Translator's promise:
decoding drops no token).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, ROOT)

from benchmarks import protocol  # noqa: E402

NAME = "decode"
MODEL = "data/models/mswitch-release"
SOURCE, TARGET = "en", "de"
BEAM_SIZE = 4
BATCH = 32  # the Translator's MAX_BATCH_BUCKET


def read_sentences(count: int) -> list[str]:
    """The first `count` English sentences of the embedded en-de test set."""
    from mtmoe.data import layouts, readers

    path = layouts.embedded_file(layouts.DEFAULT_EMBEDDED_DIR, "test", TARGET)
    texts = []
    for (text,) in readers.read_tsv(path, columns=(0,)):
        texts.append(text)
        if len(texts) == count:
            return texts
    raise SystemExit(f"{NAME}: {os.path.relpath(path, ROOT)} holds only {len(texts)} sentences; "
                     f"--sentences {count} asks for more")


def make_variants(translator, texts: list[str], single: int, batch: int) -> dict:
    """{variant name: (beam size, batch size, a function translating its sentences, returning {index: text})}."""
    longest_first = sorted(range(len(texts)), key=lambda i: -len(texts[i]))

    def batched(beam_size):
        def run():
            out = {}
            for start in range(0, len(longest_first), batch):
                chunk = longest_first[start:start + batch]
                out.update(zip(chunk, translator.translate([texts[i] for i in chunk], TARGET, beam_size=beam_size)))
            return out
        return run

    def one_by_one(beam_size):
        def run():
            return {i: translator.translate([texts[i]], TARGET, beam_size=beam_size)[0] for i in range(single)}
        return run

    return {
        f"greedy, batch {batch}": (1, batch, batched(1)),
        f"beam {BEAM_SIZE}, batch {batch}": (BEAM_SIZE, batch, batched(BEAM_SIZE)),
        "greedy, batch 1": (1, 1, one_by_one(1)),
        f"beam {BEAM_SIZE}, batch 1": (BEAM_SIZE, 1, one_by_one(BEAM_SIZE)),
    }


def digest(translations: dict) -> str:
    text = "\n".join(translations[i] for i in sorted(translations))
    return hashlib.sha256(text.encode()).hexdigest()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=MODEL, help="model directory (default: %(default)s, the shipped model)")
    parser.add_argument("--sentences", type=int, default=BATCH,
                        help="test sentences translated at batch 32 (default %(default)s: one call)")
    parser.add_argument("--single", type=int, default=16,
                        help="of those, how many are translated one call each (default %(default)s)")
    protocol.add_arguments(parser, name=NAME)
    args = parser.parse_args(argv)
    if args.sentences < 2 or not 1 <= args.single <= args.sentences:
        parser.error(f"--sentences {args.sentences} must be at least 2, and --single {args.single} between 1 and it")
    run = protocol.Run(NAME, args, argv=argv)

    from mtmoe import host_memory
    from mtmoe.translate import Translator

    host_memory.retain_freed_memory()  # as the harness and the web UI do, before JAX allocates

    started = time.perf_counter()
    translator = Translator.from_checkpoint(os.path.join(ROOT, args.checkpoint))
    load_seconds = time.perf_counter() - started
    texts = read_sentences(args.sentences)
    batch = min(BATCH, 1 << (len(texts) - 1).bit_length())  # rows of a call: Translator pads to a power of two
    variants = make_variants(translator, texts, args.single, batch)

    reference, warm_up = {}, {}
    for name, (_, _, translate) in variants.items():  # untimed: compiles every shape the variant uses
        started = time.perf_counter()
        reference[name] = translate()
        warm_up[name] = time.perf_counter() - started
        print(f"{name}: compiled and ran once in {warm_up[name]:.1f} s", flush=True)

    seconds = {name: [] for name in variants}
    changed = {name: 0 for name in variants}
    for rep, order in enumerate(protocol.orders(variants, args.reps)):
        for name in order:
            started = time.perf_counter()
            translations = variants[name][2]()
            seconds[name].append(time.perf_counter() - started)
            changed[name] += translations != reference[name]
        print(f"rep {rep + 1}: " + ", ".join(f"{name} {len(reference[name]) / seconds[name][-1]:.2f}/s"
                                              for name in variants), flush=True)

    summary = {}
    for name, (beam_size, rows, _) in variants.items():
        n = len(reference[name])
        summary[name] = {"beam_size": beam_size, "batch": rows, "sentences": n,
                         "sentences_per_second": protocol.spread(n / s for s in seconds[name]),
                         "seconds": protocol.spread(seconds[name]),
                         "warm_up_seconds": warm_up[name], "repetitions_with_other_translations": changed[name],
                         "translations_sha256": digest(reference[name])}
    alone_as_in_batch = {}
    for label in ("greedy", f"beam {BEAM_SIZE}"):
        alone, batched = reference[f"{label}, batch 1"], reference[f"{label}, batch {batch}"]
        alone_as_in_batch[label] = sum(alone[i] == batched[i] for i in alone)

    def cell(name):
        return protocol.fmt_spread(summary[name]["sentences_per_second"], "{:.2f}")

    def per_call(name):
        calls = -(-summary[name]["sentences"] // summary[name]["batch"])
        return protocol.fmt_spread(summary[name]["seconds"], "{:.2f}", scale=1 / calls)

    beam32, beam1 = f"beam {BEAM_SIZE}, batch {batch}", f"beam {BEAM_SIZE}, batch 1"
    greedy32, greedy1 = f"greedy, batch {batch}", "greedy, batch 1"
    notes = [f"Batch 1 translates the first {args.single} of the {args.sentences} sentences; batch {batch} all "
             f"{args.sentences}.",
             f"Translated alone, {alone_as_in_batch['greedy']} of {args.single} sentences gave the same text as in "
             f"their batch of {batch} with greedy decoding, {alone_as_in_batch[f'beam {BEAM_SIZE}']} of "
             f"{args.single} with beam {BEAM_SIZE}.",
             "Untimed before the repetitions, compile included (seconds): "
             + ", ".join(f"{name} {s:.1f}" for name, s in warm_up.items())
             + f"; loading the model took {load_seconds:.1f} s."]
    unstable = [name for name, count in changed.items() if count]
    if unstable:
        notes.append("Translations changed between repetitions (decoding is not deterministic here) for: "
                     + ", ".join(f"{name} ({changed[name]} of {args.reps})" for name in unstable) + ".")
    else:
        notes.append("Every repetition gave the same translations.")
    run.write(
        title="Decoding speed",
        about=(f"`Translator.translate` of the shipped model `{args.checkpoint}` on CPU: the first {args.sentences} "
               f"English sentences of the embedded en-de test set into German, greedy and beam {BEAM_SIZE} (length "
               f"penalty 0.6); batch {batch} as the evaluation harness sends them (longest first, calls of "
               f"{batch}), batch 1 one call per sentence as the web UI does. Text in, text out; compilation "
               "excluded (every variant ran once untimed first)."),
        table={"columns": ["decoding", "batch", "sentences", "sentences/s", "seconds per call"],
               "rows": [["greedy" if s["beam_size"] == 1 else f"beam {s['beam_size']}", str(s["batch"]),
                         str(s["sentences"]), cell(name), per_call(name)] for name, s in summary.items()]},
        headline=(f"Beam {BEAM_SIZE} translates {summary[beam32]['sentences_per_second']['median']:.2f} sentences/s "
                  f"at batch {batch} and {summary[beam1]['sentences_per_second']['median']:.2f} one at a time; "
                  f"greedy {summary[greedy32]['sentences_per_second']['median']:.2f} and "
                  f"{summary[greedy1]['sentences_per_second']['median']:.2f}."),
        notes=notes,
        results={"checkpoint": args.checkpoint, "step": translator.step, "pair": f"{SOURCE}-{TARGET}",
                 "sentences": args.sentences, "single": args.single, "load_seconds": load_seconds,
                 "alone_as_in_batch": alone_as_in_batch, "summary": summary},
    )


if __name__ == "__main__":
    main()
