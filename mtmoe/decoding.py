"""Jittable, cache-agnostic decoding: beam search, temperature / top-k / top-p sampling, greedy.

Axis letters: B batch, K beams (or samples per input: `num_decodes`), V vocab,
L `max_decode_len` (number of output positions).

`max_decode_len` fixes the shapes, so every value compiles its own program;
`decode_steps`, a traced int32 scalar <= L, stops the loop earlier without a
new program: one compiled search serves every output limit up to L (positions
past the limit hold 0). Results equal those of `max_decode_len=decode_steps`.

The model is reached only through `tokens_to_logits(state: DecodingState) ->
(<float32>[B*K, V] logits, new_cache)`; these functions know nothing about layers.

Decoding protocol (T5 convention)
---------------------------------
Decoding starts from the decoder start token, id 0 (= pad, as in T5: decoder
inputs are the targets shifted right with 0 in front). At loop step i
(`state.cur_index == i`, i = 0, 1, ..., L-1) the model is fed `state.cur_token`,
the token at decoder-input position i (position 0 holds the start token 0),
and returns the logits of output position i. The token chosen there becomes the
decoder input of step i+1. Outputs are `<int32>[B, K, L]`; only the first `eos_id`
ends a sequence, and every position after it holds 0 (padding).

Cache layout (what `tokens_to_logits`' cache must look like)
------------------------------------------------------------
The cache is any pytree (nested dicts, FrozenDict, dataclasses). Its leaves fall
in exactly two kinds:
  * scalars (ndim 0), e.g. an attention `cache_index`: shared by every row,
    never tiled or reordered (all rows sit at the same position);
  * every other leaf is per-example with the batch on axis 0: callers pass it
    with leading dim B; `beam_search` / `temperature_sample` tile it to B*K rows
    (rows b*K .. b*K+K-1 belong to example b, see `tile_beams`), and
    `tokens_to_logits` must return it with the same shape, leading dim B*K.
    After every beam-search step each such leaf is reordered along axis 0 so
    that row b*K+k follows the parent beam of the new beam k.
Arrays shared across the batch (e.g. a relative position bias) must not be
non-scalar cache leaves: close over them in `tokens_to_logits` instead. A
non-scalar leaf whose leading dim is not B is rejected with a ValueError.
Per-example arrays that are the same for every beam and every step (the
encoder output, the cross-attention keys/values: `mtmoe.network.split_cache`)
are best closed over too, with B rows: as cache leaves they would be tiled to
B*K rows and copied by the reorder after every beam step.

Growing caches (`cache_stages`)
-------------------------------
A step's attention reads, and a beam step reorders, the whole self-attention
cache, although at step i only positions 0..i are filled. With
`cache_stages=(L1, L2, ..., L)` and `grow_cache(cache, length)` the caller
creates the cache for L1 positions; the loop runs steps 0..L1-1 on it, then
grows it to L2 (the new positions are empty) and goes on, up to L. A short
sentence never pays for the length a long one may need. Each stage is its own
`lax.while_loop` inside the same jitted program: no host round trip. The
stages change no output beyond float rounding: positions not yet written get
zero attention weight whatever the cache's length (benchmarks/harness.py records
the sha256 of the shipped model's test translations, to compare across changes).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax
import jax
import jax.numpy as jnp
from jax import lax

from mtmoe.data.vocabulary import PAD_ID  # decoder start token and the padding written after EOS (T5)

PyTree = Any

# "Minus infinity" that stays finite: adding a few log-probs to it never gives -inf
# or nan, and anything below NEG_INF / 2 is recognisably an invalid hypothesis.
NEG_INF = -1.0e7
# Temperatures below this are treated as 0 (argmax): dividing logits by a tiny
# temperature would overflow float32.
MIN_TEMPERATURE = 1e-4


@flax.struct.dataclass
class DecodingState:
    """What `tokens_to_logits` sees at one decoding step.

    Attributes:
      cur_index: <int32>[] decoder-input position of `cur_token` (= loop step).
      cur_token: <int32>[B*K, 1] token fed at this step (0 at step 0: start token).
      sequences: <int32>[B*K, L] decoder inputs so far: positions 0..cur_index
        are filled (position 0 is the start token), later positions are 0.
      cache: the cache pytree, non-scalar leaves with leading dim B*K.
    """

    cur_index: jax.Array
    cur_token: jax.Array
    sequences: jax.Array
    cache: PyTree


TokensToLogits = Callable[[DecodingState], tuple[jax.Array, PyTree]]


# ------------------------------------------------------------------------------
# Beam-axis helpers
# ------------------------------------------------------------------------------


def length_penalty(length, *, alpha: float) -> jax.Array:
    """T5X / GNMT length penalty ((5 + length) / 6) ** alpha; scores are log_prob / penalty."""
    return jnp.power((5.0 + jnp.asarray(length, jnp.float32)) / 6.0, alpha)


def flatten_beam_dim(x: jax.Array) -> jax.Array:
    """[B, K, ...] -> [B*K, ...] (row b*K + k is beam k of example b)."""
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def unflatten_beam_dim(x: jax.Array, *, batch_size: int, beam_size: int) -> jax.Array:
    """[B*K, ...] -> [B, K, ...]; the inverse of `flatten_beam_dim`."""
    if x.shape[0] != batch_size * beam_size:
        raise ValueError(
            f"leading dim {x.shape[0]} != batch_size*beam_size = {batch_size}*{beam_size}: "
            "pass an array whose rows are the flattened (batch, beam) pairs"
        )
    return x.reshape((batch_size, beam_size) + x.shape[1:])


def tile_beams(x: jax.Array, *, beam_size: int) -> jax.Array:
    """[B, ...] -> [B*K, ...]: each example repeated K times in consecutive rows."""
    return jnp.repeat(x, beam_size, axis=0)


def _map_batched_leaves(fn, cache: PyTree) -> PyTree:
    # Scalars (e.g. a shared cache_index) pass through untouched.
    return jax.tree_util.tree_map(lambda x: fn(x) if jnp.ndim(x) >= 1 else x, cache)


def check_cache(cache: PyTree, *, rows: int) -> None:
    """Raises ValueError unless every non-scalar cache leaf has leading dim `rows`."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(cache):
        if jnp.ndim(leaf) >= 1 and jnp.shape(leaf)[0] != rows:
            raise ValueError(
                f"cache leaf {jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)} but every "
                f"non-scalar cache leaf must have the batch ({rows} rows) on axis 0; keep arrays "
                "shared across the batch out of the cache (close over them in tokens_to_logits)"
            )


