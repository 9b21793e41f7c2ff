"""Special ids, target-language tags and the project's SentencePiece model.

`data/vocab/mtmoe.model` (trained by `python -m mtmoe.data.build.train_vocab`
on the embedded corpus) is a unigram SentencePiece model with byte fallback:
ids pad 0, eos 1, unk 2 (the T5 convention seqio expects), no bos, then one
user-defined piece per language tag (`<2de>`, `<2zh-Hans>`, `<2en>`, ...), then
the learned pieces. seqio appends 100 sentinel ids (`extra_ids=100`) after them
for span corruption, as T5 and mT5 do, so a model's vocab_size is
`sp.vocab_size() + 100` rounded up to a multiple of 128 (`model_vocab_size`).

    >>> sp = load_sentencepiece()
    >>> sp.encode(language_tag("de") + " Save the file", out_type=str)[:2]
    ['▁', '<2de>']

The tag is one piece; the `▁` before it is SentencePiece's dummy prefix, there
alike in training (`tasks/`) and in the Translator, which both encode `<2de> text`.

Imports only sentencepiece (when a model is loaded): the Translator and the web
UI use it. The seqio vocabulary over the same file is `tasks.vocab.get_vocabulary`.
"""

from __future__ import annotations

import functools
import os

from mtmoe.data import layouts

PAD_ID = 0   # also the decoder's start token (T5)
EOS_ID = 1
UNK_ID = 2   # never produced by the project model: byte fallback spells unknown characters
BOS_ID = -1  # none: the target-language tag starts the source instead
EXTRA_IDS = 100          # span-corruption sentinels appended by seqio
VOCAB_SIZE_MULTIPLE = 128  # embedding rows padded so the vocab axis splits evenly over a model mesh axis
DEFAULT_SPM_PATH = os.fspath(layouts.DATA_DIR / "vocab" / "mtmoe.model")
TRAIN_COMMAND = "python -m mtmoe.data.build.train_vocab"


def language_tag(lang: str) -> str:
    """The piece that asks for a target language: `language_tag("pt-BR") == "<2pt-BR>"`."""
    if not lang or any(ch.isspace() or ch in "<>" for ch in lang):
        raise ValueError(f"bad language code {lang!r}: use a corpus code such as 'de' or 'pt-BR'")
    return f"<2{lang}>"


def tag_language(piece: str) -> str | None:
    """The language a tag piece asks for (`"<2de>"` -> "de"); None for any other piece."""
    if piece.startswith("<2") and piece.endswith(">") and len(piece) > 3:
        return piece[2:-1]
    return None


def check_model_path(path: str) -> str:
    """`path` when it is a file; FileNotFoundError saying how to build one otherwise."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no SentencePiece model at {path}: run `{TRAIN_COMMAND}` "
                                f"or pass the path of an existing .model file")
    return path


@functools.lru_cache(maxsize=8)
def load_sentencepiece(path: str = DEFAULT_SPM_PATH):
    """A `sentencepiece.SentencePieceProcessor` for `path` (no TensorFlow import)."""
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=check_model_path(path))


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
            code = tag_language(sp.id_to_piece(piece_id))
            if code is not None:
                codes.append(code)
            elif codes:
                break            # tags are contiguous user-defined pieces right after the specials
    return codes
