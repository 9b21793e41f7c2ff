"""Translator on the tiny checkpoint the real trainer wrote (tests/conftest.py: tiny_checkpoint)."""

import os
import subprocess
import sys

import pytest

from mtmoe.translate import Translator, _bucket

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def translator(tiny_checkpoint):
    return Translator.from_checkpoint(tiny_checkpoint)


def test_loads_what_the_run_trained(translator):
    assert translator.step == 6
    assert translator.languages == ["de", "en", "fr", "pt-BR", "zh-Hans"]
    assert translator.source_languages == ["de", "en", "fr", "pt-BR", "zh-Hans"]


def test_translates_in_order_and_independently_of_the_batch(translator):
    texts = ["Save the file", "Open a new window", "Close the tab"]
    together = translator.translate(texts, "de", beam_size=2, max_length=8)
    assert len(together) == 3 and all(isinstance(t, str) for t in together)
    alone = [translator.translate([t], "de", beam_size=2, max_length=8)[0] for t in texts]
    assert alone == together  # no_token_drop routing: neighbours in a batch change nothing


def test_source_formatting_matches_the_tasks(translator):
    # tasks/preprocessors.add_target_tag: "<2de> " + text, then SentencePiece, then EOS (1)
    ids = translator.encode_source("Save the file", "de")
    assert ids[-1] == 1
    assert ids[:-1] == list(translator.sp.encode("<2de> Save the file"))
    assert translator.sp.piece_to_id("<2de>") in ids


def test_bad_requests_say_what_to_do(translator):
    with pytest.raises(ValueError, match="choose one of de, en, fr, pt-BR, zh-Hans"):
        translator.translate(["x"], "xx")
    with pytest.raises(TypeError, match="list of strings"):
        translator.translate("Save the file", "de")


def test_route_names_an_expert_per_token(translator):
    trace = translator.route("Save the file", "de")
    assert trace["tokens"][-1] == "</s>" and "<2de>" in trace["tokens"]
    assert list(trace["layers"]) == ["encoder/layers_1/moe"]  # the one MoE layer of the 2-layer encoder
    experts = trace["layers"]["encoder/layers_1/moe"]
    assert len(experts) == len(trace["tokens"]) and all(0 <= e < 4 for e in experts)
    assert trace["fraction_dropped"] == {"encoder/layers_1/moe": 0.0}


def test_shape_buckets_are_powers_of_two():
    assert [_bucket(n, minimum=8) for n in (1, 8, 9, 16, 17, 100)] == [8, 8, 16, 16, 32, 128]


def test_never_imports_tensorflow_or_seqio(tiny_checkpoint):
    code = ("import sys\n"
            "sys.modules['tensorflow'] = None; sys.modules['seqio'] = None  # any import of them fails\n"
            "from mtmoe.translate import Translator\n"
            f"t = Translator.from_checkpoint({tiny_checkpoint!r})\n"
            "print(len(t.translate(['Close the tab'], 'fr', beam_size=1, max_length=8)))\n")
    env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "1"
