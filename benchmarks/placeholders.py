"""Placeholders kept by translation: how the model should see protected spans, decided on held-out software strings.

    .venv/bin/python benchmarks/placeholders.py           # 8 languages x 150 segments, every variant: ~25 min here
    .venv/bin/python benchmarks/placeholders.py --languages de,ja --segments 40 --variants raw,cut-around,shipped

The segments are `data/placeholders/test.tsv.gz` (`python -m
mtmoe.data.build.placeholder_eval`): 150 English strings with printf and
Python formats, Qt `%1`, XML tags, entities and line breaks from GIMP, GTK,
GLib, VLC, Inkscape, Gramps and Dolphin, products the corpus does not hold,
each with its translation into de, fr, es, it, pt-BR, ru, ja and zh-Hans,
which keep every span of the English. The shipped model
(`data/models/mswitch-release`, beam 4) translates them through
`mtmoe.protected_spans.translate_protected`, one variant at a time:

- `raw`: the text as it is, unprotected: what the translator did before;
- `cut-around`: the text between spans translated piece by piece, spans put
  back in source order;
- `sentinel:<form>`: each span replaced by a numbered sentinel of one form
  (`protected_spans.SENTINEL_STYLES`: `{1}`, `{ $v1 }`, `%1$S`, `%1`,
  `$(ARG1)`) and restored after;
- `a+b`: strategy a, then b on the segments whose spans a did not keep. A
  chain reads the outputs its single strategies gave (decoding is
  deterministic, and a sentence translates the same in any batch), so it
  costs no decoding and has no time of its own;
- `shipped`: `translate_protected` with its default (`DEFAULT_STRATEGY`),
  translated afresh.

Per variant and language: the share of segments whose spans all come out
exactly (`protected_spans.check`: the spans recognised in the output are
those of the source, as many times each, in any order, tags nested as in
the source), chrF++ against the catalogs' translations
(`mtmoe.scoring.score_pair`), and the texts sent to the model per segment.
The rule that chose the default, computed in a note: of the variants that
keep the spans of at least `MIN_KEPT` of the segments in every language, the
one with the highest mean chrF++ over the languages. The notes also give the
paired bootstrap p-value of chrF++ between `shipped` and `raw` per language,
and which strategy kept each segment. Nothing is timed (the decoder's speed
is `benchmarks/decode.py`'s): kept shares, chrF++ and model inputs do not
depend on the load, so the run is one pass (`protocol.add_arguments(...,
timed=False)`), and `shipped`, translated afresh, must give what its chain
of single strategies gives.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, ROOT)

from benchmarks import protocol  # noqa: E402

NAME = "placeholders"
MODEL = "data/models/mswitch-release"
BEAM_SIZE = 4
DEFAULT_VARIANTS = ("raw", "cut-around", "sentinel:brace", "sentinel:fluent", "sentinel:printf", "sentinel:qt",
                    "sentinel:argument", "raw+cut-around", "sentinel:qt+cut-around", "sentinel:printf+cut-around",
                    "raw+sentinel:qt+cut-around", "sentinel:qt+sentinel:printf+cut-around", "shipped")
MIN_KEPT = 0.99  # the share of segments whose spans must all come out, in every language, for a variant to qualify


class RecordingTranslator:
    """The model, remembering each output by (text, language): a chain of strategies reads the single strategies'.

    Decoding is deterministic and a sentence translates the same in any batch
    (mtmoe.translate), so a chain built from remembered outputs is what it
    would translate itself; the `shipped` variant is translated afresh all
    the same. `calls` counts the texts that went to the model."""

    def __init__(self, translator):
        self.translator = translator
        self.outputs: dict[tuple[str, str], str] = {}
        self.calls = 0

    def translate(self, texts, target_lang, *, beam_size=BEAM_SIZE):
        texts = list(texts)
        missing = [text for text in dict.fromkeys(texts) if (text, target_lang) not in self.outputs]
        if missing:
            self.calls += len(missing)
            for text, output in zip(missing, self.translator.translate(missing, target_lang, beam_size=beam_size)):
                self.outputs[text, target_lang] = output
        return [self.outputs[text, target_lang] for text in texts]


class Inputs:
    """Counts the texts a variant sends to the model, and passes them on."""

    def __init__(self, translator):
        self.translator, self.count = translator, 0

    def translate(self, texts, target_lang, *, beam_size=BEAM_SIZE):
        self.count += len(texts)
        return self.translator.translate(texts, target_lang, beam_size=beam_size)


def strategy_of(variant: str):
    """The `strategy=` of translate_protected for a variant name ("a+b" is a chain)."""
    from mtmoe import protected_spans

    if variant == "shipped":
        return protected_spans.DEFAULT_STRATEGY
    return tuple(variant.split("+"))


def how_kept(result) -> str:
    """How a segment came out: the strategy that kept its spans, copied, or flagged."""
    return result.strategy if result.intact else "flagged"


def main(argv=None) -> None:
    from mtmoe.data.build import placeholder_eval

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default=placeholder_eval.DEFAULT_OUT, help="the evaluation set (default: %(default)s)")
    parser.add_argument("--languages", default=",".join(placeholder_eval.LANGUAGES),
                        help="comma-separated target languages (default: %(default)s)")
    parser.add_argument("--segments", type=int, default=0, help="the first N segments only (default: all)")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--checkpoint", default=MODEL, help="model directory (default: %(default)s)")
    parser.add_argument("--hyps", default="", help="a folder to write every variant's outputs to (outputs.json)")
    protocol.add_arguments(parser, name=NAME, timed=False)
    args = parser.parse_args(argv)
    from mtmoe import protected_spans

    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v != "shipped" and not set(v.split("+")) <= set(protected_spans.STRATEGIES)]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; give 'shipped' or strategies joined by '+', out of "
                     f"{','.join(protected_spans.STRATEGIES)}")
    segments = placeholder_eval.read_eval_set(args.set)
    if args.segments:
        segments = segments[:args.segments]
    languages = [code for code in args.languages.split(",") if code]
    missing = [code for code in languages if code not in segments[0].references]
    if missing:
        parser.error(f"--languages: {', '.join(missing)} not in {args.set}; it has {', '.join(segments[0].references)}")

    run = protocol.Run(NAME, args, argv=argv)
    from mtmoe import scoring
    from mtmoe.translate import Translator

    model = Translator.from_checkpoint(os.path.join(ROOT, args.checkpoint)
                                       if not os.path.isabs(args.checkpoint) else args.checkpoint)
    recording = RecordingTranslator(model)
    # Single strategies first, so that the chains find every output they need.
    singles = [v for v in variants if "+" not in v]
    chains = [v for v in variants if "+" in v]
    texts = [segment.english for segment in segments]
    spans = [protected_spans.protect(text).spans for text in texts]
    outputs: dict[tuple[str, str], list] = {}
    inputs: dict[tuple[str, str], int] = {}
    for variant in singles + chains:
        for language in languages:
            # Singles go to the model (and are remembered, for the chains); `shipped` goes to the model alone.
            counter = Inputs(model if variant == "shipped" else recording)
            outputs[variant, language] = protected_spans.translate_protected(
                counter, texts, language, beam_size=BEAM_SIZE, strategy=strategy_of(variant))
            inputs[variant, language] = counter.count
        print(f"{variant} done", flush=True)

    per_variant, rows = {}, []
    for variant in variants:
        per_language = {}
        for language in languages:
            results = outputs[variant, language]
            hypotheses = [r.text for r in results]
            references = [segment.references[language] for segment in segments]
            # The one definition of "kept": every span of the source in the output, as many times, in any order.
            kept = [not protected_spans.check(text, segment_spans) for text, segment_spans in zip(hypotheses, spans)]
            score = scoring.score_pair(hypotheses, references, target_lang=language)
            per_language[language] = {
                "kept": sum(kept) / len(kept), "chrf": score["chrf"], "bleu": score["bleu"],
                "flagged": sum(not r.intact for r in results),
                "model_inputs_per_segment": inputs[variant, language] / len(texts),
                "how": dict(collections.Counter(how_kept(r) for r in results)),
                "examples_not_kept": [{"source": text, "output": r.text, "problems": list(r.problems)}
                                      for text, r, ok in zip(texts, results, kept) if not ok][:3],
            }
        all_kept = sum(per_language[lang]["kept"] for lang in languages) / len(languages)
        per_variant[variant] = {"strategy": list(strategy_of(variant)), "languages": per_language, "kept": all_kept}
        model_inputs = sum(inputs[variant, lang] for lang in languages) / (len(languages) * len(texts))
        rows.append([variant, *(f"{100 * per_language[lang]['kept']:.0f} · {per_language[lang]['chrf']:.1f}"
                                for lang in languages), f"{100 * all_kept:.1f}",
                     f"{statistics.mean([per_language[lang]['chrf'] for lang in languages]):.1f}",
                     f"{model_inputs:.2f}"])
    if args.hyps:
        os.makedirs(args.hyps, exist_ok=True)
        with open(os.path.join(args.hyps, "outputs.json"), "w") as f:
            json.dump({"sources": texts, "references": {lang: [s.references[lang] for s in segments]
                                                        for lang in languages},
                       "outputs": {variant: {lang: [r.text for r in outputs[variant, lang]] for lang in languages}
                                   for variant in variants}}, f, ensure_ascii=False)

    notes = []
    if "shipped" in variants and "raw" in variants:
        p_values = {}
        for language in languages:
            references = [segment.references[language] for segment in segments]
            p_values[language] = scoring.paired_bootstrap([r.text for r in outputs["shipped", language]],
                                                          [r.text for r in outputs["raw", language]],
                                                          references, target_lang=language)["chrf"]
        per_variant["shipped"]["chrf_p_against_raw"] = p_values
        differences = ", ".join(
            f"{lang} {per_variant['shipped']['languages'][lang]['chrf'] - per_variant['raw']['languages'][lang]['chrf']:+.1f}"
            f" (p {p_values[lang]:.2f})" for lang in languages)
        notes.append(f"chrF++ of shipped minus raw, with the paired bootstrap p-value (1000 resamples): {differences}.")
        how = collections.Counter()
        for language in languages:
            how.update(per_variant["shipped"]["languages"][language]["how"])
        total = sum(how.values())
        notes.append("How shipped kept the segments (all languages): " + ", ".join(
            f"{name} {100 * count / total:.1f}%" for name, count in how.most_common()) + ".")
    qualified = {v: statistics.mean(r["languages"][lang]["chrf"] for lang in languages) for v, r in per_variant.items()
                 if v != "shipped" and all(r["languages"][lang]["kept"] >= MIN_KEPT for lang in languages)}
    if qualified:
        best = max(qualified, key=qualified.get)
        per_variant_best = {"variant": best, "mean_chrf": qualified[best]}
        notes.append(f"Of the variants that keep the spans of at least {100 * MIN_KEPT:.0f}% of segments in every "
                     f"language, {best} has the highest mean chrF++ ({qualified[best]:.2f}); the shipped default is "
                     f"{'+'.join(protected_spans.DEFAULT_STRATEGY)}.")
    else:
        per_variant_best = None
        notes.append(f"No variant keeps the spans of {100 * MIN_KEPT:.0f}% of segments in every language.")
    chain = "+".join(protected_spans.DEFAULT_STRATEGY)
    if "shipped" in variants and chain in variants:
        differ = [lang for lang in languages
                  if [r.text for r in outputs["shipped", lang]] != [r.text for r in outputs[chain, lang]]]
        notes.append(f"shipped, translated afresh, gives the outputs its chain {chain} read from the single "
                     "strategies in every language." if not differ else
                     f"shipped and its chain {chain} gave different outputs in {', '.join(differ)}: a sentence does "
                     "not translate the same in every batch, so the chains' figures are approximate.")
    headline = ""
    if "shipped" in variants and "raw" in variants:
        shipped, raw = per_variant["shipped"], per_variant["raw"]
        headline = (f"Spans kept in {100 * shipped['kept']:.1f}% of segments by the shipped default "
                    f"(`translate_protected`), against {100 * raw['kept']:.1f}% without protection; "
                    "chrF++ per language: " + ", ".join(
                        f"{lang} {shipped['languages'][lang]['chrf']:.1f} vs {raw['languages'][lang]['chrf']:.1f}"
                        for lang in languages) + ".")
    run.write(
        title="Placeholders kept by translation",
        about=(f"{len(segments)} held-out software strings with placeholders and markup (GIMP, GTK, GLib, VLC, "
               "Inkscape, Gramps, Dolphin gettext catalogs; `data/placeholders/`), translated by the shipped model "
               "(beam 4) into each language. A cell is the share of segments whose protected spans all come out "
               "exactly, in %, then chrF++ against the catalogs' translations. `raw`: no protection (before); "
               "`cut-around`: the text between spans translated piece by piece; `sentinel:<form>`: spans replaced "
               "by numbered sentinels of one form; `a+b`: strategy b on the segments a did not keep; `shipped`: "
               f"`translate_protected`'s default, {'+'.join(protected_spans.DEFAULT_STRATEGY)}. Model inputs: the "
               "texts each variant sends to the model per segment (a cut-around segment sends one per piece)."),
        table={"columns": ["variant", *(f"{lang}: kept % · chrF++" for lang in languages), "kept, all languages %",
                           "mean chrF++", "model inputs per segment"],
               "rows": rows},
        headline=headline,
        notes=notes,
        results={"segments": len(segments), "languages": languages, "set": os.path.relpath(args.set, ROOT),
                 "model": args.checkpoint, "beam_size": BEAM_SIZE,
                 "default_strategy": list(protected_spans.DEFAULT_STRATEGY), "best_qualified": per_variant_best,
                 "variants": per_variant},
    )


if __name__ == "__main__":
    main()
