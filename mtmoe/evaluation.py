"""Evaluation during and after training, and file inference (gin/runs/eval.gin, infer.gin).

- `Evaluator`: validation loss / token accuracy on a few fixed batches (every
  process runs the same number, padded with all-padding rows that weigh 0)
  and BLEU / chrF++ (mtmoe.scoring.score_pair) on a few language pairs,
  translating the task's own tokenized sources with the Translator. It reads
  them from the run's data source: seqio, or the pre-tokenized cache.
- `evaluate(...)`: the same for a checkpoint directory, on one device
  (`python -m mtmoe.train --mode=eval --gin_file=gin/runs/eval.gin`).
- `infer(...)`: translate a text file (`--mode=infer --gin_file=gin/runs/infer.gin`).
"""

from __future__ import annotations

import json
import os
from typing import Callable

import numpy as np

from mtmoe import input_pipeline
from mtmoe.command_line import UsageError
from mtmoe.train_config import DatasetConfig, EvalConfig


def _pad_batches(rows: list[dict], *, batch_size: int, num_batches: int | None = None) -> list[dict[str, np.ndarray]]:
    """Stack single examples into batches; the last one is filled with all-padding rows (weight 0),
    and with num_batches all-padding batches are added up to that count."""
    batches = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        batch = {k: np.stack([r[k] for r in chunk]) for k in chunk[0]}
        missing = batch_size - len(chunk)
        if missing:
            batch = {k: np.concatenate([v, np.zeros((missing,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}
        batches.append(batch)
    if num_batches is not None and batches:
        empty = {k: np.zeros_like(v) for k, v in batches[0].items()}
        batches += [empty] * (num_batches - len(batches))
    return batches


class Evaluator:
    """Validation loss on a few fixed batches, and BLEU / chrF++ on a few language pairs.

    source: an `input_pipeline.SeqioSource` or `token_cache.CacheSource`
    (validation rows, BLEU sentences, vocabulary, pairs); config: an EvalConfig."""

    def __init__(self, *, model, source, config, batch_size, mesh, eval_step, process_index, process_count,
                 print_fn):
        self.model, self.source, self.config = model, source, config
        self.mesh, self.eval_step, self.print_fn = mesh, eval_step, print_fn
        self.process_index, self.process_count = process_index, process_count
        self.local_batch = batch_size // process_count
        self.pairs = source.pairs[:config.bleu_pairs]
        self._batches = None
        self._bleu_data = None
        self._translator = None

    def _load(self):
        if self._batches is None:
            try:
                rows = self.source.eval_rows(split=self.config.split, limit=self.config.batches * self.local_batch,
                                             process_index=self.process_index, process_count=self.process_count)
                if not rows and self.process_count > 1:  # this host's shard is empty: it still joins every batch
                    first = self.source.eval_rows(split=self.config.split, limit=1, process_index=0, process_count=1)
                    rows = [{k: np.zeros_like(v) for k, v in first[0].items()}] if first else []
                # Every process runs the same number of batches (the step is collective), padded if short.
                self._batches = _pad_batches(rows, batch_size=self.local_batch,
                                             num_batches=self.config.batches if self.process_count > 1 else None)
            except Exception as err:  # a task without this split: say so once, skip validation loss
                self.print_fn(f"validation loss skipped: split {self.config.split!r} unavailable ({err})")
                self._batches = []
        return self._batches

    def __call__(self, params) -> dict[str, float]:
        import jax

        from mtmoe import partitioning

        out: dict[str, float] = {}
        batches = self._load()
        if batches:
            sums: dict[str, float] = {}
            total_tokens = 0.0
            for batch in batches:
                with partitioning.mesh_context(self.mesh):
                    metrics = jax.device_get(self.eval_step(params, partitioning.shard_batch(batch, self.mesh)))
                tokens = float(metrics["num_target_tokens"])  # per-token means, whatever the batch fill
                total_tokens += tokens
                for k, v in metrics.items():
                    if not k.startswith(("experts/", "num_")):
                        sums[k] = sums.get(k, 0.0) + float(v) * tokens
            if total_tokens:
                out.update({k: v / total_tokens for k, v in sums.items()})
                out["num_target_tokens"] = total_tokens
        if self.pairs and self.config.bleu_examples and self.process_count == 1:
            out.update(self._bleu(params))
        if out and self.process_index == 0:
            shown = " ".join(f"{k} {v:.3f}" for k, v in out.items()
                             if k in ("loss", "accuracy") or k.startswith(("bleu", "chrf")))
            self.print_fn(f"eval: {shown}")
        return out

    def _bleu(self, params) -> dict[str, float]:
        """BLEU / chrF++ per pair on the first `bleu_examples` validation sentences, through the Translator."""
        import jax

        from mtmoe import translate
        from mtmoe.scoring import score_pair

        if self._bleu_data is None:
            self._bleu_data = {}
            for task_name, (source, target) in self.pairs:
                try:
                    self._bleu_data[(source, target)] = self.source.pair_examples(
                        task_name, split=self.config.split, limit=self.config.bleu_examples)
                except Exception as err:  # a task without this split: say so once, score the others
                    self.print_fn(f"BLEU for {source}-{target} skipped: {str(err).splitlines()[0][:200]}")
        if not self._bleu_data:
            return {}
        if self._translator is None:  # one Translator: its jitted decoder compiles once per shape bucket
            self._translator = translate.Translator(
                model=self.model, params=None, vocab_path=self.source.vocabulary.sentencepiece_model_file,
                language_pairs=list(self._bleu_data), max_length=self.source.lengths["targets"])
        translator = self._translator
        translator.params = jax.device_get(params)
        out: dict[str, float] = {}
        for (source, target), (sources, references) in self._bleu_data.items():
            hypotheses = translator.translate_ids(sources, beam_size=self.config.beam_size)
            scores = score_pair(hypotheses, references, target_lang=target)
            out[f"bleu/{source}-{target}"] = float(scores["bleu"])
            out[f"chrf/{source}-{target}"] = float(scores["chrf"])
        return out



def evaluate(*, checkpoint_path: str, dataset_cfg: DatasetConfig, eval_cfg: EvalConfig = EvalConfig(),
             output_dir: str | None = None, print_fn: Callable[[str], None] = print) -> dict[str, float]:
    """Validation loss / accuracy and BLEU / chrF++ of a checkpoint on one device.

    dataset_cfg: the task (or its pre-tokenized cache) to evaluate on;
    task_feature_lengths None = the lengths the checkpoint was trained with.
    Writes <output_dir or checkpoint_path>/eval-<split>-<step>.json; returns the metrics."""
    import dataclasses

    import jax

    from mtmoe import checkpoints, partitioning, translate

    try:
        translator = translate.Translator.from_checkpoint(checkpoint_path)
    except checkpoints.CheckpointError as err:
        raise UsageError(str(err)) from None
    step, meta = checkpoints.read_json_meta(checkpoint_path, step=translator.step)
    if not dataset_cfg.task_feature_lengths:
        dataset_cfg = dataclasses.replace(dataset_cfg, task_feature_lengths=meta["task_feature_lengths"])
    source = input_pipeline.make_source(dataset_cfg)
    mesh = partitioning.make_mesh(data=1, devices=jax.local_devices()[:1])
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    params = jax.device_put(translator.params, replicated)
    eval_step = jax.jit(lambda p, b: translator.model.loss_fn(p, b, None)[1])
    evaluator = Evaluator(model=translator.model, source=source, config=eval_cfg, batch_size=dataset_cfg.batch_size,
                          mesh=mesh, eval_step=eval_step, process_index=0, process_count=1, print_fn=print_fn)
    metrics = evaluator(params)
    out_dir = output_dir or checkpoint_path
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"eval-{eval_cfg.split}-{step}.json")
    checkpoints.write_atomic(path, json.dumps(
        {"step": step, "mixture_or_task_name": dataset_cfg.mixture_or_task_name, **metrics}, indent=1))
    print_fn(f"wrote {path}")
    return metrics


def infer(*, checkpoint_path: str, input_file: str, output_file: str, target_lang: str,
          source_lang: str | None = None, beam_size: int = 4, print_fn: Callable[[str], None] = print) -> int:
    """Translate `input_file` (one sentence per line) into `output_file`; returns the line count."""
    from mtmoe import checkpoints, translate

    if not os.path.isfile(input_file):
        raise UsageError(f"INPUT_FILE {input_file} not found; pass --gin.INPUT_FILE=<text file, one sentence per line>")
    with open(input_file, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    try:
        translator = translate.Translator.from_checkpoint(checkpoint_path)
        outputs = translator.translate(lines, target_lang, source_lang=source_lang, beam_size=beam_size)
    except checkpoints.CheckpointError as err:
        raise UsageError(str(err)) from None
    except ValueError as err:  # unknown target language and the like: the Translator's one-line message
        raise UsageError(str(err)) from None
    checkpoints.write_atomic(output_file, "".join(o + "\n" for o in outputs))
    print_fn(f"translated {len(lines)} lines into {target_lang}: {output_file}")
    return len(lines)
