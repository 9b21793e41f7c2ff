"""Commands that (re)build the shipped data: the embedded corpus and the vocabulary.

    python -m mtmoe.data.build.build_corpus   # data/embedded from Debian's localisation packages
    python -m mtmoe.data.build.train_vocab    # data/vocab/mtmoe.model from data/embedded

build_corpus drives corpus_packages (apt), corpus_help / corpus_gettext /
corpus_firefox (one parser per package kind), corpus_clean (cleaning and the
leak-free split) and corpus_write (the files of `mtmoe.data.layouts`). They
live beside the readers because they write the layout the readers read; none
of them imports seqio or TensorFlow.
"""

import sys

from tqdm import tqdm


def log_line(line: str) -> None:
    """The commands' log: one line on stdout, flushed at once, never written into a progress bar on stderr."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()