def tile_cache(cache: PyTree, *, batch_size: int, beam_size: int) -> PyTree:
    """Tiles every non-scalar leaf [B, ...] -> [B*K, ...]; scalars are left as they are."""
    check_cache(cache, rows=batch_size)
    return _map_batched_leaves(lambda x: tile_beams(x, beam_size=beam_size), cache)


def gather_beams(x: jax.Array, beam_indices: jax.Array) -> jax.Array:
    """x: [B, K_old, ...], beam_indices: <int32>[B, K_new] -> [B, K_new, ...].

    A gather batched over B (vmap), so a batch-sharded array stays sharded.
    """
    return jax.vmap(lambda rows, index: jnp.take(rows, index, axis=0))(x, beam_indices)


def gather_cache_beams(cache: PyTree, beam_indices: jax.Array) -> PyTree:
    """Reorders a flat cache by beam: leaf row b*K+k <- old row b*K + beam_indices[b, k].

    cache: non-scalar leaves [B*K, ...]; beam_indices: <int32>[B, K].
    """
    batch_size, beam_size = beam_indices.shape

    def reorder(x):
        beams = unflatten_beam_dim(x, batch_size=batch_size, beam_size=beam_size)  # [B, K, ...]
        return flatten_beam_dim(gather_beams(beams, beam_indices))  # [B*K, ...]

    return _map_batched_leaves(reorder, cache)


# ------------------------------------------------------------------------------
# Shared checks
# ------------------------------------------------------------------------------


def _decode_len(inputs: jax.Array, max_decode_len: int | None) -> int:
    if inputs.ndim != 2:
        raise ValueError(f"inputs must be <int32>[batch, length], got shape {inputs.shape}")
    length = inputs.shape[1] if max_decode_len is None else max_decode_len
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"max_decode_len must be a positive Python int, got {length!r}")
    return length


