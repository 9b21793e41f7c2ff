"""Translator: load a checkpoint directory and translate text (used by eval/ and app/).

    from mtmoe.translate import Translator
    translator = Translator.from_checkpoint("/tmp/demo")
    translator.translate(["Open the file."], "de")          # -> ["Öffnen Sie die Datei."]
    translator.route("Open the file.", "de")                 # expert per source token, per MoE layer

A checkpoint directory is self-describing (see mtmoe.checkpoints): its `meta`
holds the model config, the language pairs it was trained on, the gin config
and the SentencePiece model, so nothing else is needed. Parameters are
restored onto one device whatever mesh they were trained on.

Sources are formatted exactly as the translation tasks do
(tasks/preprocessors.add_target_tag): "<2de> " + text, SentencePiece, EOS
(tags and special ids: mtmoe.data.vocabulary).
Batches are bucketed to powers of two in batch size and source length (and
the decode length follows from the source length bucket), so each shape
compiles once; long sentences go in smaller batches (Translator._chunks). Decoding runs the model's inference module, whose MoE routing
drops no token: a sentence translates the same alone and in any batch. No
TensorFlow or seqio import here.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mtmoe.data.vocabulary import EOS_ID, language_tag, load_sentencepiece

log = logging.getLogger(__name__)

MIN_LENGTH_BUCKET = 8
MAX_BATCH_BUCKET = 32  # bigger batches gain little on CPU and multiply the cache size with beams
# Source tokens (rows x length bucket) of one CPU decode call: 32 sentences of up to 32
# tokens, 8 of up to 128. On the shipped model's test sentences (beam 4) this decodes
# 400 sentences in 41 s where calls of 32 whatever their length took 61 s, with the same
# hypotheses (benchmarks/harness.py); 512 and 2048 were no faster.
CPU_TOKENS_PER_CALL = 1024
PARAM_DTYPE = jnp.float32  # the dtype every layer creates its params in (STYLE: params float32, cast at use)


def _bucket(n: int, *, minimum: int) -> int:
    """Smallest power of two >= max(n, minimum)."""
    n = max(n, minimum)
    return 1 << (n - 1).bit_length()


class Translator:
    """Translate with a trained model; see the module docstring.

    Attributes: languages (target codes), source_languages, step, model, params.
    """

    def __init__(self, *, model, params, vocab_path: str | None = None, vocab_bytes: bytes | None = None,
                 language_pairs: Sequence[Sequence[str]] = (), max_length: int = 128, step: int = 0,
                 decode_batch: int | None = None):
        """decode_batch: rows of every decode call. None (CPU): up to MAX_BATCH_BUCKET sentences,
        rounded up to a power of two. N (accelerators): N sentences a call, padded to exactly N
        rows, so the beam search compiles once per length bucket."""
        import sentencepiece

        if decode_batch is not None and decode_batch < 1:
            raise ValueError(f"decode_batch={decode_batch} must be >= 1 (or None)")

        if vocab_bytes is not None:
            self.sp = sentencepiece.SentencePieceProcessor(model_proto=vocab_bytes)
        elif vocab_path is not None:
            self.sp = load_sentencepiece(vocab_path)
        else:
            raise ValueError("Translator needs vocab_path or vocab_bytes (the SentencePiece model)")
        self.model = model
        self.params = params
        self.step = int(step)
        self.max_length = int(max_length)
        self.decode_batch = decode_batch
        self.language_pairs = [tuple(p) for p in language_pairs]
        self.languages = sorted({t for _, t in self.language_pairs})
        self.source_languages = sorted({s for s, _ in self.language_pairs})
        self._predict = jax.jit(model.predict_batch,
                                static_argnames=("decoding", "beam_size", "alpha", "max_decode_length"))
        self._encoder_intermediates = jax.jit(functools.partial(_encoder_intermediates, model.inference_module))

    # -- loading ----------------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, model_dir: str, *, step: int | None = None) -> "Translator":
        """Load the newest (or the given) readable checkpoint of `model_dir` onto one device."""
        import base64

        from mtmoe import checkpoints, models

        ckpt = checkpoints.Checkpointer(model_dir=model_dir, read_only=True)
        steps = ckpt.all_steps()
        if not steps:
            raise checkpoints.CheckpointError(f"no checkpoints in {model_dir}; train one with python -m mtmoe.train")
        meta = ckpt.read_meta(step if step is not None else steps[-1])
        model = models.model_from_meta(meta["model_config"], meta.get("model_kwargs", {}))
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        if not meta.get("param_shapes"):  # restore() refuses such a checkpoint anyway, less clearly
            raise checkpoints.CheckpointError(f"checkpoint {model_dir} lists no parameter shapes in its meta; it was "
                                              f"not written by mtmoe.checkpoints")
        # The tree tracing the model's init would give, without its 0.3-0.4 s: every layer creates its
        # params in float32 (tests/test_translate.py pins this against jax.eval_shape). A checkpoint
        # stored in another dtype (bfloat16 exports) is cast to float32 on restore, as before. A model
        # whose code no longer has these parameters fails at its first call, naming the parameter.
        abstract = checkpoints.abstract_params(meta["param_shapes"], dtype=PARAM_DTYPE, sharding=device)
        restored = ckpt.restore_latest(abstract_params=abstract, step=step)
        if restored is None:
            raise checkpoints.CheckpointError(f"no readable checkpoint in {model_dir}")
        vocab = restored.meta.get("vocabulary")
        if not vocab:
            raise checkpoints.CheckpointError(f"checkpoint {model_dir} holds no vocabulary; it was not written by "
                                              f"mtmoe.train")
        ckpt.close()
        return cls(model=model, params=restored.params, vocab_bytes=base64.b64decode(vocab["model_b64"]),
                   language_pairs=restored.meta.get("language_pairs", []),
                   max_length=restored.meta.get("task_feature_lengths", {}).get("targets", 128),
                   step=restored.step)

    # -- encoding ---------------------------------------------------------------------------------

    def _check_target(self, target_lang: str) -> None:
        if self.languages and target_lang not in self.languages:
            raise ValueError(f"this model was not trained to translate into {target_lang!r}; "
                             f"choose one of {', '.join(self.languages)}")
        if self.sp.piece_to_id(language_tag(target_lang)) == self.sp.unk_id():
            raise ValueError(f"the vocabulary has no tag {language_tag(target_lang)} for {target_lang!r}")

    def encode_source(self, text: str, target_lang: str) -> list[int]:
        """Token ids of one source sentence as the training tasks made them: tag, text, EOS."""
        return list(self.sp.encode(f"{language_tag(target_lang)} {text}")) + [EOS_ID]

    def decode_ids(self, ids: Sequence[int]) -> str:
        """Text of output ids up to EOS (ids outside the SentencePiece range are dropped)."""
        out = []
        for token in ids:
            token = int(token)
            if token == EOS_ID:
                break
            if 0 < token < self.sp.get_piece_size():
                out.append(token)
        return self.sp.decode(out)

    # -- translation ------------------------------------------------------------------------------

    def translate(self, texts: Sequence[str], target_lang: str, *, source_lang: str | None = None,
                  beam_size: int = 4, max_length: int | None = None) -> list[str]:
        """Translate `texts` into `target_lang`; returns one string per text, in order.

        source_lang is informational (the model reads the source as it is);
        max_length caps the output tokens (default: about 1.5x the source,
        at least the trained target length; see _output_limit)."""
        if isinstance(texts, str):
            raise TypeError("translate() takes a list of strings; wrap a single text in [ ]")
        self._check_target(target_lang)
        if beam_size < 1:
            raise ValueError(f"beam_size={beam_size} must be >= 1")
        encoded = [self.encode_source(t, target_lang) for t in texts]
        return self.translate_ids(encoded, beam_size=beam_size, max_length=max_length)

    def translate_ids(self, sources: Sequence[Sequence[int]], *, beam_size: int = 4,
                      max_length: int | None = None) -> list[str]:
        """Translate already-encoded sources (tag + pieces + EOS each)."""
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length={max_length} must be >= 1 (or None: about 1.5x the source)")
        results: list[str | None] = [None] * len(sources)
        for chunk, batch_size, length in self._chunks(sources):
            longest = max(len(sources[i]) for i in chunk)
            tokens = np.zeros((batch_size, length), np.int32)  # [B, S]
            for row, index in enumerate(chunk):
                tokens[row, :len(sources[index])] = sources[index]
            tokens[len(chunk):] = tokens[0]  # filler rows copy a real one (no all-padding rows)
            steps, decode_length = self._output_limit(longest, length, max_length)
            decoding = "beam" if beam_size > 1 else "greedy"
            out = self._predict(self.params, {"encoder_input_tokens": jnp.asarray(tokens)}, decoding=decoding,
                                beam_size=beam_size, alpha=0.6, max_decode_length=decode_length,
                                decode_steps=np.int32(steps))
            out = np.asarray(jax.device_get(out))  # [B, L]
            for row, index in enumerate(chunk):
                results[index] = self.decode_ids(out[row])
        return [r if r is not None else "" for r in results]

    def _output_limit(self, longest: int, length_bucket: int, max_length: int | None) -> tuple[int, int]:
        """(output tokens decoded at most, output positions of the compiled search) of one call.

        The limit is max_length when given, else max(the trained target
        length, 1.5 x the longest source + 8) rounded up to a power of two. It
        is a traced argument (mtmoe.decoding), so the compiled shape depends on
        the source length bucket alone: the limit its longest possible source
        would get. Beam search and greedy compile once per (rows, source
        length bucket), whatever the lengths inside the bucket."""
        if max_length is not None:
            return max_length, _bucket(max_length, minimum=MIN_LENGTH_BUCKET)
        limit = lambda source: _bucket(max(self.max_length, int(1.5 * source) + 8),  # noqa: E731
                                       minimum=MIN_LENGTH_BUCKET)
        return limit(longest), limit(length_bucket)

    def _chunks(self, sources: Sequence[Sequence[int]]) -> list[tuple[list[int], int, int]]:
        """(indices of `sources`, rows, source length bucket) of each decode call, longest sources first.

        A decode call costs about rows x steps, and runs until its longest
        sentence is done, so long sentences go in small calls: on CPU a call
        holds at most MAX_BATCH_BUCKET sentences and at most
        CPU_TOKENS_PER_CALL // (its source length bucket), a power of two.
        A call of fewer sentences than that is padded to a power of two, except
        in a bulk job (at least MAX_BATCH_BUCKET sentences: a test set, a file),
        where each shape compiles once (seconds) and padding costs less than
        compiling another shape: every call of a length bucket has the
        bucket's full rows, and the buckets that get the full MAX_BATCH_BUCKET
        rows share the largest of them (CPU_TOKENS_PER_CALL // MAX_BATCH_BUCKET
        source tokens), so short sentences add no program of their own (padded
        source positions are masked in attention and take no expert capacity,
        so padding changes no translation). With decode_batch
        (accelerators) every call holds decode_batch sentences."""
        order = sorted(range(len(sources)), key=lambda i: -len(sources[i]))  # similar lengths share a call
        bulk = len(sources) >= MAX_BATCH_BUCKET
        shared = _bucket(CPU_TOKENS_PER_CALL // MAX_BATCH_BUCKET, minimum=MIN_LENGTH_BUCKET)
        chunks, start = [], 0
        while start < len(order):
            length = _bucket(len(sources[order[start]]), minimum=MIN_LENGTH_BUCKET)
            if self.decode_batch:
                rows = self.decode_batch
            else:
                rows = max(1, min(MAX_BATCH_BUCKET, CPU_TOKENS_PER_CALL // length))
            chunk = order[start:start + rows]
            if not self.decode_batch and bulk:
                length = max(length, shared)
            elif not self.decode_batch:
                rows = _bucket(len(chunk), minimum=1)
            chunks.append((chunk, rows, length))
            start += len(chunk)
        return chunks

    def route(self, text: str, target_lang: str) -> dict[str, Any]:
        """Which expert each source token goes to, per encoder MoE layer.

        Returns {"tokens": [piece, ...] (tag, pieces, "</s>"), "layers": {layer name:
        [expert index per token]}, "fraction_dropped": {layer name: float}}; empty
        "layers" for a dense model. The experts are what each MoE layer sows
        (`expert_index`) while the inference module encodes the sentence."""
        self._check_target(target_lang)
        ids = self.encode_source(text, target_lang)
        length = _bucket(len(ids), minimum=MIN_LENGTH_BUCKET)
        tokens = np.zeros((1, length), np.int32)
        tokens[0, :len(ids)] = ids
        intermediates = jax.device_get(self._encoder_intermediates(self.params, jnp.asarray(tokens)))
        pieces = [self.sp.id_to_piece(i) if i != EOS_ID else "</s>" for i in ids]
        layers, dropped = {}, {}
        for path, sown in traverse_util.flatten_dict(intermediates).items():
            name, value = "/".join(path[:-1]), sown[0]  # sow() keeps a tuple; each layer runs once here
            if path[-1] == "expert_index":
                layers[name] = [int(e) for e in np.asarray(value)[0, :len(ids)]]
            elif path[-1] == "fraction_tokens_dropped":
                dropped[name] = float(value)
        return {"tokens": pieces, "layers": layers, "fraction_dropped": dropped}


def _encoder_intermediates(module, params, encoder_tokens):
    """What the encoder's layers sow ("intermediates") while `module` encodes <int32>[B, S] tokens."""
    _, state = module.apply({"params": params}, encoder_tokens, method=module.encode, mutable=["intermediates"])
    return state.get("intermediates", {})


@functools.lru_cache(maxsize=4)
def cached_translator(model_dir: str, step: int | None = None) -> Translator:
    """One Translator per checkpoint directory per process (eval and app share it)."""
    return Translator.from_checkpoint(model_dir, step=step)
