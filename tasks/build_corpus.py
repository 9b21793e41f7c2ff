"""`python -m tasks.build_corpus`: the corpus builder's former command, kept working.

The builder is `python -m mtmoe.data.build.build_corpus` (same flags), which
starts without the seqio registries this package loads.
"""

import sys

from mtmoe.data.build import build_corpus

if __name__ == "__main__":
    print("note: the corpus builder is now `python -m mtmoe.data.build.build_corpus`", file=sys.stderr)
    sys.exit(build_corpus.main())
