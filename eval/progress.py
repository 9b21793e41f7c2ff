"""The harness's progress on stderr: a tqdm bar of sentences decoded, with pairs done and the pair at work.

On a terminal tqdm redraws the bar in place (at most every `min_interval`
seconds). Elsewhere (a log file, CI) the bar is off and one line is written per
finished pair, so logs stay readable:

    1/4 pairs  25%|######                  | 25/100 sentences,  2.50 sent/s, ETA 00:30, en-de
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar:24}| {n_fmt}/{total_fmt} sentences, {rate_fmt}, ETA {remaining}{postfix}"


class Progress:
    """Tracks decoding over pairs; `advance` after each batch, `finish_pair` after each pair."""

    def __init__(self, *, total_pairs: int, total_sentences: int, stream: TextIO | None = None,
                 min_interval: float = 0.5, clock=time.monotonic):
        self.total_pairs, self.total_sentences = total_pairs, total_sentences
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.pairs_done = self.sentences_done = 0
        self.pair = ""
        self.start = clock()
        # disable=None: tqdm turns the bar off where the stream is not a terminal.
        self.bar = tqdm(total=total_sentences, file=self.stream, disable=None, mininterval=min_interval,
                        unit=" sent", bar_format=BAR_FORMAT, desc=self._pairs())
        self.interactive = not self.bar.disable

    def _pairs(self) -> str:
        return f"{self.pairs_done}/{self.total_pairs} pairs"

    def line(self) -> str:
        """The progress so far as one line (what a log gets per finished pair)."""
        return tqdm.format_meter(self.sentences_done, self.total_sentences, self.clock() - self.start,
                                 prefix=self._pairs(), unit=" sent", postfix=self.pair, bar_format=BAR_FORMAT,
                                 ascii=True)

    def start_pair(self, pair: str) -> None:
        self.pair = pair
        self.bar.set_postfix_str(pair)

    def advance(self, sentences: int) -> None:
        self.sentences_done += sentences
        self.bar.update(sentences)

    def finish_pair(self) -> None:
        self.pairs_done += 1
        if self.interactive:
            self.bar.set_description_str(self._pairs())
        else:
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        """Ends the bar's line so later messages start on their own line."""
        self.bar.close()

    def message(self, text: str) -> None:
        """Writes one line (an error or a note) without garbling the bar."""
        self.bar.write(text, file=self.stream)
        self.stream.flush()
