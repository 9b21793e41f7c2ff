"""The shipped release model (data/models/mswitch-release) loads and translates across scripts.

Scores, not golden strings: chrF++ of greedy translations of short embedded test
sentences must clear a floor set well under what the model measured
(data/models/mswitch-release/MODEL_CARD.md), so a broken checkpoint, vocabulary or decoder
fails while a retrained model of similar quality passes.
"""

import os

import pytest

from mtmoe.data import layouts, readers

RELEASE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "models",
                           "mswitch-release")
# (source, target): Latin, Cyrillic, Japanese, Chinese and Arabic targets; Greek and Devanagari sources.
DIRECTIONS = [("en", "de"), ("en", "ru"), ("en", "ja"), ("en", "zh-Hans"), ("en", "ar"), ("el", "en"), ("hi", "en")]
SENTENCES = 8
MAX_SOURCE_TOKENS = 14  # with the tag and EOS every source fits the 16-token bucket: one compiled shape
# Measured on these sentences at release (step 4500, greedy): 26.2-51.2 chrF++ per direction,
# mean 35.3 (see the model card); random output of the right script scores under 10.
FLOOR_PER_DIRECTION = 12.0
FLOOR_MEAN = 20.0


@pytest.fixture(scope="module")
def translator():
    from mtmoe.translate import Translator

    return Translator.from_checkpoint(RELEASE_DIR)


def _short_test_pairs(translator, source, target):
    lang = target if source == "en" else source
    english, other = zip(*readers.read_tsv(layouts.embedded_file(layouts.DEFAULT_EMBEDDED_DIR, "test", lang)))
    sources, references = (english, other) if source == "en" else (other, english)
    picked = [(s, r) for s, r in zip(sources, references)
              if len(translator.encode_source(s, target)) <= MAX_SOURCE_TOKENS + 2][:SENTENCES]
    assert len(picked) == SENTENCES, f"not enough short {source}-{target} test sentences"
    return [s for s, _ in picked], [r for _, r in picked]


def test_release_model_is_the_shipped_one(translator):
    assert translator.model.config.moe.num_experts == 8
    assert len(translator.languages) >= 100 and "en" in translator.languages
    assert os.path.isfile(os.path.join(RELEASE_DIR, "MODEL_CARD.md"))


def test_release_model_translates_several_scripts_above_floor(translator):
    from sacrebleu.metrics import CHRF

    chrf = CHRF(word_order=2)
    scores = {}
    for source, target in DIRECTIONS:
        sources, references = _short_test_pairs(translator, source, target)
        hypotheses = translator.translate(sources, target, beam_size=1)
        scores[f"{source}-{target}"] = chrf.corpus_score(hypotheses, [references]).score
    low = {pair: round(score, 1) for pair, score in scores.items() if score < FLOOR_PER_DIRECTION}
    assert not low, f"chrF++ under {FLOOR_PER_DIRECTION}: {low} (all: {scores})"
    assert sum(scores.values()) / len(scores) >= FLOOR_MEAN, scores


def test_release_model_ships_params_only_and_compact():
    """Parameters only (no optimizer state) and under ~60 MB in git: a clone stays small."""
    total = 0
    for root, folders, names in os.walk(RELEASE_DIR):
        assert "opt_state" not in folders, f"{root} holds optimizer state"
        total += sum(os.path.getsize(os.path.join(root, name)) for name in names)
    assert total < 60 * 1024 * 1024