def _step_limit(length: int, decode_steps) -> jax.Array | int:
    """The loop's step limit: `length`, or the traced `decode_steps` capped at it."""
    if decode_steps is None:
        return length
    return jnp.minimum(jnp.asarray(decode_steps, jnp.int32), length)


def _check_eos(eos_id: int) -> None:
    if eos_id == PAD_ID:
        raise ValueError(f"eos_id must differ from the pad/start id {PAD_ID}; use eos_id=1 (T5)")


GrowCache = Callable[[PyTree, int], PyTree]


def _check_stages(cache_stages, grow_cache, length: int) -> tuple[int, ...]:
    stages = tuple(cache_stages)
    if not stages:
        return ()
    if grow_cache is None and len(stages) > 1:
        raise ValueError("cache_stages with more than one stage need grow_cache(cache, length)")
    if any(not isinstance(n, int) for n in stages) or list(stages) != sorted(set(stages)) or stages[0] < 1:
        raise ValueError(f"cache_stages must be increasing positive Python ints, got {stages}")
    if stages[-1] != length:
        raise ValueError(f"the last cache stage must be the decode length {length}, got {stages}")
    return stages


def _staged_while_loop(cond_fn, body_fn, init, *, stages: tuple[int, ...], grow_cache: GrowCache | None):
    """lax.while_loop(cond_fn, body_fn, init), one loop per cache stage (module docstring).

    `init` and the loop state have `cur_index` and `cache` fields; stage n runs
    while cond_fn holds and cur_index < stages[n], then the cache grows.
    """
    if not stages:
        return lax.while_loop(cond_fn, body_fn, init)
    state = init
    for n, stage_end in enumerate(stages):
        state = lax.while_loop(lambda s, end=stage_end: cond_fn(s) & (s.cur_index < end), body_fn, state)
        if n + 1 < len(stages):
            state = state.replace(cache=grow_cache(state.cache, stages[n + 1]))
    return state


def _call_model(tokens_to_logits, state: DecodingState, rows: int):
    logits, new_cache = tokens_to_logits(state)
    if logits.ndim != 2 or logits.shape[0] != rows:
        raise ValueError(
            f"tokens_to_logits must return logits [batch*beams={rows}, vocab], got {logits.shape}"
        )
    check_cache(new_cache, rows=rows)
    # Log-softmax and scores in float32 whatever the model's compute dtype.
    return logits.astype(jnp.float32), new_cache


# ------------------------------------------------------------------------------
# Beam search
# ------------------------------------------------------------------------------


TOP_K_BLOCK = 128  # elements per block of blocked_top_k


