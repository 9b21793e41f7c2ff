"""The configuration objects `mtmoe.train.train` takes (T5X's DatasetConfig, CheckpointConfig, ...).

Each groups the settings of one concept and holds its defaults once; gin binds
them in gin/runs/*.gin from the run macros (`BATCH_SIZE`, `SAVE_EVERY`, ...),
so a gin file or a `--gin.NAME=VALUE` flag changes one field and nothing
copies them by hand. They are plain frozen dataclasses: no JAX, seqio or gin
import, and every field's meaning is written once, here.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """Where the training batches come from.

    A seqio task or mixture read through tf.data (`cache_dir` None), or the
    pre-tokenized cache that `python -m mtmoe.token_cache` wrote from that same
    task (`cache_dir` set): the same rows in the same order, read without
    TensorFlow. `module` is imported before the task is looked up (T5X's
    MIXTURE_OR_TASK_MODULE): it registers the tasks.
    """

    mixture_or_task_name: str
    task_feature_lengths: Mapping[str, int]   # {'inputs': L_in, 'targets': L_out}
    batch_size: int                           # global examples (packed rows) per step
    split: str = "train"
    seed: int | None = None                   # None: the run's seed
    pack: bool = True
    shuffle: bool = True
    module: str | None = "tasks"
    use_cached: bool = False                  # seqio's own cache (seqio's cache_tasks_main output)
    # The input pipeline's one shuffle buffer, in examples (None: input_pipeline.MIXTURE_SHUFFLE_BUFFER).
    shuffle_buffer_size: int | None = None
    cache_dir: str | None = None


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """The device mesh ('data', 'expert', 'model') and gradient accumulation."""

    data_parallelism: int | None = None  # None: every device the other two axes leave
    expert_parallelism: int = 1
    model_parallelism: int = 1
    num_microbatches: int = 1


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """When to save, how many to keep, and how a fresh run is initialized.

    `init_checkpoint` starts a fresh run from another model's checkpoint:
    init_mode "params" (same architecture), "upcycle" (dense -> MoE: MLP
    weights copied into every expert, fresh router) or "student" (non-expert
    weights from an MoE teacher); see mtmoe.upcycling."""

    save_every: int = 1000
    keep: int | None = 3
    init_checkpoint: str | None = None
    init_mode: str = "params"

    INIT_MODES = ("params", "upcycle", "student")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Validation loss on a few fixed batches and BLEU / chrF++ on a few pairs.

    every 0: only at the end of the run."""

    every: int = 0
    split: str = "validation"
    batches: int = 4
    bleu_pairs: int = 3
    bleu_examples: int = 32
    beam_size: int = 1


@dataclasses.dataclass(frozen=True)
class DistillationConfig:
    """A teacher checkpoint whose probabilities join the loss (Switch section 4: weight 0.25)."""

    teacher: str | None = None
    teacher_weight: float = 0.25
