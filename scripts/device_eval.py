"""Run eval/per_language_bleu.py on an accelerator, with big fixed-size decode batches.

    python scripts/device_eval.py --batch 256 -- --split test --beam_size 4 --batch_size 256 --output $OUT/test

Everything after `--` goes to eval/per_language_bleu.py unchanged. The one
difference from running the harness directly: `mtmoe.translate.Translator`
decodes at most MAX_BATCH_BUCKET (32) sentences per call and rounds a batch up
to a power of two, which suits the 2-core CPU. On a GPU, 32 sentences leave it
idle and every distinct batch size is another compilation of the beam search,
so here every call is padded to exactly `--batch` rows: one batch shape per
(source length, decode length) bucket. Padding rows copy a real sentence and
their outputs are dropped; a sentence's translation does not depend on its
batch (decoding routes with no_token_drop), so the scores are those of the
plain harness. Used by the release model's full test-set evaluation (issue 9).
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


def main(argv: list[str]) -> None:
    if "--" in argv:
        split = argv.index("--")
        ours, harness = argv[:split], argv[split + 1:]
    else:
        ours, harness = argv, []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="rows of every decode call (default 256)")
    args = parser.parse_args(ours)
    if args.batch < 1 or args.batch & (args.batch - 1):
        parser.error(f"--batch {args.batch} must be a power of two, e.g. 256")

    sys.path.insert(0, ROOT)
    from mtmoe import translate

    plain_bucket = translate._bucket  # pylint: disable=protected-access

    def fixed_batch_bucket(n: int, *, minimum: int) -> int:
        # translate_ids calls _bucket(len(chunk), minimum=1) for the batch and minimum=8 for lengths.
        return args.batch if minimum == 1 else plain_bucket(n, minimum=minimum)

    translate.MAX_BATCH_BUCKET = args.batch
    translate._bucket = fixed_batch_bucket  # pylint: disable=protected-access
    sys.argv = [os.path.join(ROOT, "eval", "per_language_bleu.py"), *harness]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
