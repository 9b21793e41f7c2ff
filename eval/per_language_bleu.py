"""Scores a checkpoint on every language pair: BLEU and chrF++ per pair, averages, table, plot.

    python eval/per_language_bleu.py --checkpoint runs/demo
    python eval/per_language_bleu.py --checkpoint runs/demo --pairs en-de,de-en --max_sentences 100
    python eval/per_language_bleu.py --checkpoint DIR --data flores200:~/flores200_dataset \
        --spm_model ~/flores200_sacrebleu_tokenizer_spm.model --bucket_edges 1000000,100000

Translates each pair's test sentences with `mtmoe.translate.Translator`, scores
them with `mtmoe.scoring.score_pair` (the function the seqio tasks' metrics
use), and writes into OUT (default: CHECKPOINT/per_language_bleu/<data>-<split>-step<N>):

- results.json  {"pairs": {"en-de": {"bleu", "chrf", "n", "bleu_signature", "chrf_signature", ...}},
                 "averages": {"en-xx", "xx-en", "buckets": {...}}, "step", ...}
- results.csv, results.md (table sorted by training size, averages, bucket edges)
- hyps/<pair>.txt, refs/<pair>.txt  one sentence a line: `sacrebleu refs/en-de.txt -i hyps/en-de.txt
  -m bleu chrf --chrf-word-order 2 --tokenize 13a` gives the same numbers
- per_language_bleu.png  BLEU per language, both directions (and the delta to --baseline)

--baseline RESULTS_JSON compares each pair with the run that wrote that file:
the BLEU and chrF++ deltas and their p-values from sacreBLEU's paired bootstrap
resampling (`mtmoe.scoring.paired_bootstrap`) over both runs' hyps/ files.
A pair is compared only when both runs scored it with the same sacreBLEU
signatures on the same references; otherwise it gets one line naming what
differs, no delta, and the exit status is 1.

Pairs already in OUT are not decoded again (rerun after an interruption to
resume); --overwrite starts afresh. Bad input (a pair the model was not
trained for, an unknown code, a malformed test file, ...) gets one line on
stderr and the other pairs are still scored; the exit status is then 1.
Never imports TensorFlow or seqio, and never downloads anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from eval import buckets as bucket_lib
from eval import data_sources, plot, report
from eval.progress import Progress
from mtmoe import compilation_cache, host_memory, scoring
from mtmoe.data import languages

REPO_ROOT = data_sources.REPO_ROOT

# The checkpoint scored when --checkpoint is left out: the model `make demo` trains
# (Makefile DEMO_DIR). Set to None to make --checkpoint required.
DEFAULT_CHECKPOINT: Path | None = REPO_ROOT / "data" / "models" / "mswitch-release"  # the shipped model
DEFAULT_RESOURCE_SIZES = data_sources.DEFAULT_EMBEDDED_DIR / "stats.json"
RUN_KEYS = ("checkpoint", "step", "data", "split", "max_sentences", "beam_size")  # results in OUT must match these to resume


class UsageError(Exception):
    """Bad input that stops the whole run; the message is one line saying what to change."""


@dataclasses.dataclass
class RunResult:
    results: dict          # the results.json object
    out_dir: Path
    errors: list[str]      # one line per pair (or line of data) that was not scored
    decoded_pairs: list[str]
    seconds: float         # wall time of this run's decoding and scoring
    # One line per pair shared with --baseline but not comparable. It fails the run like a pair not
    # scored: a script that gates on the exit status asked for this comparison and must not read a
    # missing delta as "no regression".
    not_compared: list[str] = dataclasses.field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.errors or self.not_compared else 0


def load_translator(checkpoint: Path, *, step: int | None):
    """Translator.from_checkpoint with a one-line UsageError for a directory that holds no checkpoint."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise UsageError(f"--checkpoint {checkpoint}: no such directory; pass the model directory "
                         "that mtmoe.train wrote (its MODEL_DIR)")
    from mtmoe.translate import Translator  # pylint: disable=import-outside-toplevel  # JAX: only when needed

    try:
        return Translator.from_checkpoint(str(checkpoint), step=step)
    except Exception as error:  # pylint: disable=broad-except  # any failure here means: not a usable checkpoint
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UsageError(f"--checkpoint {checkpoint}: not a usable checkpoint ({first_line}); pass the "
                         "MODEL_DIR of a training run" + (" and a saved --step" if step is not None else "")) from None


