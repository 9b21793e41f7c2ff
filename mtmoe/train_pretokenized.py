"""Train from pre-tokenized packed rows (mtmoe.pretokenized) without TensorFlow, seqio or gin.

Used on the lent GPU machine (jax with CUDA, no TensorFlow) by scripts/device_release.sh:

    python -m mtmoe.train_pretokenized prepare --data .release/data --out /tmp/packed.npz --num_examples 4000000
    python -m mtmoe.train_pretokenized train --config .release/configs/release.json --packed /tmp/packed.npz \
        --data .release/data --out $OUT/moe --deadline <unix seconds>

The model, loss, optimizer and train step are the project's own
(`models.EncoderDecoderModel.loss_fn`, `optimizers.adafactor` + `rsqrt_schedule`,
`trainer.make_train_step`); the config JSON holds the TransformerConfig fields and
run settings, written from the gin experiment by `config_json` here. Training
stops at `--deadline` (wall clock), then logs the validation loss, scores greedy
translations of the first dev pairs of every direction (chrF++), and writes the
parameters as flax msgpack in bfloat16, split into <= 15 MiB parts (the device
tool returns files of at most 16 MiB).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

import numpy as np

from mtmoe import host_memory  # standard library only: keeps this module TF- and JAX-free to import

PART_BYTES = 15 << 20   # the device tool returns files of at most 16 MiB
LENGTHS = {"inputs": 64, "targets": 64}


def config_json(*, gin_files: Sequence[str], bindings: Sequence[str] = ()) -> dict:
    """{"model_config", "model_kwargs", "run", "gin_config"} of a gin experiment (run here, where gin is)."""
    import gin

    from mtmoe import command_line, models, network, trainer

    command_line.import_task_registries()
    command_line.parse_gin(gin_files=gin_files, bindings=list(bindings) + ["MODEL_DIR = '/tmp/unused'"])
    with gin.unlock_config():
        text = gin.config_str()
    built = gin.get_configurable(models.EncoderDecoderModel)(config=gin.get_configurable(network.TransformerConfig)())
    run = {name.lower(): gin.query_parameter(f"%{name}") for name in (
        "LEARNING_RATE", "WARMUP_STEPS", "BATCH_SIZE", "MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS")}
    return {"model_config": trainer.config_dict(built.config),
            "model_kwargs": {k: getattr(built, k) for k in ("label_smoothing", "z_loss", "aux_loss_factor",
                                                            "router_z_loss_factor") if hasattr(built, k)},
            "run": run, "gin_config": text}


def build_model(config: dict):
    from mtmoe import models, network

    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in config["model_config"].items()}
    return models.EncoderDecoderModel(config=network.TransformerConfig(**fields), **config["model_kwargs"])


def prepare(*, data: str, out: str, num_examples: int, seed: int, processes: int) -> None:
    from mtmoe import pretokenized

    started = time.time()
    packed = pretokenized.packed_mixture(data, lengths=LENGTHS, num_examples=num_examples, seed=seed,
                                         processes=processes)
    np.savez(out, **packed)
    fill = float((packed["targets"] > 0).mean())
    print(f"packed {num_examples} examples into {len(packed['inputs'])} rows (target fill {fill:.2f}) "
          f"in {time.time() - started:.1f}s", flush=True)


def dev_rows(data: str) -> dict[str, np.ndarray]:
    """Packed validation rows: every task's exported dev pairs, in order."""
    from mtmoe import pretokenized

    corpus = pretokenized.Corpus(data, split="validation")
    inputs, targets = [], []
    for task in corpus.tasks:
        task_inputs, task_targets = corpus.task_examples(task, lengths=LENGTHS)
        inputs += task_inputs
        targets += task_targets
    return pretokenized.pack(inputs, targets, lengths=LENGTHS)


