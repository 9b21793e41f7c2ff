"""`python -m tasks.train_vocab`: the vocabulary trainer's former command, kept working.

The trainer is `python -m mtmoe.data.build.train_vocab` (same flags), which
starts without the seqio registries this package loads.
"""

import sys

from mtmoe.data.build import train_vocab

if __name__ == "__main__":
    print("note: the vocabulary trainer is now `python -m mtmoe.data.build.train_vocab`", file=sys.stderr)
    sys.exit(train_vocab.main())