def _trained(translator, src: str, tgt: str) -> bool:
    """Whether the checkpoint was trained on src->tgt: its `language_pairs` when it lists them,
    else its source and target languages (a translator that lists neither accepts every pair)."""
    pairs = getattr(translator, "language_pairs", None)
    if pairs:
        return (src, tgt) in {tuple(pair) for pair in pairs}
    if not translator.languages and not translator.source_languages:
        return True
    return src in translator.source_languages and tgt in translator.languages


def _model_code(code: str, supported: Sequence[str]) -> str:
    """The checkpoint's code for a user's `code` (`zh-CN` -> `zh-Hans`, `deu` -> `de`); `code` when none is near."""
    try:
        return languages.match_language(code, supported)
    except ValueError:
        return code  # _check_pair says why it cannot be scored


def _check_pair(pair: str, translator) -> tuple[str, str]:
    """(src, tgt) of a --pairs entry, in the checkpoint's codes; ValueError (one line) when it cannot be scored."""
    src, tgt = bucket_lib.split_pair(pair)
    src = _model_code(src, translator.source_languages)
    tgt = _model_code(tgt, translator.languages)
    for lang in (src, tgt):
        try:
            languages.get_language(lang)
        except ValueError as error:
            raise ValueError(f"pair {pair}: {error}") from None
    if src == tgt:
        raise ValueError(f"pair {pair}: source and target are the same language")
    if not _trained(translator, src, tgt):
        if src not in translator.source_languages:
            why = f"to translate from {src!r} ({len(translator.source_languages)} source languages: " \
                  f"{_some(translator.source_languages)})"
        elif tgt not in translator.languages:
            why = f"to translate into {tgt!r} ({len(translator.languages)} target languages: " \
                  f"{_some(translator.languages)})"
        else:
            why = f"on {pair} (only on {len(translator.language_pairs)} pairs: " \
                  f"{_some(['-'.join(p) for p in translator.language_pairs])})"
        raise ValueError(f"pair {pair}: the checkpoint was not trained {why}; leave the pair out")
    return src, tgt


def _some(codes: Sequence[str], limit: int = 12) -> str:
    codes = sorted(codes)
    return ", ".join(codes[:limit]) + (", ..." if len(codes) > limit else "")


def _requested_pairs(spec: str, source: data_sources.Source, translator, errors: list[str],
                     notes: list[str]) -> list[tuple[str, str]]:
    if spec == "all":
        known = set(translator.languages) | set(translator.source_languages)
        return [(s, t) for s, t in source.default_pairs(known) if _trained(translator, s, t)]
    pairs = []
    for pair in dict.fromkeys(p.strip() for p in spec.split(",") if p.strip()):
        try:
            checked = _check_pair(pair, translator)
        except ValueError as error:
            errors.append(str(error))
            continue
        if "-".join(checked) != pair:
            notes.append(f"--pairs {pair} is scored as {'-'.join(checked)}, the checkpoint's codes")
        if checked not in pairs:
            pairs.append(checked)
    return pairs


def _load_baseline(path: Path) -> dict:
    try:
        baseline = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--baseline {path}: no such file; pass a results.json of an earlier run") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"--baseline {path}: not JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(baseline, dict) or not isinstance(baseline.get("pairs"), dict):
        raise UsageError(f"--baseline {path}: no \"pairs\" object; pass a results.json this script wrote")
    return baseline