def export_vocabulary(data: str) -> str:
    """The vocabulary file stored in an export (mtmoe.pretokenized.VOCABULARY_FILE)."""
    from mtmoe import pretokenized

    path = os.path.join(data, pretokenized.VOCABULARY_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing; pass --spm <the vocabulary {data} was tokenized with>")
    return path


def dev_chrf(*, model, params, data: str, corpus_dir: str, spm_path: str | None, sentences: int,
             batch_size: int = 512) -> dict:
    """chrF++ of greedy translations of the first `sentences` dev pairs of every task."""
    import jax
    import jax.numpy as jnp
    import sentencepiece
    from sacrebleu.metrics import CHRF

    from mtmoe import pretokenized

    sp = sentencepiece.SentencePieceProcessor(model_file=spm_path or export_vocabulary(data))
    corpus = pretokenized.Corpus(data, split="validation")
    sources, references, owners = [], [], []
    for task in corpus.tasks:
        lang = task["target"] if task["source"] == "en" else task["source"]
        english, other = pretokenized.read_pairs(os.path.join(corpus_dir, "dev", f"en-{lang}.tsv.gz"))
        src, ref = (english, other) if task["source"] == "en" else (other, english)
        for s, r in zip(src[:sentences], ref[:sentences]):
            ids = (list(task["tag_ids"]) + sp.encode(s))[:LENGTHS["inputs"] - 1] + [pretokenized.EOS_ID]
            sources.append(ids)
            references.append(r)
            owners.append(task["name"])
    predict = jax.jit(lambda p, tokens: model.predict_batch(p, {"encoder_input_tokens": tokens}, decoding="greedy",
                                                            max_decode_length=LENGTHS["targets"]))
    hypotheses = []
    for start in range(0, len(sources), batch_size):
        chunk = sources[start:start + batch_size]
        tokens = np.zeros((batch_size, LENGTHS["inputs"]), np.int32)   # [B, S]; fixed shape: one compile
        for row, ids in enumerate(chunk):
            tokens[row, :len(ids)] = ids
        tokens[len(chunk):] = tokens[0]
        out = np.asarray(jax.device_get(predict(params, jnp.asarray(tokens))))  # [B, T]
        for row in range(len(chunk)):
            ids = out[row].tolist()
            ids = ids[:ids.index(1)] if 1 in ids else ids
            hypotheses.append(sp.decode([t for t in ids if 0 < t < sp.get_piece_size()]))
    chrf = CHRF(word_order=2)
    scores = {}
    for task in corpus.tasks:
        picked = [i for i, owner in enumerate(owners) if owner == task["name"]]
        if picked:
            scores[f"{task['source']}-{task['target']}"] = {
                "chrf": chrf.corpus_score([hypotheses[i] for i in picked], [[references[i] for i in picked]]).score,
                "n": len(picked), "example": hypotheses[picked[0]]}
    values = [v["chrf"] for v in scores.values()]
    return {"median_chrf": float(np.median(values)), "mean_chrf": float(np.mean(values)),
            "median_chrf_en_xx": float(np.median([v["chrf"] for k, v in scores.items() if k.startswith("en-")])),
            "median_chrf_xx_en": float(np.median([v["chrf"] for k, v in scores.items() if k.endswith("-en")])),
            "sentences_per_direction": sentences, "directions": scores}


def save_params(params, out_dir: str, *, dtype: str = "bfloat16") -> list[str]:
    """flax msgpack of the params (cast to `dtype`), split into parts <= PART_BYTES; returns the paths."""
    import jax
    import jax.numpy as jnp
    from flax import serialization

    cast = jax.tree.map(lambda x: np.asarray(jax.device_get(x.astype(getattr(jnp, dtype)))), params)
    data = serialization.to_bytes(cast)
    paths = []
    for index, start in enumerate(range(0, len(data), PART_BYTES)):
        path = os.path.join(out_dir, f"params.msgpack.{index:02d}")
        with open(path, "wb") as f:
            f.write(data[start:start + PART_BYTES])
        paths.append(path)
    return paths


def load_params(directory: str):
    """The params tree (numpy arrays, stored dtype) from `save_params`'s parts."""
    from flax import serialization

    parts = sorted(p for p in os.listdir(directory) if p.startswith("params.msgpack."))
    if not parts:
        raise FileNotFoundError(f"no params.msgpack.NN parts in {directory}")
    data = b"".join(open(os.path.join(directory, p), "rb").read() for p in parts)
    return serialization.msgpack_restore(data)


def run_training(*, config_path: str, packed_path: str, data: str, out: str, deadline: float, seed: int,
                 log_every: int, eval_every: int, dev_sentences: int, corpus_dir: str, spm_path: str,
                 max_steps: int | None = None, batch_size: int | None = None, eval_batches: int = 12,
                 params_out: str | None = None) -> dict:
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    from mtmoe import optimizers, pretokenized, trainer

    os.makedirs(out, exist_ok=True)
    started = time.time()
    with open(config_path) as f:
        config = json.load(f)
    run = config["run"]
    model = build_model(config)
    batch_size = int(batch_size or run["batch_size"])
    with np.load(packed_path) as f:
        packed = {k: f[k] for k in f.files}
    reader = pretokenized.BatchReader(packed, batch_size=batch_size, seed=seed)
    dev = pretokenized.features(dev_rows(data))
    dev_batches = [{k: v[i:i + batch_size] for k, v in dev.items()} for i in range(0, len(dev["encoder_input_tokens"]) - batch_size + 1, batch_size)][:eval_batches]
    schedule = optimizers.rsqrt_schedule(base_learning_rate=float(run["learning_rate"]),
                                         warmup_steps=int(run["warmup_steps"]))
    tx = optimizers.adafactor(learning_rate=schedule)
    shapes = {"encoder_input_tokens": (batch_size, LENGTHS["inputs"]), "decoder_input_tokens": (batch_size, LENGTHS["targets"])}
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
    params = jax.jit(lambda r: nn.unbox(model.get_initial_variables(r, input_shapes=shapes)["params"]))(init_rng)
    opt_state = jax.jit(tx.init)(params)
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    step_fn = jax.jit(trainer.make_train_step(model=model, optimizer=tx, learning_rate=schedule, num_microbatches=1),
                      donate_argnums=(0, 1))
    eval_fn = jax.jit(lambda p, b: model.loss_fn(p, b, None)[1])
    healthy = jnp.asarray(True)
    log = {"name": os.path.basename(out.rstrip("/")), "params": count, "batch_size": batch_size,
           "lengths": LENGTHS, "device": str(jax.devices()[0]), "packed_rows": reader.rows,
           "train": [], "validation": []}
    print(f"{log['name']}: {count / 1e6:.2f}M params, {reader.rows} rows, setup {time.time() - started:.1f}s", flush=True)

    def validate(step):
        values = [jax.device_get(eval_fn(params, b)) for b in dev_batches]
        tokens = [float(v["num_target_tokens"]) for v in values]
        mean = lambda k: float(np.average([float(v[k]) for v in values], weights=tokens))  # noqa: E731
        entry = {"step": step, "time": time.time() - train_start, "loss": mean("cross_ent_loss"),
                 "accuracy": mean("accuracy")}
        log["validation"].append(entry)
        print(f"{log['name']} step {step} validation loss {entry['loss']:.3f} acc {entry['accuracy']:.3f}", flush=True)

    step, pending = 0, []
    train_start = time.time()
    first_step_seconds = None
    while time.time() < deadline and (max_steps is None or step < max_steps):
        batch = next(reader)
        params, opt_state, healthy, metrics = step_fn(params, opt_state, healthy, jnp.int32(step), batch, dropout_rng)
        step += 1
        pending.append((step, metrics))
        if step == 1:
            jax.block_until_ready(metrics)
            first_step_seconds = time.time() - train_start  # compile included
            train_start = time.time()
        if step % log_every == 0:
            for logged_step, values in zip([s for s, _ in pending], jax.device_get([m for _, m in pending])):
                if logged_step % log_every == 0:
                    entry = {"step": logged_step, "time": time.time() - train_start, "epoch": reader.epoch,
                             **{k: float(v) for k, v in values.items() if k in (
                                 "loss", "cross_ent_loss", "accuracy", "learning_rate", "grad_norm",
                                 "experts/auxiliary_loss", "experts/fraction_tokens_left_behind",
                                 "experts/router_confidence")}}
                    log["train"].append(entry)
                    print(f"{log['name']} step {logged_step} loss {entry['loss']:.3f} acc {entry['accuracy']:.3f} "
                          f"{entry['time']:.0f}s", flush=True)
            pending.clear()
        if eval_every and step % eval_every == 0:
            validate(step)
    train_seconds = time.time() - train_start
    if not bool(jax.device_get(healthy)):
        print(f"{log['name']}: a step was not finite; the params are the last finite ones", flush=True)
    if not log["validation"] or log["validation"][-1]["step"] != step:
        validate(step)
    log.update(steps=step, train_seconds=train_seconds, first_step_seconds=first_step_seconds,
               epochs=step * batch_size / reader.rows, healthy=bool(jax.device_get(healthy)))
    os.makedirs(params_out or out, exist_ok=True)
    paths = save_params(params, params_out or out)
    log["param_files"] = [os.path.basename(p) for p in paths]
    with open(os.path.join(out, "log.json"), "w") as f:
        json.dump(log, f, indent=1)
    print(f"{log['name']}: {step} steps in {train_seconds:.0f}s, saved {len(paths)} parts", flush=True)
    if dev_sentences:
        scored = time.time()
        log["dev_chrf"] = dev_chrf(model=model, params=params, data=data, corpus_dir=corpus_dir, spm_path=spm_path,
                                   sentences=dev_sentences)
        log["dev_chrf"]["seconds"] = time.time() - scored
        print(f"{log['name']}: dev median chrF++ {log['dev_chrf']['median_chrf']:.1f} "
              f"({time.time() - scored:.0f}s)", flush=True)
        with open(os.path.join(out, "log.json"), "w") as f:
            json.dump(log, f, indent=1)
    return log


def write_checkpoint(*, params_dir: str, config_path: str, data: str, spm_path: str | None, out: str,
                     print_fn=print) -> str:
    """A params-only checkpoint directory that `Translator.from_checkpoint` loads, from `save_params`'s
    parts (kept in their stored dtype), the config JSON, the export's task list and the vocabulary
    the export was tokenized with (checked by sha256). Returns `out`."""
    import hashlib
    import shutil

    import jax

    spm_path = spm_path or export_vocabulary(data)
    from mtmoe import checkpoints

    with open(config_path) as f:
        config = json.load(f)
    with open(os.path.join(data, "meta.json")) as f:
        export_meta = json.load(f)
    with open(spm_path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    if sha != export_meta["spm_sha256"]:
        raise ValueError(f"{spm_path} is not the vocabulary {data} was tokenized with (sha256 {sha[:12]} != "
                         f"{export_meta['spm_sha256'][:12]}); pass that one with --spm")
    with open(os.path.join(params_dir, "log.json")) as f:
        log = json.load(f)
    params = jax.tree.map(np.asarray, load_params(params_dir))
    model = build_model(config)
    shapes = {"encoder_input_tokens": (1, 8), "decoder_input_tokens": (1, 8)}
    from flax import linen as nn

    abstract = jax.eval_shape(lambda r: nn.unbox(model.get_initial_variables(r, input_shapes=shapes)["params"]),
                              jax.random.PRNGKey(0))
    checkpoints.check_architecture(expected=checkpoints.param_shapes(abstract),
                                   found=checkpoints.param_shapes(params), where=params_dir)
    if os.path.exists(out):
        raise ValueError(f"{out} exists; remove it or pass another --out")
    os.makedirs(out)
    meta = {
        "model_config": config["model_config"], "model_kwargs": config["model_kwargs"],
        "gin_config": config["gin_config"], "mixture_or_task_name": export_meta["mixture"],
        "task_feature_lengths": dict(LENGTHS),
        "language_pairs": [[t["source"], t["target"]] for t in export_meta["tasks"]],
        "vocabulary": checkpoints.vocabulary_meta(spm_path, extra_ids=100),
        "data": {"batches_consumed": log["steps"], "batch_size": log["batch_size"], "seed": 0},
        "trained": {k: log.get(k) for k in ("device", "steps", "train_seconds", "epochs", "params")},
    }
    ckpt = checkpoints.Checkpointer(model_dir=out, keep=1)
    ckpt.save(step=int(log["steps"]), params=params, opt_state=None, meta=meta)
    ckpt.close()
    checkpoints.write_atomic(os.path.join(out, "config.gin"), config["gin_config"])
    shutil.copy(spm_path, os.path.join(out, "mtmoe.model"))
    print_fn(f"wrote {out} (step {log['steps']}, {sum(x.size for x in jax.tree.leaves(params)) / 1e6:.2f}M params "
             f"stored as {sorted({str(x.dtype) for x in jax.tree.leaves(params)})})")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    host_memory.apply_for_command_line()  # before JAX allocates: see mtmoe/host_memory.py
    parser = argparse.ArgumentParser(prog="python -m mtmoe.train_pretokenized", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cfg = sub.add_parser("config", help="write a gin experiment's config JSON (needs gin)")
    cfg.add_argument("--gin_file", action="append", required=True)
    cfg.add_argument("--out", required=True)
    prep = sub.add_parser("prepare", help="sample and pack the mixture once")
    prep.add_argument("--data", required=True)
    prep.add_argument("--out", required=True)
    prep.add_argument("--num_examples", type=int, required=True)
    prep.add_argument("--seed", type=int, default=0)
    prep.add_argument("--processes", type=int, default=1)
    tr = sub.add_parser("train", help="train until --deadline, then validate, save and score")
    tr.add_argument("--config", required=True)
    tr.add_argument("--packed", required=True)
    tr.add_argument("--data", required=True)
    tr.add_argument("--out", required=True)
    tr.add_argument("--deadline", type=float, required=True, help="unix time at which training stops")
    tr.add_argument("--max_steps", type=int, default=None)
    tr.add_argument("--batch_size", type=int, default=None, help="override the config's (CPU smoke runs)")
    tr.add_argument("--eval_batches", type=int, default=12, help="validation batches (the same ones each time)")
    tr.add_argument("--params_out", default=None, help="directory for the params parts (default --out)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--log_every", type=int, default=25)
    tr.add_argument("--eval_every", type=int, default=200)
    tr.add_argument("--dev_sentences", type=int, default=24)
    tr.add_argument("--corpus", default="data/embedded")
    tr.add_argument("--spm", default=None, help="vocabulary for dev scoring (default: the export's spm.model)")
    ck = sub.add_parser("checkpoint", help="turn returned params parts into a params-only checkpoint directory")
    ck.add_argument("--params_dir", required=True, help="directory with params.msgpack.NN and log.json")
    ck.add_argument("--config", required=True)
    ck.add_argument("--data", required=True, help="the export the model was trained on (meta.json)")
    ck.add_argument("--spm", default=None, help="the vocabulary the export was tokenized with (default: its spm.model)")
    ck.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.command == "checkpoint":
        write_checkpoint(params_dir=args.params_dir, config_path=args.config, data=args.data, spm_path=args.spm,
                         out=args.out)
    elif args.command == "config":
        result = config_json(gin_files=args.gin_file)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print(json.dumps({k: result[k] for k in ("model_config", "run")}))
    elif args.command == "prepare":
        prepare(data=args.data, out=args.out, num_examples=args.num_examples, seed=args.seed, processes=args.processes)
    else:
        run_training(config_path=args.config, packed_path=args.packed, data=args.data, out=args.out,
                     deadline=args.deadline, seed=args.seed, log_every=args.log_every, eval_every=args.eval_every,
                     dev_sentences=args.dev_sentences, corpus_dir=args.corpus, spm_path=args.spm,
                     max_steps=args.max_steps, batch_size=args.batch_size,
                     eval_batches=args.eval_batches, params_out=args.params_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
