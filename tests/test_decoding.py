"""Tests for mtmoe/decoding.py with toy models whose scores are known by hand.

Token ids in the toy models: 0 pad/start, 1 EOS, 2 "A", 3 "B", 4 "C" (V = 5).
Most toy models are Markov chains: the next-token distribution depends only on
the token fed, through a probability table `[cur_token, next_token]`; a
per-example table id travels in the cache (so it is tiled and reordered with
the beams, and a batch can mix examples with different tables).
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtmoe import decoding

PAD, EOS, A, B, C = 0, 1, 2, 3, 4
VOCAB = 5

# Table 0: greedy is wrong. Greedy takes A (.55), then C (.40), then EOS (.95):
# p = .55 * .40 * .95 = .209. Beam search finds B EOS: p = .35 * .90 = .315.
TABLE_GREEDY_WRONG = np.array(
    [
        #  pad   eos   A     B     C        <- next token
        [0.01, 0.04, 0.55, 0.35, 0.05],  # after start (0)
        [0.20, 0.20, 0.20, 0.20, 0.20],  # after EOS (never fed to a live beam)
        [0.01, 0.29, 0.25, 0.05, 0.40],  # after A
        [0.01, 0.90, 0.03, 0.03, 0.03],  # after B
        [0.01, 0.95, 0.02, 0.01, 0.01],  # after C
    ]
)
# Table 1: greedy is right, EOS straight away: p(EOS) = .7.
TABLE_EOS_FIRST = np.array(
    [
        [0.01, 0.70, 0.09, 0.10, 0.10],
        [0.20, 0.20, 0.20, 0.20, 0.20],
        [0.01, 0.90, 0.03, 0.03, 0.03],
        [0.01, 0.90, 0.03, 0.03, 0.03],
        [0.01, 0.90, 0.03, 0.03, 0.03],
    ]
)
# Table 2: length penalty decides. "EOS" (n = 1) has p = .45; "A EOS" (n = 2) has
# p = .43 * .98 = .4214. alpha = 0: log(.45) = -.7985 > log(.4214) = -.8642.
# alpha = .6: -.7985 / 1 < -.8642 / (7/6)**.6 = -.7878, so "A EOS" wins.
TABLE_LENGTH_PENALTY = np.array(
    [
        [0.02, 0.45, 0.43, 0.05, 0.05],
        [0.20, 0.20, 0.20, 0.20, 0.20],
        [0.005, 0.98, 0.005, 0.005, 0.005],
        [0.20, 0.20, 0.20, 0.20, 0.20],
        [0.20, 0.20, 0.20, 0.20, 0.20],
    ]
)
# Table 3: never ends: EOS has probability 0 (logit -inf, as a masked token); C is always likeliest.
TABLE_NO_EOS = np.array(
    [
        [0.10, 0.0, 0.20, 0.30, 0.40],
        [0.20, 0.20, 0.20, 0.20, 0.20],
        [0.10, 0.0, 0.20, 0.30, 0.40],
        [0.10, 0.0, 0.20, 0.30, 0.40],
        [0.10, 0.0, 0.20, 0.30, 0.40],
    ]
)
TABLES = np.stack([TABLE_GREEDY_WRONG, TABLE_EOS_FIRST, TABLE_LENGTH_PENALTY, TABLE_NO_EOS])


def markov_tokens_to_logits(state):
    log_tables = jnp.log(jnp.asarray(TABLES, jnp.float32))  # [tables, V, V]
    table_id = state.cache["table_id"]  # [B*K]
    logits = log_tables[table_id, state.cur_token[:, 0]]  # [B*K, V]
    return logits, state.cache


def markov_cache(table_ids):
    # A scalar leaf rides along to check scalars are neither tiled nor reordered.
    return {"table_id": jnp.asarray(table_ids, jnp.int32), "step": jnp.array(0, jnp.int32)}


@functools.partial(jax.jit, static_argnames=("length", "num_decodes", "alpha"))
def markov_beam(table_ids, *, length, num_decodes=3, alpha=0.0):
    inputs = jnp.zeros((table_ids.shape[0], length), jnp.int32)
    return decoding.beam_search(
        inputs, markov_cache(table_ids), markov_tokens_to_logits, eos_id=EOS, num_decodes=num_decodes, alpha=alpha
    )


@functools.partial(jax.jit, static_argnames=("length",))
def markov_greedy(table_ids, *, length):
    inputs = jnp.zeros((table_ids.shape[0], length), jnp.int32)
    return decoding.greedy(inputs, markov_cache(table_ids), markov_tokens_to_logits, eos_id=EOS)


def padded(tokens, length):
    return list(tokens) + [PAD] * (length - len(tokens))


def test_beam_search_beats_greedy_and_pads_after_eos():
    length = 7
    seqs, scores = markov_beam(jnp.array([0, 1]), length=length)
    assert seqs.shape == (2, 3, length) and scores.shape == (2, 3)
    # Example 0: the three best EOS-terminated sequences (alpha 0: score = log p).
    np.testing.assert_array_equal(seqs[0], [padded([B, EOS], 7), padded([A, C, EOS], 7), padded([A, EOS], 7)])
    np.testing.assert_allclose(scores[0], np.log([0.35 * 0.90, 0.55 * 0.40 * 0.95, 0.55 * 0.29]), rtol=1e-5)
    # Example 1: EOS first (.7), then A/B/C followed by EOS (.10 * .90 = .09, twice).
    assert seqs[1, 0].tolist() == padded([EOS], 7)
    np.testing.assert_allclose(scores[1], np.log([0.7, 0.09, 0.09]), rtol=1e-5)
    assert sorted(seqs[1, 1:, 0].tolist()) == [B, C] and (seqs[1, 1:, 1] == EOS).all()

    greedy_seqs, greedy_scores = markov_greedy(jnp.array([0]), length=length)
    assert greedy_seqs[0, 0].tolist() == padded([A, C, EOS], 7)  # greedy misses B EOS
    np.testing.assert_allclose(greedy_scores[0, 0], np.log(0.55 * 0.40 * 0.95), rtol=1e-5)


def test_sentence_decodes_the_same_alone_and_in_a_batch():
    alone = markov_beam(jnp.array([0]), length=7)
    batched = markov_beam(jnp.array([1, 0, 2]), length=7)
    np.testing.assert_array_equal(alone[0][0], batched[0][1])
    np.testing.assert_allclose(alone[1][0], batched[1][1], rtol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_length_penalty_ordering_matches_formula(alpha):
    seqs, scores = markov_beam(jnp.array([2]), length=3, num_decodes=2, alpha=alpha)

    def by_hand(prob, n):
        return math.log(prob) / ((5 + n) / 6) ** alpha

    short, long = (padded([EOS], 3), by_hand(0.45, 1)), (padded([A, EOS], 3), by_hand(0.43 * 0.98, 2))
    expected = [short, long] if alpha == 0.0 else [long, short]
    assert seqs[0].tolist() == [expected[0][0], expected[1][0]]
    np.testing.assert_allclose(scores[0], [expected[0][1], expected[1][1]], rtol=1e-5)


def test_length_penalty_values():
    assert float(decoding.length_penalty(1, alpha=0.6)) == pytest.approx(1.0)
    assert float(decoding.length_penalty(7, alpha=0.6)) == pytest.approx(2.0**0.6)
    assert float(decoding.length_penalty(19, alpha=0.0)) == pytest.approx(1.0)


def test_beam_search_without_eos_returns_full_length_live_beams():
    length = 3
    seqs, scores = markov_beam(jnp.array([3]), length=length, num_decodes=2, alpha=0.6)
    # Best continuation is C C C (p = .4^3), then C C B or C B C... (p = .4^2 * .3).
    assert seqs[0, 0].tolist() == [C, C, C]
    np.testing.assert_allclose(scores[0], np.log([0.4**3, 0.4**2 * 0.3]) / ((5 + length) / 6) ** 0.6, rtol=1e-5)


# ------------------------------------------------------------------------------
# A history-dependent toy model: the logits depend on the whole prefix, read
# either from state.sequences or from a cache that records the tokens fed.
# If beam search did not reorder the cache with the beams, the two disagree.
# ------------------------------------------------------------------------------

HISTORY_LENGTH, HISTORY_BUCKETS = 6, 11
HISTORY_LOGITS = np.random.default_rng(0).normal(size=(HISTORY_LENGTH, HISTORY_BUCKETS, VOCAB)) * 2.0


def prefix_logits(prefix, cur_index):
    """prefix: <int32>[rows, L] decoder inputs (filled up to cur_index)."""
    weights = jnp.array([1, 3, 7, 5, 2, 9][: prefix.shape[1]], jnp.int32)  # position-sensitive hash
    bucket = jnp.sum(prefix * weights, axis=1) % HISTORY_BUCKETS  # [rows]
    return jnp.asarray(HISTORY_LOGITS, jnp.float32)[cur_index, bucket]  # [rows, V]


def history_from_sequences(state):
    return prefix_logits(state.sequences, state.cur_index), state.cache


def history_from_cache(state):
    history = jax.lax.dynamic_update_slice_in_dim(state.cache["history"], state.cur_token, state.cur_index, axis=1)
    return prefix_logits(history, state.cur_index), {"history": history, "calls": state.cache["calls"] + 1}


@functools.partial(jax.jit, static_argnames=("tokens_to_logits",))
def history_beam(inputs, cache, tokens_to_logits):
    return decoding.beam_search(inputs, cache, tokens_to_logits, eos_id=EOS, num_decodes=3, alpha=0.6)


def test_cache_is_reordered_with_the_beams():
    inputs = jnp.zeros((2, HISTORY_LENGTH), jnp.int32)
    cache = {"history": jnp.zeros((2, HISTORY_LENGTH), jnp.int32), "calls": jnp.array(0, jnp.int32)}
    want_seqs, want_scores = history_beam(inputs, {}, history_from_sequences)
    got_seqs, got_scores = history_beam(inputs, cache, history_from_cache)
    np.testing.assert_array_equal(got_seqs, want_seqs)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-6)
    # The search must have moved beams around for this to test anything: the best
    # final hypotheses do not all descend from the first beam's first choice.
    assert len({tuple(row[:2]) for row in np.asarray(want_seqs[0])}) > 1


def test_gather_and_tile_cache_layout():
    cache = {"kv": jnp.arange(2 * 3).reshape(2, 3), "index": jnp.array(5)}  # batch 2
    tiled = decoding.tile_cache(cache, batch_size=2, beam_size=3)
    np.testing.assert_array_equal(tiled["kv"], [[0, 1, 2]] * 3 + [[3, 4, 5]] * 3)  # row b*K + k
    assert tiled["index"].shape == ()
    beams = {"kv": jnp.arange(6)[:, None] * 10, "index": jnp.array(5)}  # [B*K, 1]
    reordered = decoding.gather_cache_beams(beams, jnp.array([[2, 2, 0], [1, 0, 0]]))
    np.testing.assert_array_equal(reordered["kv"][:, 0], [20, 20, 0, 40, 30, 30])
    assert int(reordered["index"]) == 5
    x = jnp.arange(2 * 3 * 5).reshape(2, 3, 5)
    np.testing.assert_array_equal(
        decoding.unflatten_beam_dim(decoding.flatten_beam_dim(x), batch_size=2, beam_size=3), x
    )


def test_greedy_equals_argmax_chain():
    length = HISTORY_LENGTH
    inputs = jnp.zeros((1, length), jnp.int32)
    seqs, log_probs = jax.jit(
        lambda inputs: decoding.greedy(inputs, {}, history_from_sequences, eos_id=EOS)
    )(inputs)

    prefix, expected, total = np.zeros((1, length), np.int32), [], 0.0
    for i in range(length):
        logits = np.asarray(prefix_logits(jnp.asarray(prefix), i))[0]
        token = int(np.argmax(logits))
        total += float(jax.nn.log_softmax(logits)[token])
        expected.append(token)
        if token == EOS:
            break
        if i + 1 < length:
            prefix[0, i + 1] = token
    assert seqs[0, 0].tolist() == padded(expected, length)
    np.testing.assert_allclose(log_probs[0, 0], total, rtol=1e-5)


def test_sampling_pads_after_eos_and_scores_only_real_tokens():
    # Example 1 (table 1) stops at EOS straight away under greedy; example 0 runs A C EOS.
    seqs, log_probs = markov_greedy(jnp.array([1, 0]), length=5)
    assert seqs[:, 0].tolist() == [padded([EOS], 5), padded([A, C, EOS], 5)]
    np.testing.assert_allclose(log_probs[:, 0], np.log([0.7, 0.55 * 0.40 * 0.95]), rtol=1e-5)


@functools.partial(jax.jit, static_argnames=("topk", "topp", "num_decodes"))
def markov_sample(table_ids, rng, temperature, *, topk, topp=1.0, num_decodes=2):
    inputs = jnp.zeros((table_ids.shape[0], 5), jnp.int32)
    return decoding.temperature_sample(
        inputs,
        markov_cache(table_ids),
        markov_tokens_to_logits,
        rng,
        eos_id=EOS,
        num_decodes=num_decodes,
        temperature=temperature,
        topk=topk,
        topp=topp,
    )


def test_top1_sampling_and_zero_temperature_equal_greedy():
    table_ids = jnp.array([0, 1])
    greedy_seqs, greedy_scores = markov_greedy(table_ids, length=5)
    for temperature in (1.0, 0.7):
        seqs, scores = markov_sample(table_ids, jax.random.PRNGKey(3), jnp.float32(temperature), topk=1)
        np.testing.assert_array_equal(seqs, jnp.repeat(greedy_seqs, 2, axis=1))
        np.testing.assert_allclose(scores, jnp.repeat(greedy_scores, 2, axis=1), rtol=1e-6)
    # Per-example temperature: example 0 at temperature 0 is greedy whatever the rng;
    # a small positive temperature sharpens (logits / T) until sampling is argmax too.
    seqs, _ = markov_sample(table_ids, jax.random.PRNGKey(4), jnp.array([0.0, 1.0]), topk=0)
    np.testing.assert_array_equal(seqs[0], jnp.repeat(greedy_seqs[0], 2, axis=0))
    seqs, _ = markov_sample(table_ids, jax.random.PRNGKey(5), jnp.array([0.01, 0.01]), topk=0)
    np.testing.assert_array_equal(seqs, jnp.repeat(greedy_seqs, 2, axis=1))


def test_filter_logits_keeps_the_nucleus():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))

    def probs(**kwargs):
        return np.asarray(jax.nn.softmax(decoding.filter_logits(logits, **kwargs)))[0]

    # Mass ranked above each token: 0, .5, .8, .95; kept while < topp.
    np.testing.assert_allclose(probs(topp=0.7), [0.625, 0.375, 0, 0], atol=1e-6)
    np.testing.assert_allclose(probs(topp=0.5), [1, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(probs(topp=0.9), [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0], atol=1e-6)
    np.testing.assert_allclose(probs(topk=3), [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0], atol=1e-6)
    # top-p acts on the distribution left by top-k: alone, .6 keeps A and B (mass above
    # B is .5); after top-k=2 the mass above B is .625, so only A is left.
    np.testing.assert_allclose(probs(topp=0.6), [0.625, 0.375, 0, 0], atol=1e-6)
    np.testing.assert_allclose(probs(topk=2, topp=0.6), [1, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(probs(), [0.5, 0.3, 0.15, 0.05], atol=1e-6)


def test_top_p_sampling_stays_in_the_nucleus():
    # TABLE_NO_EOS rows: C .4, B .3, A .2, pad .1; nucleus .65 = {C, B} (mass above A: .7).
    seqs, _ = markov_sample(jnp.array([3]), jax.random.PRNGKey(0), jnp.float32(1.0), topk=0, topp=0.65, num_decodes=40)
    tokens = np.asarray(seqs).ravel()  # 200 draws
    assert set(tokens.tolist()) == {B, C}
    assert 90 < int((tokens == C).sum()) < 140  # expected 200 * .4 / .7 = 114


def test_jit_does_not_retrace_for_same_shapes():
    traces = []

    @jax.jit
    def run(inputs, cache):
        traces.append(1)
        return decoding.beam_search(inputs, cache, markov_tokens_to_logits, eos_id=EOS, num_decodes=2)

    first = run(jnp.zeros((2, 4), jnp.int32), markov_cache([0, 1]))
    second = run(jnp.ones((2, 4), jnp.int32), markov_cache([1, 0]))
    assert len(traces) == 1
    np.testing.assert_array_equal(first[0][0], second[0][1])  # swapped tables swap the rows


def test_traced_decode_steps_equal_a_shorter_decode_in_one_program():
    """decode_steps stops the loop at a traced limit: one trace serves every limit, and each
    result equals a search compiled for that length (padded with 0 past it)."""
    traces = []

    @functools.partial(jax.jit, static_argnames=("alpha",))
    def run(table_ids, steps, *, alpha):
        traces.append(1)
        inputs = jnp.zeros((table_ids.shape[0], 6), jnp.int32)
        return decoding.beam_search(inputs, markov_cache(table_ids), markov_tokens_to_logits, eos_id=EOS,
                                    num_decodes=2, alpha=alpha, decode_steps=steps)

    # Never-ending table: 3 steps give C C C, scored with the penalty at n = 3, then padding.
    seqs, scores = run(jnp.array([3]), jnp.int32(3), alpha=0.6)
    short_seqs, short_scores = markov_beam(jnp.array([3]), length=3, num_decodes=2, alpha=0.6)
    assert seqs[0, 0].tolist() == [C, C, C, PAD, PAD, PAD]
    np.testing.assert_array_equal(seqs[:, :, :3], short_seqs)
    np.testing.assert_allclose(scores, short_scores, rtol=1e-6)
    # Length-penalty table (alpha .6): with 1 step only "EOS" can finish; with 2, "A EOS" wins.
    one, _ = run(jnp.array([2]), jnp.int32(1), alpha=0.6)
    two, _ = run(jnp.array([2]), jnp.int32(2), alpha=0.6)
    assert one[0, 0].tolist() == padded([EOS], 6)
    assert two[0, 0].tolist() == padded([A, EOS], 6)
    assert len(traces) == 1

    greedy_seqs, _ = jax.jit(lambda steps: decoding.greedy(
        jnp.zeros((1, 6), jnp.int32), markov_cache([3]), markov_tokens_to_logits, eos_id=EOS,
        decode_steps=steps))(jnp.int32(2))
    assert greedy_seqs[0, 0].tolist() == padded([C, C], 6)


def test_bad_arguments_fail_with_one_line():
    inputs = jnp.zeros((2, 4), jnp.int32)
    with pytest.raises(ValueError, match="batch .2 rows. on axis 0"):
        decoding.beam_search(inputs, {"table_id": jnp.zeros((3,), jnp.int32)}, markov_tokens_to_logits, eos_id=EOS)
    with pytest.raises(ValueError, match="eos_id must differ"):
        decoding.beam_search(inputs, markov_cache([0, 1]), markov_tokens_to_logits, eos_id=PAD)
    with pytest.raises(ValueError, match="topp must be in"):
        decoding.temperature_sample(
            inputs, markov_cache([0, 1]), markov_tokens_to_logits, jax.random.PRNGKey(0), eos_id=EOS, topp=0.0
        )
    with pytest.raises(ValueError, match="need grow_cache"):
        decoding.beam_search(inputs, markov_cache([0, 1]), markov_tokens_to_logits, eos_id=EOS, cache_stages=(2, 4))
    with pytest.raises(ValueError, match="last cache stage must be the decode length 4"):
        decoding.greedy(inputs, markov_cache([0, 1]), markov_tokens_to_logits, eos_id=EOS, cache_stages=(2, 3),
                        grow_cache=lambda cache, length: cache)


def test_cache_stages_change_nothing_but_the_cache_a_step_sees():
    """A Markov model ignores its cache; stages (1, 2, 4) must give the one-loop search's result,
    and grow_cache is called once per stage boundary with the next length."""
    inputs = jnp.zeros((2, 4), jnp.int32)
    grown = []

    def grow(cache, length):
        grown.append(length)
        return cache

    plain = decoding.beam_search(inputs, markov_cache([0, 1]), markov_tokens_to_logits, eos_id=EOS, num_decodes=2)
    staged = decoding.beam_search(inputs, markov_cache([0, 1]), markov_tokens_to_logits, eos_id=EOS, num_decodes=2,
                                  cache_stages=(1, 2, 4), grow_cache=grow)
    assert grown == [2, 4]
    np.testing.assert_array_equal(plain[0], staged[0])
    np.testing.assert_array_equal(plain[1], staged[1])


def test_wide_beam_equals_exhaustive_search():
    # With K >= (V-1)^(L-1) beams nothing is ever pruned, so beam search must return
    # the exhaustive top K of all EOS-terminated sequences (no pad mid-sequence here:
    # pad is a legal token for the model, so the enumeration includes it).
    length, alpha, num_decodes = 4, 0.6, 32
    inputs = jnp.zeros((1, length), jnp.int32)
    seqs, scores = jax.jit(
        lambda inputs: decoding.beam_search(
            inputs, {}, history_from_sequences, eos_id=EOS, num_decodes=num_decodes, alpha=alpha
        )
    )(inputs)

    log_softmax = HISTORY_LOGITS - np.log(np.exp(HISTORY_LOGITS).sum(-1, keepdims=True))
    weights = np.array([1, 3, 7, 5, 2, 9])
    candidates = []
    for n in range(1, length + 1):
        for body in itertools.product([PAD, A, B, C], repeat=n - 1):
            tokens, decoder_inputs, log_prob = list(body) + [EOS], np.zeros(HISTORY_LENGTH, np.int64), 0.0
            for i, token in enumerate(tokens):
                log_prob += log_softmax[i, (decoder_inputs * weights).sum() % HISTORY_BUCKETS, token]
                decoder_inputs[i + 1] = token
            candidates.append((log_prob / ((5 + n) / 6) ** alpha, padded(tokens, length)))
    candidates.sort(key=lambda c: -c[0])
    top = candidates[:5]
    np.testing.assert_allclose(scores[0, :5], [score for score, _ in top], rtol=1e-5)
    assert seqs[0, :5].tolist() == [tokens for _, tokens in top]


def test_blocked_top_k_by_hand():
    # Blocks of 2: maxima [5, 5, 7, 5]; the top 3 lie in blocks 2, 0 and 1. The 5s at 1, 2 and 7
    # tie: the lower indices win, as in lax.top_k.
    x = jnp.array([[1.0, 5.0, 5.0, 0.0, 2.0, 7.0, 3.0, 5.0]])
    values, indices = decoding.blocked_top_k(x, 3, block=2)
    assert values.tolist() == [[7.0, 5.0, 5.0]] and indices.tolist() == [[5, 1, 2]]


@pytest.mark.parametrize("n, block, k", [(1000, 16, 8), (1003, 16, 8), (999, 64, 1), (64, 16, 8)])
def test_blocked_top_k_equals_lax_top_k(n, block, k):
    # Few distinct values (many ties), -inf (masked tokens) and, in the last case, fewer blocks than k.
    rng = np.random.default_rng(n)
    x = rng.integers(0, 6, (5, n)).astype(np.float32)
    x[x == 0] = -np.inf
    x[4] = -np.inf  # a row with nothing finite: the lowest indices
    want, got = jax.lax.top_k(jnp.asarray(x), k), decoding.blocked_top_k(jnp.asarray(x), k, block=block)
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))