def _resource_sizes(path: Path | None, *, required: bool) -> tuple[dict[str, int], str]:
    """({lang: training pairs}, where they came from); a missing default file means unknown sizes."""
    if path is None:
        return {}, "none given"
    if not required and not Path(path).is_file():
        return {}, f"{path} missing: sizes unknown"
    try:
        return bucket_lib.load_resource_sizes(path), str(path)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _previous_results(out_dir: Path, run_info: dict, *, overwrite: bool) -> dict:
    """Pairs already scored in OUT by a run with the same settings ({} when none or --overwrite)."""
    path = out_dir / "results.json"
    if overwrite:
        for folder in ("hyps", "refs"):
            shutil.rmtree(out_dir / folder, ignore_errors=True)
        return {}
    if not path.is_file():
        return {}
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
        pairs = previous["pairs"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UsageError(f"{path} is not a results file of this script; pass --overwrite to replace it "
                         "or --output for another folder") from None
    differing = [key for key in RUN_KEYS if previous.get(key) != run_info[key]]
    if differing:
        was = ", ".join(f"{key} {previous.get(key)!r}" for key in differing)
        now = ", ".join(f"{key} {run_info[key]!r}" for key in differing)
        raise UsageError(f"{out_dir} holds results with {was}, this run has {now}; pass --overwrite to replace "
                         "them or --output for another folder")
    return {pair: entry for pair, entry in pairs.items()
            if (out_dir / "hyps" / f"{pair}.txt").is_file() and (out_dir / "refs" / f"{pair}.txt").is_file()}


def _translate(translator, test_set: data_sources.TestSet, *, beam_size: int, batch_size: int,
               progress: Progress) -> list[str]:
    """Hypotheses in test-set order; ValueError when the translator returns a wrong count."""
    # Longest first, so that a batch holds similar lengths (less padding) and the slowest batch
    # comes first; the order is restored below. Decoding routes drop-free (MoeConfig.eval_capacity), so a sentence's
    # translation does not depend on its batch neighbours.
    order = sorted(range(len(test_set)), key=lambda i: -len(test_set.sources[i]))
    hypotheses: list[str | None] = [None] * len(test_set)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        outputs = translator.translate([test_set.sources[i] for i in batch], test_set.tgt_lang,
                                       source_lang=test_set.src_lang, beam_size=beam_size)
        if len(outputs) != len(batch):
            raise ValueError(f"pair {test_set.pair}: the translator returned {len(outputs)} hypotheses for "
                             f"{len(batch)} sentences; the pair is not scored")
        for i, output in zip(batch, outputs):
            hypotheses[i] = output
        progress.advance(len(batch))
    return hypotheses


def _summarise(results: dict, *, sizes: dict[str, int], edges: bucket_lib.BucketEdges) -> None:
    """Fills in the per-language sizes and the averages from results["pairs"]."""
    langs = sorted({lang for e in results["pairs"].values() for lang in (e["src"], e["tgt"])} - {"en"})
    results["languages"] = {
        lang: {"name": getattr(languages.find_language(lang), "name", lang), **info}
        for lang, info in bucket_lib.language_sizes(langs, sizes, edges).items()}
    buckets = {lang: info["bucket"] for lang, info in results["languages"].items()}
    results["averages"] = bucket_lib.averages(results["pairs"], buckets=buckets)


def _signature_difference(here: str, there: str) -> str:
    """The fields two sacreBLEU signatures disagree on: "tok ja-mecab-0.996-IPA here, char in the baseline"."""
    fields_here, fields_there = (dict(f.partition(":")[::2] for f in s.split("|")) for s in (here, there))
    return ", ".join(f"{key} {fields_here.get(key, 'absent')} here, {fields_there.get(key, 'absent')} in the baseline"
                     for key in dict.fromkeys([*fields_here, *fields_there])
                     if fields_here.get(key) != fields_there.get(key))


def _comparable_outputs(pair: str, entry: dict, baseline_entry: dict, baseline_dir: Path,
                        out_dir: Path) -> tuple[list[str], list[str], list[str]]:
    """(hypotheses, baseline hypotheses, references) of `pair`; ValueError (one line) when the runs differ in
    how they scored it or what they scored it on."""
    for metric, name in (("bleu", "BLEU"), ("chrf", "chrF++")):
        signature = baseline_entry.get(f"{metric}_signature")
        if metric not in baseline_entry or signature is None:
            raise ValueError(f"the baseline has no {name} score or signature; rerun it with this script")
        if signature != entry[f"{metric}_signature"]:
            raise ValueError(f"{name} signatures differ ({_signature_difference(entry[f'{metric}_signature'], signature)}); "
                             "rerun the baseline with this script and sacreBLEU (--overwrite) to score both alike")
    baseline_hyps, baseline_refs = (baseline_dir / folder / f"{pair}.txt" for folder in ("hyps", "refs"))
    if not (baseline_hyps.is_file() and baseline_refs.is_file()):
        raise ValueError(f"{baseline_hyps} or {baseline_refs} is missing; pass the results.json in the folder "
                         "its run wrote, beside its hyps/ and refs/")
    references = report.read_lines(out_dir / "refs" / f"{pair}.txt")
    theirs = report.read_lines(baseline_refs)
    if theirs != references:
        where = (f"{len(theirs)} sentences there, {len(references)} here" if len(theirs) != len(references) else
                 f"sentence {next(i for i, (a, b) in enumerate(zip(theirs, references)) if a != b) + 1} differs")
        raise ValueError(f"the baseline's references differ ({where}); score both runs with the same --data, "
                         "--split and --max_sentences")
    return report.read_lines(out_dir / "hyps" / f"{pair}.txt"), report.read_lines(baseline_hyps), references


def _compare_with_baseline(results: dict, baseline: dict, baseline_path: Path, out_dir: Path) -> list[str]:
    """Fills results["baseline"] with each pair's BLEU and chrF++ deltas and their paired-bootstrap p-values.

    Pairs the baseline lacks get neither; a shared pair that cannot be compared gets one line, in
    results["baseline"]["not_compared"] and in the returned list.
    """
    comparison = {"path": str(baseline_path), "step": baseline.get("step"),
                  "test": f"paired bootstrap resampling (sacreBLEU --paired-bs), "
                          f"{scoring.PAIRED_BOOTSTRAP_RESAMPLES} resamples, seed {scoring.PAIRED_BOOTSTRAP_SEED}",
                  "delta_bleu": {}, "p_bleu": {}, "delta_chrf": {}, "p_chrf": {}, "not_compared": {}}
    for pair, entry in results["pairs"].items():
        baseline_entry = baseline["pairs"].get(pair)
        if not isinstance(baseline_entry, dict):
            continue
        try:
            hyps, baseline_hyps, refs = _comparable_outputs(pair, entry, baseline_entry, Path(baseline_path).parent,
                                                            out_dir)
            p_values = scoring.paired_bootstrap(hyps, baseline_hyps, refs, target_lang=entry["tgt"])
        except ValueError as error:
            comparison["not_compared"][pair] = f"{pair}: not compared with the baseline: {error}"
            continue
        for metric in ("bleu", "chrf"):
            comparison[f"delta_{metric}"][pair] = entry[metric] - baseline_entry[metric]
            comparison[f"p_{metric}"][pair] = p_values[metric]
    results["baseline"] = comparison
    return list(comparison["not_compared"].values())


def _bucket_edges(text: str | None, *, sizes: dict[str, int]) -> tuple[bucket_lib.BucketEdges, str]:
    """The edges to use and where they come from (stated in results.md): by the sizes, whatever the --data."""
    if text is not None:
        try:
            return bucket_lib.BucketEdges.parse(text), "from --bucket_edges"
        except ValueError as error:
            raise UsageError(str(error)) from None
    return bucket_lib.default_edges(sizes)


def _load_test_sets(source: data_sources.Source, pairs: list[tuple[str, str]], *, max_sentences: int | None,
                    errors: list[str]) -> list[data_sources.TestSet]:
    """All test sets up front (so the bar knows the total and bad data shows before decoding)."""
    test_sets = []
    for src, tgt in pairs:
        try:
            test_set = source.load(src, tgt)
        except data_sources.DataError as error:
            errors.append(str(error))
            continue
        if max_sentences is not None:
            test_set = dataclasses.replace(test_set, sources=test_set.sources[:max_sentences],
                                           references=test_set.references[:max_sentences])
        test_sets.append(test_set)
    return test_sets


def run(*, checkpoint: Path | None = None, translator: Any = None, step: int | None = None, data: str = "embedded",
        split: str = "test", pairs: str = "all", max_sentences: int | None = None, beam_size: int = 4,
        batch_size: int = 256, decode_batch: int | None = None, baseline: Path | None = None, output: Path | None = None, overwrite: bool = False,
        bucket_edges: str | None = None, resource_sizes: Path | None = DEFAULT_RESOURCE_SIZES,
        spm_model: Path | None = None, embedded_dir: Path = data_sources.DEFAULT_EMBEDDED_DIR,
        stream: TextIO | None = None) -> RunResult:
    """Scores every requested pair and writes OUT; see the module docstring.

    `translator` (anything with `.languages`, `.source_languages`, `.step` and
    `.translate(texts, target_lang, *, source_lang, beam_size)`) replaces
    loading `checkpoint`; then `output` is required.

    Raises:
      UsageError: bad input that stops the whole run (no checkpoint, unreadable data, ...).
    """
    stream = stream if stream is not None else sys.stderr
    errors: list[str] = []

    # Everything that can stop the run is checked before the checkpoint loads.
    if translator is None:
        checkpoint = checkpoint if checkpoint is not None else DEFAULT_CHECKPOINT
        if checkpoint is None:
            raise UsageError("--checkpoint is required: pass the MODEL_DIR of a training run")
        if not Path(checkpoint).is_dir():
            hint = " (the default, the shipped model: is data/ complete in this checkout?)" if checkpoint == DEFAULT_CHECKPOINT else ""
            raise UsageError(f"--checkpoint {checkpoint}: no such directory{hint}; pass the model directory "
                             "that mtmoe.train wrote (its MODEL_DIR)")
    if (beam_size < 1 or batch_size < 1 or (max_sentences is not None and max_sentences < 1)
            or (decode_batch is not None and decode_batch < 1)):
        raise UsageError("--beam_size, --batch_size, --decode_batch and --max_sentences must be positive integers")
    if spm_model is not None and not Path(spm_model).is_file():
        raise UsageError(f"--spm_model {spm_model}: no such file; pass the FLORES-200 SentencePiece model "
                         "(it is never downloaded)")
    baseline_results = _load_baseline(baseline) if baseline is not None else None
    try:
        source = data_sources.open_source(data, split=split, embedded_dir=embedded_dir)
    except data_sources.DataError as error:
        raise UsageError(str(error)) from None
    errors += source.problems
    given = resource_sizes != DEFAULT_RESOURCE_SIZES
    if not given and isinstance(source, data_sources.EmbeddedSource):
        resource_sizes = source.directory / "stats.json"  # --data embedded:DIR brings its own sizes
    sizes, sizes_note = _resource_sizes(resource_sizes, required=given)
    edges, edges_note = _bucket_edges(bucket_edges, sizes=sizes)

    if translator is None:
        translator = load_translator(checkpoint, step=step)
    model_languages = set(translator.languages) | set(translator.source_languages)
    if model_languages:  # the data's codes as the model spells them (TSV `zh` -> zh-Hans); none listed: as written
        errors += source.match_languages(model_languages)
    if decode_batch is not None:
        translator.decode_batch = decode_batch
    if output is None:
        if checkpoint is None:
            raise UsageError("--output is required when no --checkpoint is given")
        output = Path(checkpoint) / "per_language_bleu" / f"{source.name}-{split}-step{translator.step}"
    out_dir = Path(output)
    run_info = {"checkpoint": str(Path(checkpoint).resolve()) if checkpoint is not None else None, "step": int(translator.step),
                "data": data, "split": split, "max_sentences": max_sentences, "beam_size": beam_size}

    notes: list[str] = []
    wanted = _requested_pairs(pairs, source, translator, errors, notes)
    done = _previous_results(out_dir, run_info, overwrite=overwrite)
    test_sets = _load_test_sets(source, [p for p in wanted if "-".join(p) not in done],
                                max_sentences=max_sentences, errors=errors)
    if not wanted and not done and pairs == "all":
        errors.append(f"no pairs to score: the checkpoint and --data {data!r} share no language pair; "
                      "pass --data with the languages it was trained on")

    results = {**run_info, "resource_sizes": sizes_note, "bucket_edges": edges.to_json(),
               "bucket_edges_note": edges_note, "pairs": dict(done), "errors": errors}
    summarise = lambda: _summarise(results, sizes=sizes, edges=edges)  # noqa: E731
    progress = Progress(total_pairs=len(test_sets), total_sentences=sum(map(len, test_sets)), stream=stream)
    for message in notes:
        progress.message(f"note: {message}")
    for message in errors:
        progress.message(f"error: {message}")
    if done:
        progress.message(f"note: {len(done)} pairs already scored in {out_dir} are kept (--overwrite redoes them)")
    started = time.monotonic()
    decoded = []
    for test_set in test_sets:
        progress.start_pair(test_set.pair)
        pair_started = time.monotonic()
        try:
            hypotheses = _translate(translator, test_set, beam_size=beam_size, batch_size=batch_size,
                                    progress=progress)
            scores = scoring.score_pair(hypotheses, test_set.references, target_lang=test_set.tgt_lang,
                                        spm_model=str(spm_model) if spm_model is not None else None)
        except ValueError as error:
            errors.append(f"{test_set.pair}: {error}" if test_set.pair not in str(error) else str(error))
            progress.message(f"error: {errors[-1]}")
            continue
        report.write_lines(out_dir / "hyps" / f"{test_set.pair}.txt", [scoring.one_line(h) for h in hypotheses])
        report.write_lines(out_dir / "refs" / f"{test_set.pair}.txt",
                           [scoring.one_line(r) for r in test_set.references])
        results["pairs"][test_set.pair] = {"src": test_set.src_lang, "tgt": test_set.tgt_lang, **scores,
                                           "seconds": round(time.monotonic() - pair_started, 3)}
        decoded.append(test_set.pair)
        summarise()
        report.write_json(out_dir / "results.json", results)  # after every pair: what resuming reads
        progress.finish_pair()
    progress.close()
    seconds = time.monotonic() - started
    results["seconds"] = round(seconds, 3)
    summarise()
    # Once, after decoding: the resamples take about a second per pair of 1,000 sentences.
    not_compared = (_compare_with_baseline(results, baseline_results, baseline, out_dir)
                    if baseline_results is not None else [])
    for message in not_compared:
        print(f"error: {message}", file=stream)
    report.write_reports(out_dir, results)
    if results["pairs"]:
        plot.plot(results, out_dir / "per_language_bleu.png")
    return RunResult(results=results, out_dir=out_dir, errors=errors, decoded_pairs=decoded, seconds=seconds,
                     not_compared=not_compared)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="per_language_bleu.py", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, required=DEFAULT_CHECKPOINT is None,
                        help=f"model directory written by mtmoe.train (MODEL_DIR; default: the shipped model {DEFAULT_CHECKPOINT.relative_to(REPO_ROOT)})")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    parser.add_argument("--data", default="embedded",
                        help="embedded (default) | embedded:DIR | flores200:DIR | opus100:DIR | tsv:FILE")
    parser.add_argument("--split", default="test", choices=data_sources.SPLITS, help="default test")
    parser.add_argument("--pairs", default="all", help="comma-separated pairs (en-de,de-en,zh-Hans-en; other spellings such as en-zh-CN are matched to the checkpoint's codes) or 'all': "
                        "every English-centric pair the checkpoint and the data both hold (for tsv: all its pairs); default all")
    parser.add_argument("--max_sentences", type=_positive_int, default=None, help="score only the first N sentences of each pair (default: all)")
    parser.add_argument("--beam_size", type=_positive_int, default=4, help="default 4 (1: greedy)")
    parser.add_argument("--batch_size", type=_positive_int, default=256, help="sentences per translate call, for progress reports (default 256; the translator splits each into decode calls)")
    parser.add_argument("--decode_batch", type=_positive_int, default=None, metavar="N",
                        help="on an accelerator: pad every decode call to exactly N rows (e.g. 256 with "
                             "--batch_size 256), one compilation per length bucket (default: CPU-sized batches)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="results.json of another run, beside its hyps/ and refs/: adds per pair the BLEU and "
                        "chrF++ deltas (as GShard fig. 6) and their paired-bootstrap p-values")
    parser.add_argument("--output", type=Path, default=None,
                        help="output folder (default: CHECKPOINT/per_language_bleu/<data>-<split>-step<N>)")
    parser.add_argument("--overwrite", action="store_true", help="decode pairs already scored in OUT again")
    compilation_cache.add_arguments(parser, separator="_")
    parser.add_argument("--bucket_edges", default=None, metavar="HIGH,VERY_LOW",
                        help="resource buckets: high > HIGH pairs, very low <= VERY_LOW, low between "
                        "(default: NLLB's 1000000,100000 where a language has over 1000000 training pairs, else "
                        f"{bucket_lib.EMBEDDED_BUCKET_EDGES.high_above},"
                        f"{bucket_lib.EMBEDDED_BUCKET_EDGES.very_low_at_most}, the embedded corpus's)")
    parser.add_argument("--resource_sizes", type=Path, default=DEFAULT_RESOURCE_SIZES,
                        help="training pairs per language: a corpus stats.json or {\"de\": n, ...} "
                        "(default: the embedded corpus's stats.json)")
    parser.add_argument("--spm_model", type=Path, default=None,
                        help="FLORES-200 SentencePiece model: adds spBLEU (never downloaded)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    host_memory.apply_for_command_line()  # before JAX allocates: see mtmoe/host_memory.py
    args = parse_args(argv)
    compilation_cache.configure_compilation_cache(args.compilation_cache)  # before the first compilation: JAX reads it once
    try:
        outcome = run(checkpoint=args.checkpoint, step=args.step, data=args.data, split=args.split, pairs=args.pairs,
                      max_sentences=args.max_sentences, beam_size=args.beam_size, batch_size=args.batch_size,
                      decode_batch=args.decode_batch,
                      baseline=args.baseline, output=args.output, overwrite=args.overwrite,
                      bucket_edges=args.bucket_edges, resource_sizes=args.resource_sizes, spm_model=args.spm_model)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if outcome.results["pairs"]:
        print(report.table_markdown(outcome.results))
    print(f"Wrote {outcome.out_dir}/results.{{json,csv,md}}, per_language_bleu.png, hyps/, refs/ "
          f"({len(outcome.decoded_pairs)} pairs decoded in {outcome.seconds:.1f}s"
          f"{', ' + str(len(outcome.errors)) + ' not scored' if outcome.errors else ''}"
          f"{', ' + str(len(outcome.not_compared)) + ' not compared with the baseline' if outcome.not_compared else ''})",
          file=sys.stderr)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
