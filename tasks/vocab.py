"""The seqio vocabulary of the tasks: the project's SentencePiece model plus 100 sentinels.

The model file, its special ids and the language tags are `mtmoe.data.vocabulary`
(no TensorFlow); this module wraps the same file as a `seqio.Vocabulary`.
"""

from __future__ import annotations

import functools
import os

import seqio

from mtmoe.data import vocabulary


def get_vocabulary(path: str = vocabulary.DEFAULT_SPM_PATH) -> seqio.SentencePieceVocabulary:
    """`seqio.SentencePieceVocabulary(path, extra_ids=100)`; FileNotFoundError saying how to build it."""
    return seqio.SentencePieceVocabulary(vocabulary.check_model_path(path), extra_ids=vocabulary.EXTRA_IDS)


class _DeferredVocabulary(seqio.SentencePieceVocabulary):
    """The project vocabulary before its model file exists: registration works, use fails.

    At first use it checks the file again and raises the one-line message of
    `mtmoe.data.vocabulary.check_model_path` if it is still missing.
    """

    def _model_context(self):
        if not self._model:
            vocabulary.check_model_path(self.sentencepiece_model_file)
        return super()._model_context()


@functools.lru_cache(maxsize=1)
def default_vocabulary() -> seqio.Vocabulary:
    """The project vocabulary (data/vocab/mtmoe.model, loaded at first use), one shared object."""
    if os.path.isfile(vocabulary.DEFAULT_SPM_PATH):
        return get_vocabulary()
    return _DeferredVocabulary(vocabulary.DEFAULT_SPM_PATH, extra_ids=vocabulary.EXTRA_IDS)
