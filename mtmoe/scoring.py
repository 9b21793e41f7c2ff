"""The one scoring function: sacreBLEU BLEU, chrF++ and (optionally) spBLEU.

Used by `eval/per_language_bleu.py` and by the trainer's evaluation
(mtmoe.evaluation), so that a number logged during training and a number in a
results table mean the same thing.

- BLEU: sacreBLEU with the tokenizer that suits the target language
  (`bleu_tokenizer_for`): sacreBLEU's standard `zh`, `ja-mecab` and `ko-mecab`
  for Chinese, Japanese and Korean (what `BLEU(trg_lang=...)` picks), `char`
  for the other scripts written without spaces between words, `13a` elsewhere.
  MeCab comes with sacreBLEU's ja/ko extras, a dependency of this package;
  without it Japanese and Korean are not scored at all, never with another
  tokenizer, so a figure does not depend on what happens to be installed.
- chrF++: sacreBLEU chrF with `word_order=2` (NLLB's `--chrf-word-order 2`).
- spBLEU: BLEU over the FLORES-200 SentencePiece pieces, only when the caller
  passes the path of that model (`spm_model=`). sacreBLEU's own `flores200`
  tokenizer downloads the model when it is missing; here it is loaded from the
  given path and nothing is ever downloaded.
- Significance (`paired_bootstrap`): sacreBLEU's paired bootstrap resampling
  of two systems' outputs on the same references (`sacrebleu --paired-bs`).

Every line goes through `one_line` first (line breaks inside a sentence become
spaces, the ends are stripped), the same text that the harness writes to its
`hyps/` and `refs/` files, so the sacrebleu command line run on those files
gives exactly these scores.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Sequence

from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.significance import PairedTest
from sacrebleu.tokenizers.tokenizer_spm import TokenizerSPM

CHRF_WORD_ORDER = 2  # chrF++ (Popović 2017), as NLLB reports it
PAIRED_BOOTSTRAP_RESAMPLES = 1000  # sacreBLEU's default for --paired-bs
# sacreBLEU's default SACREBLEU_SEED: with it unset, `sacrebleu --paired-bs` on the
# same files gives the same p-values.
PAIRED_BOOTSTRAP_SEED = 12345

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
    "ii",  # Nuosu (Yi syllabary)
})
_UNSPACED_SCRIPTS = frozenset({"Thai", "Laoo", "Khmr", "Mymr", "Tibt", "Jpan", "Hira", "Kana", "Yiii"})
# Japanese and Korean, in their own scripts, get sacreBLEU's MeCab tokenizers.
_MECAB_LANGUAGES = frozenset({"ja", "ko"})
_MECAB_SCRIPTS = (None, "Jpan", "Kore", "Hang")

# Every boundary `str.splitlines` knows: none of them may survive inside a line
# of a hyps/refs file, or that file would no longer have one line per sentence.
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]+")


def one_line(text: str) -> str:
    """The text as one line: line breaks become one space, the ends are stripped."""
    return _LINE_BREAKS.sub(" ", text).strip()


def _split_code(lang: str) -> tuple[str, str | None]:
    """`zh-Hans` -> ("zh", "Hans"); `pt-BR` -> ("pt", None); `sr-Latn` -> ("sr", "Latn")."""
    parts = lang.replace("_", "-").split("-")
    script = next((p.title() for p in parts[1:] if len(p) == 4 and p.isalpha()), None)
    return parts[0].lower(), script


def bleu_tokenizer_for(lang: str) -> str:
    """The sacreBLEU tokenizer name for BLEU into target language `lang`.

    `bleu_tokenizer_for("zh-Hant") == "zh"`; `"ja"` -> `"ja-mecab"`; `"ko"` ->
    `"ko-mecab"`; `"th"` -> `"char"`; `"de"` -> `"13a"`. A script subtag decides
    where it is given (`"ja-Latn"` -> 13a, `"pa-Arab"` -> 13a, `"jv-Java"` -> 13a).
    """
    base, script = _split_code(lang)
    if script in _HAN_SCRIPTS or (script is None and base in _HAN_LANGUAGES):
        return "zh"
    if base in _MECAB_LANGUAGES and script in _MECAB_SCRIPTS:
        return f"{base}-mecab"
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


def _bleu_metric(target_lang: str) -> BLEU:
    """sacreBLEU BLEU into `target_lang`; ValueError (one line) when its MeCab tokenizer cannot load."""
    tokenize = bleu_tokenizer_for(target_lang)
    if not tokenize.endswith("-mecab"):
        return BLEU(tokenize=tokenize)
    try:
        return BLEU(tokenize=tokenize)
    # sacreBLEU raises RuntimeError when MeCab or its dictionary does not import or load, and
    # AssertionError when the dictionary found is not the one its signature promises.
    except (RuntimeError, AssertionError) as error:
        reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise ValueError(
            f"BLEU into {target_lang!r} needs sacreBLEU's {tokenize} tokenizer, which could not load ({reason}); "
            "reinstall with the ja/ko extras: pip install 'sacrebleu[ja,ko]'") from None


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
      ValueError: counts differ, there is nothing to score, or the MeCab
        tokenizer of a Japanese or Korean target cannot load.
    """
    _check(hypotheses, references)
    hyps = [one_line(h) for h in hypotheses]
    refs = [[one_line(r) for r in references]]
    bleu = _bleu_metric(target_lang)
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


