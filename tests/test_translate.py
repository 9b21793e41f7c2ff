"""Translator on the tiny checkpoint the real trainer wrote (tests/conftest.py: tiny_checkpoint)."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from mtmoe import checkpoints, models, translate
from mtmoe.translate import PARAM_DTYPE, Translator, _bucket

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE_DIR = os.path.join(REPO, "data", "models", "mswitch-release")


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
    assert alone == together  # drop-free routing: neighbours in a batch change nothing


def test_decode_batch_pads_every_call_to_one_shape(translator, monkeypatch):
    texts = ["Save the file", "Open a new window", "Close the tab"]
    default = translator.translate(texts, "de", beam_size=2, max_length=8)
    shapes = []
    predict = translator._predict
    monkeypatch.setattr(translator, "_predict", lambda params, batch, **kw: (
        shapes.append(batch["encoder_input_tokens"].shape), predict(params, batch, **kw))[1])
    monkeypatch.setattr(translator, "decode_batch", 2)
    # 3 sentences in calls of 2 rows: [2 sentences], [1 sentence + 1 filler row].
    assert translator.translate(texts, "de", beam_size=2, max_length=8) == default
    assert [rows for rows, _ in shapes] == [2, 2]
    with pytest.raises(ValueError, match="decode_batch=0 must be >= 1"):
        Translator(model=translator.model, params=translator.params, vocab_bytes=b"", decode_batch=0)


def test_long_sentences_go_in_smaller_calls(translator, monkeypatch):
    monkeypatch.setattr(translate, "CPU_TOKENS_PER_CALL", 64)
    lengths = [3, 40, 9, 20, 5, 33, 4, 6]
    # Longest first; a call's first (longest) sentence sets its rows, 64 // its length bucket:
    # 40 and 33 (bucket 64) one each; 20 (bucket 32) two, taking 9 along; 6 (bucket 8) up to 8.
    chunks = translator._chunks([[7] * n for n in lengths])
    assert [[lengths[i] for i in chunk] for chunk, _, _ in chunks] == [[40], [33], [20, 9], [6, 5, 4, 3]]
    assert [rows for _, rows, _ in chunks] == [1, 1, 2, 4]  # 8 sentences: each call padded to a power of two
    assert [length for _, _, length in chunks] == [64, 64, 32, 8]  # and its own length bucket


def test_a_bulk_jobs_last_call_of_a_bucket_keeps_the_buckets_rows(translator, monkeypatch):
    monkeypatch.setattr(translate, "CPU_TOKENS_PER_CALL", 64)
    monkeypatch.setattr(translate, "MAX_BATCH_BUCKET", 4)
    lengths = [3, 40, 9, 20, 5, 33, 4, 6, 2]
    # 9 sentences >= MAX_BATCH_BUCKET: a bulk job. Rows per bucket: 64 -> 1, 32 -> 2, 8 -> min(4, 64 // 8) = 4;
    # the bucket-8 call [2] is padded to those 4 rows (one shape per bucket), not to 1. The buckets
    # with the full 4 rows (8 and 16) share one source length, 64 // 4 = 16: one shape for both.
    chunks = translator._chunks([[7] * n for n in lengths])
    assert [([lengths[i] for i in chunk], rows, length) for chunk, rows, length in chunks] == [
        ([40], 1, 64), ([33], 1, 64), ([20, 9], 2, 32), ([6, 5, 4, 3], 4, 16), ([2], 4, 16)]


def test_a_bulk_job_pads_short_sources_and_translates_them_as_alone(translator, monkeypatch):
    texts = ["Save the file", "Open a new window", "Close the tab"]
    alone = [translator.translate([t], "de", beam_size=2, max_length=8)[0] for t in texts]
    monkeypatch.setattr(translate, "CPU_TOKENS_PER_CALL", 64)
    monkeypatch.setattr(translate, "MAX_BATCH_BUCKET", 2)  # 3 sentences: a bulk job, shared length 64 // 2
    shapes = []
    predict = translator._predict
    monkeypatch.setattr(translator, "_predict", lambda params, batch, **kw: (
        shapes.append(batch["encoder_input_tokens"].shape), predict(params, batch, **kw))[1])
    assert translator.translate(texts, "de", beam_size=2, max_length=8) == alone
    assert shapes == [(2, 32), (2, 32)]  # sources of under 8 tokens, padded to 32 positions


def test_output_limit_is_traced_so_a_source_bucket_compiles_once(translator, monkeypatch):
    monkeypatch.setattr(translator, "max_length", 8)
    # (limit, compiled positions): limit = max(8, 1.5 x longest + 8) rounded up to a power of two;
    # positions = the limit of the bucket's longest source. 5 tokens: 15.5 -> 16, bucket 8: 20 -> 32.
    assert translator._output_limit(5, 8, None) == (16, 32)
    assert translator._output_limit(8, 8, None) == (32, 32)
    assert translator._output_limit(17, 32, None) == (64, 64)
    assert translator._output_limit(5, 8, 20) == (20, 32)  # a given max_length is exact
    calls = []
    predict = translator._predict
    monkeypatch.setattr(translator, "_predict", lambda params, batch, **kw: (
        calls.append((batch["encoder_input_tokens"].shape, kw["max_decode_length"], int(kw["decode_steps"]))),
        predict(params, batch, **kw))[1])
    short, full = [7, 9, 1], [7, 9, 11, 12, 13, 14, 15, 1]  # 3 and 8 source tokens: bucket 8
    traced = translator.translate_ids([short, full], beam_size=2)
    assert calls == [((2, 8), 32, 32)]  # one call: the longer source sets the limit
    alone = translator.translate_ids([short], beam_size=2)
    assert calls[-1] == ((1, 8), 32, 16)  # alone: same program, a lower limit
    # The traced limit gives what a search compiled for that many positions gives.
    for ids, steps, got in ((short, 32, traced[0]), (full, 32, traced[1]), (short, 16, alone[0])):
        tokens = np.zeros((1, 8), np.int32)
        tokens[0, :len(ids)] = ids
        out = predict(translator.params, {"encoder_input_tokens": tokens}, decoding="beam", beam_size=2,
                      alpha=0.6, max_decode_length=steps)
        assert translator.decode_ids(np.asarray(out)[0]) == got
    with pytest.raises(ValueError, match="max_length=0 must be >= 1"):
        translator.translate_ids([short], max_length=0)


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


def _traced_abstract_params(meta):
    """The params of the meta's model from tracing its init: what the checkpoint's stored shapes must equal."""
    from flax import linen as nn

    model = models.model_from_meta(meta["model_config"], meta.get("model_kwargs", {}))
    shapes = {"encoder_input_tokens": (1, 8), "decoder_input_tokens": (1, 8)}
    return nn.unbox(jax.eval_shape(lambda r: model.get_initial_variables(r, input_shapes=shapes),
                                   jax.random.PRNGKey(0))["params"])


@pytest.mark.parametrize("which", ["tiny", "release"])
def test_meta_shapes_give_the_tree_tracing_init_gives(which, tiny_checkpoint):
    # from_checkpoint builds the params tree from meta["param_shapes"] in float32 instead of tracing init
    _, meta = checkpoints.read_json_meta(tiny_checkpoint if which == "tiny" else RELEASE_DIR)
    traced = _traced_abstract_params(meta)
    from_meta = checkpoints.abstract_params(meta["param_shapes"], dtype=PARAM_DTYPE)
    assert jax.tree.structure(from_meta) == jax.tree.structure(traced)
    assert [(x.shape, x.dtype) for x in jax.tree.leaves(from_meta)] == [(x.shape, x.dtype)
                                                                        for x in jax.tree.leaves(traced)]


def test_params_equal_a_restore_into_the_traced_tree(translator, tiny_checkpoint):
    step, meta = checkpoints.read_json_meta(tiny_checkpoint)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                            _traced_abstract_params(meta))
    expected = checkpoints.Checkpointer(model_dir=tiny_checkpoint, read_only=True).restore(
        step, abstract_params=abstract).params
    assert jax.tree.structure(translator.params) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(translator.params), jax.tree.leaves(expected)):
        assert got.dtype == want.dtype and got.sharding == want.sharding
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_checkpoint_without_param_shapes_is_one_line(tiny_checkpoint, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, model_dir)
    meta_path = model_dir / "checkpoints" / "6" / "meta" / "metadata"
    meta = json.loads(meta_path.read_text())
    del meta["param_shapes"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(checkpoints.CheckpointError, match="lists no parameter shapes") as err:
        Translator.from_checkpoint(str(model_dir))
    assert "\n" not in str(err.value)


def test_params_the_code_lacks_fail_naming_the_parameter(translator):
    # The architecture is not checked at load (the meta's shapes are trusted); a checkpoint whose
    # parameters the model code has lost or renamed fails at the first call instead, saying which.
    params = dict(translator.params)
    params["encoder"] = {("renamed_" + k if k == "encoder_norm" else k): v for k, v in params["encoder"].items()}
    broken = Translator(model=translator.model, params=params, vocab_bytes=translator.sp.serialized_model_proto(),
                        language_pairs=translator.language_pairs, max_length=8)
    with pytest.raises(Exception, match="encoder_norm"):
        broken.translate(["Save the file"], "de", beam_size=1, max_length=8)