def blocked_top_k(x: jax.Array, k: int, *, block: int = TOP_K_BLOCK) -> tuple[jax.Array, jax.Array]:
    """`lax.top_k(x, k)` of <float>[B, N], exactly: the same values, indices and tie-break (the
    lower index first), in a quarter of its time for the beam search's [32, 4 x 16k] on CPU.

    XLA:CPU's top_k walks each row element by element. Here a vectorised max
    reads the row once in blocks of `block`; the k elements sought lie in the
    k blocks with the largest maxima (every block ranked above an element's own
    block holds an element ranked above it), so lax.top_k then runs over the k
    blocks' maxima and over those k x block candidates only. The chosen blocks
    are put back in index order, so equal values keep lax.top_k's order.
    """
    rows, n = x.shape
    blocks = -(-n // block)
    if blocks <= k:
        return lax.top_k(x, k)
    padded = jnp.pad(x, ((0, 0), (0, blocks * block - n)), constant_values=-jnp.inf)  # never chosen over x
    grouped = padded.reshape(rows, blocks, block)  # [B, N/block, block]
    _, best = lax.top_k(jnp.max(grouped, axis=-1), k)  # [B, k] blocks holding the top k
    best = jnp.sort(best, axis=-1)  # index order: ties resolve as in lax.top_k
    candidates = jnp.take_along_axis(grouped, best[:, :, None], axis=1).reshape(rows, k * block)  # [B, k*block]
    values, pick = lax.top_k(candidates, k)  # [B, k]
    return values, jnp.take_along_axis(best, pick // block, axis=1) * block + pick % block


@flax.struct.dataclass
class BeamState:
    cur_index: jax.Array  # <int32>[]   tokens generated so far
    live_logprobs: jax.Array  # <float32>[B, K]   sorted best first
    live_seqs: jax.Array  # <int32>[B, K, L+1]   position 0 = start token
    finished_scores: jax.Array  # <float32>[B, K]   length-penalised, sorted best first
    finished_seqs: jax.Array  # <int32>[B, K, L+1]
    finished_flags: jax.Array  # <bool>[B, K]   slot holds a real finished hypothesis
    cache: PyTree  # non-scalar leaves [B*K, ...]


def beam_search(
    inputs: jax.Array,
    cache: PyTree,
    tokens_to_logits: TokensToLogits,
    *,
    eos_id: int,
    num_decodes: int = 4,
    alpha: float = 0.6,
    max_decode_len: int | None = None,
    decode_steps: jax.Array | int | None = None,
    cache_stages: Sequence[int] = (),
    grow_cache: GrowCache | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Beam search with the T5X length penalty, jittable (one lax.while_loop per cache stage).

    Args:
      inputs: <int32>[B, length] decoder inputs; only the shape is used (batch size
        and, when `max_decode_len` is None, the output length). Decoding always
        starts from the start token 0.
      cache: decoding cache, non-scalar leaves with leading dim B (module docstring).
      tokens_to_logits: DecodingState -> (<float32>[B*K, V] logits, new cache).
      eos_id: end-of-sequence id (1 in T5); a hypothesis ends at its first EOS.
      num_decodes: beam size K, also the number of hypotheses returned.
      alpha: length penalty exponent; score = log_prob / ((5 + n) / 6) ** alpha
        where n counts the generated tokens including EOS.
      max_decode_len: number of output positions L (default `inputs.shape[1]`).
      decode_steps: at most this many output positions are decoded (default L);
        may be traced (module docstring). The length penalty's range ends here.
      cache_stages, grow_cache: a cache that grows with the output (module
        docstring); `cache` then holds cache_stages[0] positions.

    Returns:
      (<int32>[B, K, L] sequences, <float32>[B, K] scores), best first. Tokens
      after the first EOS are 0. Hypotheses that reached EOS come first; if fewer
      than K did, the rest are the best live beams cut at the loop's end, scored
      with n = their length. A score below NEG_INF / 2 marks an empty slot (only
      possible when the vocabulary is too small to fill K beams).

    The loop stops early once, for every example, all K finished slots are
    filled and no live beam can still beat the worst of them: a live beam's log
    prob can only fall, so its best reachable score is its log prob divided by
    the penalty at one end of the remaining length range.
    """
    _check_eos(eos_id)
    if num_decodes < 1:
        raise ValueError(f"num_decodes must be >= 1, got {num_decodes}")
    length = _decode_len(inputs, max_decode_len)
    stages = _check_stages(cache_stages, grow_cache, length)
    limit = _step_limit(length, decode_steps)
    batch_size, beam_size = inputs.shape[0], num_decodes
    rows = batch_size * beam_size

    def penalty(n):
        return length_penalty(n, alpha=alpha)

    init = BeamState(
        cur_index=jnp.array(0, jnp.int32),
        # Only beam 0 is live at the start: K identical beams would fill the beam
        # with K copies of the same hypothesis.
        live_logprobs=jnp.tile(jnp.array([0.0] + [NEG_INF] * (beam_size - 1), jnp.float32), (batch_size, 1)),
        live_seqs=jnp.zeros((batch_size, beam_size, length + 1), jnp.int32),
        finished_scores=jnp.full((batch_size, beam_size), NEG_INF, jnp.float32),
        finished_seqs=jnp.zeros((batch_size, beam_size, length + 1), jnp.int32),
        finished_flags=jnp.zeros((batch_size, beam_size), jnp.bool_),
        cache=tile_cache(cache, batch_size=batch_size, beam_size=beam_size),
    )

    def cond_fn(state: BeamState) -> jax.Array:
        best_live = state.live_logprobs[:, 0]  # [B]
        # A live beam needs >= 1 more token, so it ends with n in [cur_index+1, limit].
        best_reachable = jnp.maximum(best_live / penalty(state.cur_index + 1), best_live / penalty(limit))
        worst_finished = jnp.where(
            jnp.all(state.finished_flags, axis=1), jnp.min(state.finished_scores, axis=1), NEG_INF
        )  # [B]
        search_done = jnp.all(worst_finished > best_reachable)
        return (state.cur_index < limit) & ~search_done

    def body_fn(state: BeamState) -> BeamState:
        i = state.cur_index
        flat_seqs = flatten_beam_dim(state.live_seqs)  # [B*K, L+1]
        decoding_state = DecodingState(
            cur_index=i,
            cur_token=lax.dynamic_slice_in_dim(flat_seqs, i, 1, axis=1),  # [B*K, 1]
            sequences=flat_seqs[:, :length],  # [B*K, L]
            cache=state.cache,
        )
        logits, new_cache = _call_model(tokens_to_logits, decoding_state, rows)  # [B*K, V]
        vocab_size = logits.shape[-1]
        log_probs = jax.nn.log_softmax(logits)  # [B*K, V]
        log_probs = unflatten_beam_dim(log_probs, batch_size=batch_size, beam_size=beam_size)  # [B, K, V]
        log_probs = log_probs + state.live_logprobs[:, :, None]  # [B, K, V]  prefix + next token

        # 2K candidates: even if K of them end with EOS, K remain to stay live.
        cand_logprobs, cand_flat = blocked_top_k(log_probs.reshape(batch_size, beam_size * vocab_size),
                                                  2 * beam_size)
        cand_parent = cand_flat // vocab_size  # [B, 2K] beam each candidate extends
        cand_token = (cand_flat % vocab_size).astype(jnp.int32)  # [B, 2K]
        cand_seqs = gather_beams(state.live_seqs, cand_parent)  # [B, 2K, L+1]
        cand_seqs = lax.dynamic_update_slice_in_dim(cand_seqs, cand_token[:, :, None], i + 1, axis=2)
        cand_valid = cand_logprobs > NEG_INF / 2  # extensions of dead beams are not hypotheses
        cand_ended = (cand_token == eos_id) & cand_valid  # [B, 2K]

        # Live set: the best K candidates that did not end.
        live_logprobs, live_pick = lax.top_k(jnp.where(cand_ended, NEG_INF, cand_logprobs), beam_size)  # [B, K]
        live_seqs = gather_beams(cand_seqs, live_pick)  # [B, K, L+1]
        live_parent = jnp.take_along_axis(cand_parent, live_pick, axis=1)  # [B, K]
        new_cache = gather_cache_beams(new_cache, live_parent)

        # Finished set: best K of (old finished, newly ended), scored with n = i + 1.
        new_scores = jnp.where(cand_ended, cand_logprobs / penalty(i + 1), NEG_INF)  # [B, 2K]
        all_scores = jnp.concatenate([state.finished_scores, new_scores], axis=1)  # [B, 3K]
        all_flags = jnp.concatenate([state.finished_flags, cand_ended], axis=1)  # [B, 3K]
        all_seqs = jnp.concatenate([state.finished_seqs, cand_seqs], axis=1)  # [B, 3K, L+1]
        finished_scores, finished_pick = lax.top_k(all_scores, beam_size)  # [B, K]

        return BeamState(
            cur_index=i + 1,
            live_logprobs=live_logprobs,
            live_seqs=live_seqs,
            finished_scores=finished_scores,
            finished_seqs=gather_beams(all_seqs, finished_pick),
            finished_flags=jnp.take_along_axis(all_flags, finished_pick, axis=1),
            cache=new_cache,
        )

    final = _staged_while_loop(cond_fn, body_fn, init, stages=stages, grow_cache=grow_cache)

    # Merge: finished hypotheses first, then live beams cut at the loop's end.
    live_scores = final.live_logprobs / penalty(jnp.maximum(final.cur_index, 1))  # [B, K]
    scores = jnp.concatenate([final.finished_scores, live_scores], axis=1)  # [B, 2K]
    live_valid = final.live_logprobs > NEG_INF / 2
    rank_class = jnp.concatenate(
        [jnp.where(final.finished_flags, 0, 2), jnp.where(live_valid, 1, 2)], axis=1
    )  # [B, 2K]  0 finished, 1 live, 2 empty
    order = jnp.lexsort((-scores, rank_class), axis=-1)[:, :beam_size]  # [B, K]
    seqs = gather_beams(jnp.concatenate([final.finished_seqs, final.live_seqs], axis=1), order)
    scores = jnp.take_along_axis(scores, order, axis=1)
    return seqs[:, :, 1:], scores  # drop the start token: [B, K, L], [B, K]


# ------------------------------------------------------------------------------
# Sampling
# ------------------------------------------------------------------------------


def filter_logits(logits: jax.Array, *, topk: int = 0, topp: float = 1.0) -> jax.Array:
    """Masks logits outside the top-k and then outside the top-p nucleus to -inf.

    logits: <float32>[N, V]. topk=0 keeps all; topp=1.0 keeps all. The nucleus
    is the smallest set of most probable tokens whose probability reaches topp:
    a token is kept when the mass of the tokens ranked above it is < topp.
    Ties at the boundary are kept.
    """
    if topk > 0:
        kth_largest = lax.top_k(logits, topk)[0][:, -1:]  # [N, 1]
        logits = jnp.where(logits >= kth_largest, logits, -jnp.inf)
    if topp < 1.0:
        sorted_logits = jnp.flip(jnp.sort(logits, axis=-1), axis=-1)  # [N, V] descending
        sorted_probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_above = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs  # [N, V]
        smallest_kept = jnp.min(jnp.where(mass_above < topp, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits >= smallest_kept, logits, -jnp.inf)
    return logits


@flax.struct.dataclass
class SamplingState:
    cur_index: jax.Array  # <int32>[]
    sequences: jax.Array  # <int32>[B*N, L+1]  position 0 = start token
    ended: jax.Array  # <bool>[B*N]
    log_probs: jax.Array  # <float32>[B*N]
    rng: jax.Array
    cache: PyTree


def temperature_sample(
    inputs: jax.Array,
    cache: PyTree,
    tokens_to_logits: TokensToLogits,
    rng: jax.Array,
    *,
    eos_id: int,
    num_decodes: int = 1,
    temperature: float | jax.Array = 1.0,
    topk: int = 0,
    topp: float = 1.0,
    max_decode_len: int | None = None,
    decode_steps: jax.Array | int | None = None,
    cache_stages: Sequence[int] = (),
    grow_cache: GrowCache | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Ancestral sampling with temperature, top-k and top-p; jittable (one lax.while_loop per cache stage).

    Args:
      inputs: <int32>[B, length]; only the shape is used (as in `beam_search`).
      cache: decoding cache, non-scalar leaves with leading dim B (module docstring).
      tokens_to_logits: DecodingState -> (<float32>[B*N, V] logits, new cache).
      rng: PRNG key.
      eos_id: end-of-sequence id; tokens after the first EOS are 0.
      num_decodes: N independent samples per example.
      temperature: Python float or <float32>[] / [B] array; values below
        MIN_TEMPERATURE mean argmax (greedy). A Python 0 skips sampling entirely.
      topk: Python int, keep the k most likely tokens (0 = all).
      topp: Python float in (0, 1], keep the nucleus of mass topp (1 = all).
        Both filters act on the temperature-scaled logits, top-k first.
      max_decode_len: number of output positions L (default `inputs.shape[1]`).
      decode_steps, cache_stages, grow_cache: as in `beam_search`.

    Returns:
      (<int32>[B, N, L] sequences, <float32>[B, N] log-probs), most likely first.
      The log-probs are under the model's own distribution (log-softmax of the
      raw logits), not the temperature / top-k / top-p one, so samples of
      different settings can be compared and greedy gets its real score.
    """
    _check_eos(eos_id)
    if num_decodes < 1:
        raise ValueError(f"num_decodes must be >= 1, got {num_decodes}")
    if not isinstance(topk, int) or topk < 0:
        raise ValueError(f"topk must be a Python int >= 0 (0 = no top-k filter), got {topk!r}")
    if not 0.0 < topp <= 1.0:
        raise ValueError(f"topp must be in (0, 1] (1 = no nucleus filter), got {topp!r}")
    static_greedy = isinstance(temperature, (int, float)) and temperature < MIN_TEMPERATURE
    if isinstance(temperature, (int, float)) and temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    length = _decode_len(inputs, max_decode_len)
    stages = _check_stages(cache_stages, grow_cache, length)
    limit = _step_limit(length, decode_steps)
    batch_size = inputs.shape[0]
    rows = batch_size * num_decodes

    temperature = jnp.asarray(temperature, jnp.float32)
    if temperature.ndim == 1:
        if temperature.shape[0] != batch_size:
            raise ValueError(f"temperature must be a scalar or [batch={batch_size}], got {temperature.shape}")
        temperature = tile_beams(temperature, beam_size=num_decodes)[:, None]  # [B*N, 1]
    elif temperature.ndim != 0:
        raise ValueError(f"temperature must be a scalar or [batch={batch_size}], got {temperature.shape}")

    init = SamplingState(
        cur_index=jnp.array(0, jnp.int32),
        sequences=jnp.zeros((rows, length + 1), jnp.int32),
        ended=jnp.zeros((rows,), jnp.bool_),
        log_probs=jnp.zeros((rows,), jnp.float32),
        rng=rng,
        cache=tile_cache(cache, batch_size=batch_size, beam_size=num_decodes),
    )

    def cond_fn(state: SamplingState) -> jax.Array:
        return (state.cur_index < limit) & ~jnp.all(state.ended)

    def body_fn(state: SamplingState) -> SamplingState:
        i = state.cur_index
        decoding_state = DecodingState(
            cur_index=i,
            cur_token=lax.dynamic_slice_in_dim(state.sequences, i, 1, axis=1),  # [B*N, 1]
            sequences=state.sequences[:, :length],  # [B*N, L]
            cache=state.cache,
        )
        logits, new_cache = _call_model(tokens_to_logits, decoding_state, rows)  # [B*N, V]
        rng, step_rng = jax.random.split(state.rng)
        greedy_token = jnp.argmax(logits, axis=-1)  # [B*N]
        if static_greedy:
            token = greedy_token
        else:
            scaled = logits / jnp.maximum(temperature, MIN_TEMPERATURE)  # [B*N, V]
            sampled = jax.random.categorical(step_rng, filter_logits(scaled, topk=topk, topp=topp), axis=-1)
            token = jnp.where(temperature.reshape(-1) < MIN_TEMPERATURE, greedy_token, sampled)
        token = jnp.where(state.ended, PAD_ID, token).astype(jnp.int32)  # [B*N]  pad after EOS
        token_log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), token[:, None], axis=1)[:, 0]
        return SamplingState(
            cur_index=i + 1,
            sequences=lax.dynamic_update_slice_in_dim(state.sequences, token[:, None], i + 1, axis=1),
            ended=state.ended | (token == eos_id),
            log_probs=state.log_probs + jnp.where(state.ended, 0.0, token_log_prob),
            rng=rng,
            cache=new_cache,
        )

    final = _staged_while_loop(cond_fn, body_fn, init, stages=stages, grow_cache=grow_cache)
    seqs = unflatten_beam_dim(final.sequences[:, 1:], batch_size=batch_size, beam_size=num_decodes)  # [B, N, L]
    log_probs = unflatten_beam_dim(final.log_probs, batch_size=batch_size, beam_size=num_decodes)  # [B, N]
    order = jnp.argsort(-log_probs, axis=1)  # [B, N] most likely first
    return gather_beams(seqs, order), jnp.take_along_axis(log_probs, order, axis=1)


def greedy(
    inputs: jax.Array,
    cache: PyTree,
    tokens_to_logits: TokensToLogits,
    *,
    eos_id: int,
    max_decode_len: int | None = None,
    decode_steps: jax.Array | int | None = None,
    cache_stages: Sequence[int] = (),
    grow_cache: GrowCache | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Greedy (argmax) decoding: `temperature_sample` at temperature 0.

    Returns (<int32>[B, 1, L] sequences, <float32>[B, 1] log-probs).
    """
    return temperature_sample(
        inputs,
        cache,
        tokens_to_logits,
        jax.random.PRNGKey(0),  # unused: temperature 0 never samples
        eos_id=eos_id,
        num_decodes=1,
        temperature=0.0,
        max_decode_len=max_decode_len,
        decode_steps=decode_steps,
        cache_stages=cache_stages,
        grow_cache=grow_cache,
    )
