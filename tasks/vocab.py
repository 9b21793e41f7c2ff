"""The project's SentencePiece vocabulary and target-language tags.

`data/vocab/mtmoe.model` (trained by `tasks/train_vocab.py` on the embedded
corpus) is a unigram SentencePiece model with byte fallback: ids pad 0, eos 1,
unk 2 (the T5 convention seqio expects), no bos, then one user-defined piece per
language tag (`<2de>`, `<2zh-Hans>`, `<2en>`, ...), then the learned pieces.
seqio appends 100 sentinel ids (`extra_ids=100`) after them for span corruption,
as T5 and mT5 do, so a model's vocab_size is `sp.vocab_size() + 100` rounded up
to a multiple of 128 (`model_vocab_size`).

    >>> sp = load_sentencepiece()
    >>> sp.encode(language_tag("de") + " Save the file", out_type=str)[:1]
    ['<2de>']

`load_sentencepiece` imports only sentencepiece: the Translator and web UI use
it and must not import TensorFlow. `get_vocabulary` imports seqio (and with it
TensorFlow) only when called.
"""

from __future__ import annotations

import functools
import os

DEFAULT_SPM_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "data", "vocab", "mtmoe.model")
EXTRA_IDS = 100          # span-corruption sentinels appended by seqio
VOCAB_SIZE_MULTIPLE = 128  # embedding rows padded so the vocab axis splits evenly over a model mesh axis


def language_tag(lang: str) -> str:
    """The piece that asks for a target language: `language_tag("pt-BR") == "<2pt-BR>"`."""
    if not lang or any(ch.isspace() or ch in "<>" for ch in lang):
        raise ValueError(f"bad language code {lang!r}: use a corpus code such as 'de' or 'pt-BR'")
    return f"<2{lang}>"


def _check_path(path: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no SentencePiece model at {path}: run `python -m tasks.train_vocab` "
                                f"or pass the path of an existing .model file")
    return path


@functools.lru_cache(maxsize=8)
def load_sentencepiece(path: str = DEFAULT_SPM_PATH):
    """A `sentencepiece.SentencePieceProcessor` for `path` (no TensorFlow import)."""
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=_check_path(path))


def get_vocabulary(path: str = DEFAULT_SPM_PATH):
    """The seqio vocabulary of the tasks: `seqio.SentencePieceVocabulary(path, extra_ids=100)`."""
    import seqio  # imports TensorFlow: only here, never at module import

    return seqio.SentencePieceVocabulary(_check_path(path), extra_ids=EXTRA_IDS)


def model_vocab_size(path: str = DEFAULT_SPM_PATH) -> int:
    """Embedding rows a model needs: pieces + 100 sentinels, rounded up to a multiple of 128."""
    size = load_sentencepiece(path).vocab_size() + EXTRA_IDS
    return -(-size // VOCAB_SIZE_MULTIPLE) * VOCAB_SIZE_MULTIPLE


def tag_languages(path: str = DEFAULT_SPM_PATH) -> list[str]:
    """The language codes that have a tag piece in the model (in id order)."""
    sp = load_sentencepiece(path)
    codes = []
    for piece_id in range(sp.vocab_size()):
        if not sp.is_control(piece_id) and not sp.is_unknown(piece_id) and not sp.is_byte(piece_id):
            piece = sp.id_to_piece(piece_id)
            if piece.startswith("<2") and piece.endswith(">"):
                codes.append(piece[2:-1])
            elif codes:
                break            # tags are contiguous user-defined pieces right after the specials
    return codes