@contextlib.contextmanager
def _sacrebleu_seed(seed: int):
    """SACREBLEU_SEED set to `seed` inside the block: PairedTest reads its seed from nowhere else."""
    previous = os.environ.get("SACREBLEU_SEED")
    os.environ["SACREBLEU_SEED"] = str(seed)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["SACREBLEU_SEED"]
        else:
            os.environ["SACREBLEU_SEED"] = previous


def paired_bootstrap(hypotheses: Sequence[str], baseline_hypotheses: Sequence[str], references: Sequence[str], *,
                     target_lang: str) -> dict[str, float]:
    """p-values of the BLEU and chrF++ differences between two systems on the same references.

    sacreBLEU's paired bootstrap resampling (Koehn 2004), as
    `sacrebleu REF -i BASELINE SYSTEM --paired-bs -m bleu chrf --chrf-word-order 2
    --tokenize T` computes it: `PAIRED_BOOTSTRAP_RESAMPLES` resamples of the
    sentences with seed `PAIRED_BOOTSTRAP_SEED`, whatever SACREBLEU_SEED says, so
    a rerun gives the same p-values. Two-sided: a small p says the systems differ,
    in either direction; p is never below 1 / (resamples + 1).

    Identical outputs get p = 1.0. sacreBLEU's test counts only resamples whose
    difference exceeds the observed one, so on identical outputs (every difference
    zero) it gives its smallest p, 1 / (resamples + 1), although nothing differs.

    Args:
      hypotheses: this system's outputs, one per reference.
      baseline_hypotheses: the baseline's outputs for the same sentences.
      references: one reference translation per sentence.
      target_lang: the language all three are written in; picks BLEU's tokenizer.

    Returns:
      {"bleu": p, "chrf": p}.

    Raises:
      ValueError: counts differ, there is nothing to score, or BLEU's tokenizer cannot load.
    """
    _check(hypotheses, references)
    _check(baseline_hypotheses, references)
    hyps = [one_line(h) for h in hypotheses]
    baseline = [one_line(h) for h in baseline_hypotheses]
    if hyps == baseline:
        return {"bleu": 1.0, "chrf": 1.0}
    metrics = {"bleu": _bleu_metric(target_lang), "chrf": CHRF(word_order=CHRF_WORD_ORDER)}
    with _sacrebleu_seed(PAIRED_BOOTSTRAP_SEED):  # read when the test is built
        test = PairedTest([("baseline", baseline), ("system", hyps)], metrics,
                          [[one_line(r) for r in references]], test_type="bs", n_samples=PAIRED_BOOTSTRAP_RESAMPLES)
    _, columns = test()
    # `columns` holds "System" and then one column per metric, in the order of `metrics`, under
    # sacreBLEU's own names ("BLEU", "chrF2++"); row 1 is the system tested against the baseline.
    results = [column for name, column in columns.items() if name != "System"]
    return {key: float(column[1].p_value) for key, column in zip(metrics, results)}
