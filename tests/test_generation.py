"""Generation (`rnn_tutorial.apps.generation`): beam search against brute force on tiny models, greedy limits of
sampling and beam search, streaming against recomputing the prefix, state reordering, and every bad-input error."""
import itertools

import numpy as np
import pytest

from rnn_tutorial.apps.generation import beam_search, complete
from rnn_tutorial.data import Vocab
from rnn_tutorial.numpy_train import evaluate_windows, sample_stream
from rnn_tutorial.tf_rnn import CharModel
from rnn_tutorial.tf_setup import import_tensorflow
from rnn_tutorial.tf_train import keras_step, keras_window

tf, keras = import_tensorflow()


def numpy_lm(V=3, H=4, seed=0, scale=1.5, lstm=False):
    "A random tanh RNN (or a state of two arrays, LSTM-like in shape) language model as a batched `step` function."
    r = np.random.default_rng(seed)
    W_xh, W_hh = r.normal(0, 1, (V, H)), r.normal(0, 0.8, (H, H))
    W_hy, b = r.normal(0, scale, (H, V)), r.normal(0, 1, V)

    def step(state, ids):
        ids = np.asarray(ids)
        if state is None:
            state = (np.zeros((ids.size, H)), np.zeros((ids.size, H))) if lstm else np.zeros((ids.size, H))
        h_prev = state[0] + 0.5 * state[1] if lstm else state
        h = np.tanh(W_xh[ids] + h_prev @ W_hh)
        z = h @ W_hy + b
        new = (h, 0.9 * state[1] + h) if lstm else h
        return z - np.logaddexp.reduce(z, axis=1, keepdims=True), new
    return step


def score(step, prefix, seq):
    "Log-probability of `seq` after `prefix`, one sequence at a time (no batching, no beams)."
    state, lp = None, None
    for i in prefix: lp, state = step(state, [i])
    total = 0.0
    for k, tok in enumerate(seq):
        total += lp[0, tok]
        if k < len(seq) - 1: lp, state = step(state, [tok])
    return total


def brute_force(step, prefix, V, L, end=None):
    "Every allowed continuation with its log-probability, best first."
    out = []
    for n in range(1 if end is not None else L, L + 1):
        for seq in itertools.product(range(V), repeat=n):
            if end is not None and (end in seq[:-1] or (n < L and seq[-1] != end)): continue
            out.append((list(seq), score(step, prefix, seq)))
    return sorted(out, key=lambda p: -p[1])


def greedy(step, prefix, L):
    state = None
    for i in prefix: lp, state = step(state, [i])
    out = []
    for k in range(L):
        out.append(int(np.argmax(lp[0])))
        if k < L - 1: lp, state = step(state, [out[-1]])
    return out


@pytest.mark.parametrize("V,L,seed,lstm", [(3, 3, 0, False), (3, 4, 1, False), (4, 3, 2, True), (2, 6, 3, True)])
def test_beam_search_equals_brute_force(V, L, seed, lstm):
    step = numpy_lm(V, seed=seed, lstm=lstm)
    exact = brute_force(step, [0, 1], V, L)
    beams = beam_search(step, None, [0, 1], beam_width=V ** L, length=L)
    assert len(beams) == V ** L
    assert [s for s, _ in beams] == [s for s, _ in exact]
    np.testing.assert_allclose([v for _, v in beams], [v for _, v in exact], rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.logaddexp.reduce([v for _, v in beams]), 0.0, atol=1e-9)
    # a narrower beam returns valid hypotheses with their true scores, best first
    narrow = beam_search(step, None, [0, 1], beam_width=2, length=L)
    assert len(narrow) == 2 and narrow[0][1] >= narrow[1][1]
    for s, v in narrow: np.testing.assert_allclose(v, score(step, [0, 1], s), atol=1e-10)


@pytest.mark.parametrize("seed", [0, 4, 5])
def test_beam_search_with_end_token_equals_brute_force(seed):
    V, L, end = 3, 4, 2
    step = numpy_lm(V, seed=seed)
    exact = brute_force(step, [1], V, L, end=end)
    beams = beam_search(step, None, [1], beam_width=len(exact) + 5, length=L, end_id=end)
    assert sorted(map(tuple, (s for s, _ in beams))) == sorted(map(tuple, (s for s, _ in exact)))
    np.testing.assert_allclose([v for _, v in beams], [v for _, v in exact], rtol=0, atol=1e-10)
    assert all(s[-1] == end or len(s) == L for s, _ in beams)


def test_beam_search_stops_when_every_beam_has_ended():
    def always_end(state, ids):  # token 2 has probability ~1 everywhere
        lp = np.log(np.tile([1e-9, 1e-9, 1 - 2e-9], (len(ids), 1)))
        return lp, None
    calls = []
    def counting(state, ids):
        calls.append(len(ids))
        return always_end(state, ids)
    out = beam_search(counting, None, [0], beam_width=2, length=10, end_id=2)
    assert out[0][0] == [2] and len(calls) == 1 + 1  # prefix, then one step for the unfinished second beam


@pytest.mark.parametrize("seed", range(6))
def test_width_one_is_greedy(seed):
    step = numpy_lm(4, seed=seed, scale=0.7)
    g = greedy(step, [3], 6)
    assert beam_search(step, None, [3], beam_width=1, length=6)[0][0] == g
    assert list(sample_stream(step, None, [3], 6, temperature=0)) == g
    assert list(sample_stream(step, None, [3], 6, top_k=1, seed=seed)) == g
    assert list(sample_stream(step, None, [3], 6, temperature=1e-6, seed=seed)) == g


def test_exhaustive_beam_never_worse_than_greedy_and_can_be_better():
    "A beam as wide as all V**L sequences is exhaustive search (a narrower beam is not monotone in its width)."
    better = 0
    for seed in range(40):
        step = numpy_lm(4, seed=seed, scale=0.7)
        g = beam_search(step, None, [1], 1, 4)[0][1]
        b = beam_search(step, None, [1], 4 ** 4, 4)[0][1]
        assert b >= g - 1e-12
        better += b > g + 1e-9
    assert better > 0  # greedy is not optimal on some of them


def test_sampling_distribution_temperature_and_top_k():
    V = 5
    logits = np.log(np.array([0.4, 0.3, 0.15, 0.1, 0.05]))
    step = lambda state, ids: (np.tile(logits, (len(ids), 1)), state)
    draws = np.array(list(sample_stream(step, None, [0], 20_000, seed=1)))
    np.testing.assert_allclose(np.bincount(draws, minlength=V) / draws.size, np.exp(logits), atol=0.015)
    hot = np.array(list(sample_stream(step, None, [0], 20_000, temperature=2.0, seed=2)))
    p2 = np.exp(logits / 2) / np.exp(logits / 2).sum()
    np.testing.assert_allclose(np.bincount(hot, minlength=V) / hot.size, p2, atol=0.015)
    top2 = np.array(list(sample_stream(step, None, [0], 5_000, top_k=2, seed=3)))
    assert set(top2.tolist()) == {0, 1}
    np.testing.assert_allclose((top2 == 0).mean(), 0.4 / 0.7, atol=0.03)
    # same seed, same draws
    assert list(sample_stream(step, None, [0], 50, seed=7)) == list(sample_stream(step, None, [0], 50, seed=7))


def test_sample_stream_reads_the_prefix_once_and_stops_at_end():
    step = numpy_lm(4, seed=2)
    calls = []
    def counting(state, ids):
        calls.append(len(ids))
        return step(state, ids)
    out = list(sample_stream(counting, None, [0, 1, 2], 10, seed=0))
    assert len(out) == 10 and len(calls) == 3 + 10 - 1 and set(calls) == {1}
    first = out[0]
    assert list(sample_stream(step, None, [0, 1, 2], 10, seed=0, end_id=first)) == [first]
    assert list(sample_stream(step, None, [0], 0)) == []


@pytest.fixture(scope="module")
def char_model():
    keras.utils.set_random_seed(0)
    vocab = Vocab("abcdefgh ")
    models = {kind: CharModel(len(vocab), 16, kind, embedding_dim=8, builtin=True) for kind in ("gru", "lstm")}
    for m in models.values(): m(np.zeros((1, 2), np.int32))
    return vocab, models


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_keras_streaming_equals_recomputing(char_model, kind):
    vocab, models = char_model
    model = models[kind]
    step = keras_step(model)
    ids = vocab.encode("abc defg hab")
    full = tf.nn.log_softmax(model(ids[None])[0][0]).numpy()
    state, streamed = None, []
    for i in ids:
        lp, state = step(state, [i])
        assert lp.shape == (1, len(vocab)) and lp.dtype == np.float64
        streamed.append(lp[0])
    np.testing.assert_allclose(np.array(streamed), full, atol=1e-5)
    assert len(state) == model.n_states and state[0].shape == (1, 16)
    # greedy generation: streamed equals re-reading the whole text for every new token
    seq = list(vocab.encode("ab"))
    for _ in range(15):
        seq.append(int(np.argmax(model(np.array([seq], np.int32))[0][0, -1])))
    assert list(sample_stream(step, None, vocab.encode("ab"), 15, temperature=0)) == seq[2:]


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_keras_beam_search_reorders_states(char_model, kind):
    "Every returned hypothesis's score equals its log-probability recomputed from scratch by the model."
    vocab, models = char_model
    model = models[kind]
    prefix = vocab.encode("ab")
    for s, v in beam_search(keras_step(model), None, prefix, 4, 6):
        lp = tf.nn.log_softmax(model(np.array([list(prefix) + s], np.int32))[0][0]).numpy()
        true = sum(lp[len(prefix) - 1 + k, t] for k, t in enumerate(s))
        np.testing.assert_allclose(v, true, atol=1e-4)


def test_complete(char_model):
    vocab, models = char_model
    model = models["gru"]
    out = complete(model, vocab, "ab", n=3, length=5, beam_width=6, end=" ")
    assert len(out) == 3 and all(isinstance(t, str) and isinstance(v, float) for t, v in out)
    assert [v for _, v in out] == sorted((v for _, v in out), reverse=True)
    assert all(t.endswith(" ") or len(t) == 5 for t, _ in out)
    assert all(" " not in t[:-1] for t, _ in out)
    # a step function is accepted as the model, and gives the same answer
    assert complete(keras_step(model), vocab, "ab", n=3, length=5, beam_width=6, end=" ") == out
    with pytest.raises(ValueError, match="prefix"): complete(model, vocab, "", n=1)
    with pytest.raises(ValueError, match="n must be at most beam_width"):
        complete(model, vocab, "ab", n=5, beam_width=2)
    with pytest.raises(ValueError, match="end must be"): complete(model, vocab, "ab", end="z")
    with pytest.raises(ValueError, match="not in the vocabulary"): complete(model, vocab, "xyz")


def bits_per_char(model, ids, batch_size=16, seq_len=128):
    "What chapter 7 reports: the one evaluator over the Keras window function"
    return evaluate_windows(keras_window(model), ids, batch_size, seq_len, model.vocab_size).bits_per_char


def test_bits_per_char(char_model):
    vocab, models = char_model
    model = models["gru"]
    ids = np.random.default_rng(0).integers(0, len(vocab), 2000).astype(np.int32)
    b = bits_per_char(model, ids, batch_size=4, seq_len=50)
    # every prediction counts once: windows of 7 (a ragged tail in every stream) give the same figure as 50
    np.testing.assert_allclose(bits_per_char(model, ids, batch_size=4, seq_len=7), b, rtol=1e-5)
    np.testing.assert_allclose(bits_per_char(model, ids[:1003], batch_size=4, seq_len=50),
                               bits_per_char(model, ids[:1003], batch_size=1, seq_len=1002), rtol=1e-5)
    assert 0 < b < 2 * np.log2(len(vocab))
    # a single stream read in one window equals the log-loss of one full call
    lp = tf.nn.log_softmax(model(ids[None, :1001])[0][0]).numpy()
    np.testing.assert_allclose(bits_per_char(model, ids[:1001], batch_size=1, seq_len=1000),
                               -lp[np.arange(1000), ids[1:1001]].mean() / np.log(2), rtol=1e-5)
    with pytest.raises(ValueError, match="ids"): bits_per_char(model, np.array([0, 99]))


def test_bad_arguments():
    step = numpy_lm(3)
    with pytest.raises(ValueError, match="beam_width"): beam_search(step, None, [0], 0, 3)
    with pytest.raises(ValueError, match="beam_width"): beam_search(step, None, [0], 1.5, 3)
    with pytest.raises(ValueError, match="length"): beam_search(step, None, [0], 2, 0)
    with pytest.raises(ValueError, match="prefix_ids"): beam_search(step, None, [], 2, 3)
    with pytest.raises(ValueError, match="prefix_ids"): beam_search(step, None, [[0, 1]], 2, 3)
    with pytest.raises(ValueError, match="prefix_ids"): beam_search(step, None, [-1], 2, 3)
    with pytest.raises(ValueError, match="end_id"): beam_search(step, None, [0], 2, 3, end_id=-1)
    with pytest.raises(ValueError, match="step must be a callable"): beam_search(None, None, [0], 2, 3)
    with pytest.raises(ValueError, match="log_probs of shape"):
        beam_search(lambda s, i: (np.zeros(3), s), None, [0], 2, 3)
    with pytest.raises(ValueError, match="pair"): beam_search(lambda s, i: np.zeros((1, 3)), None, [0], 2, 3)
    with pytest.raises(ValueError, match="length"): sample_stream(step, None, [0], -1)
    with pytest.raises(ValueError, match="temperature"): sample_stream(step, None, [0], 3, temperature=-0.5)
    with pytest.raises(ValueError, match="temperature"): sample_stream(step, None, [0], 3, temperature=float("nan"))
    with pytest.raises(ValueError, match="top_k"): sample_stream(step, None, [0], 3, top_k=0)
    with pytest.raises(ValueError, match="prefix_ids"): sample_stream(step, None, [], 3)
    with pytest.raises(ValueError, match="end_id"): sample_stream(step, None, [0], 3, end_id="x")
    with pytest.raises(ValueError, match="step must be a callable"): sample_stream(3, None, [0], 3)
    with pytest.raises(ValueError, match="CharModel"): keras_step(object())


def table_step(table, tokens):
    "A `step` over a table {text so far: {token: log-prob}} (missing texts: uniform); the state is the text so far."
    uniform = {t: -np.log(len(tokens) - 1) for t in tokens[1:]}
    def step(state, ids):
        old = [""] * len(ids) if state is None else list(state)
        new = np.array([s + tokens[i] if i else s for s, i in zip(old, ids)], dtype=object)
        lp = np.full((len(ids), len(tokens)), -np.inf)
        for row, text in enumerate(new):
            for tok, v in table.get(text, uniform).items(): lp[row, tokens.index(tok)] = v
        return lp, new
    return step


def test_beam_search_is_not_monotone_in_width():
    "Chapter 7's crowded table: width 2 prunes the prefix greedy follows and ends below greedy; width 3 does not."
    ln, third = np.log, {t: np.log(1 / 3) for t in "abc"}
    table = {"": {"a": ln(0.5), "b": ln(0.45), "c": ln(0.05)}, "a": {"a": ln(0.4), "b": ln(0.3), "c": ln(0.3)},
             "b": {"a": ln(0.49), "b": ln(0.49), "c": ln(0.02)}, "aa": {"a": ln(0.9), "b": ln(0.05), "c": ln(0.05)},
             "ba": third, "bb": third}
    step = table_step(table, "^abc")
    best = {w: beam_search(step, None, [0], w, 3)[0] for w in (1, 2, 3)}
    assert best[1][0] == [1, 1, 1] and best[1][0] == list(sample_stream(step, None, [0], 3, temperature=0))
    np.testing.assert_allclose(best[1][1], ln(0.5 * 0.4 * 0.9))
    np.testing.assert_allclose(best[2][1], ln(0.45 * 0.49 / 3))
    assert best[3] == best[1]


@pytest.mark.parametrize("seed", range(5))
def test_width_v_to_the_l_minus_one_is_exhaustive(seed):
    V, L = 3, 4
    step = numpy_lm(V, seed=seed)
    exact = brute_force(step, [0, 1], V, L)
    np.testing.assert_allclose(beam_search(step, None, [0, 1], V ** (L - 1), L)[0][1], exact[0][1], atol=1e-12)


def test_sampling_distribution_is_what_the_sampler_draws_from():
    "`sampling_distribution` against the frequencies of `sample_stream`'s draws, and its greedy limits."
    from rnn_tutorial.apps.generation import sampling_distribution
    logits = np.log(np.array([0.05, 0.4, 0.15, 0.3, 0.1]))
    step = lambda state, ids: (np.tile(logits, (len(ids), 1)), state)
    for tau, k in ((1.0, None), (0.5, 3), (2.0, 4)):
        p = sampling_distribution(logits, tau, k)
        draws = np.array(list(sample_stream(step, None, [0], 20_000, temperature=tau, top_k=k, seed=5)))
        np.testing.assert_allclose(np.bincount(draws, minlength=5) / draws.size, p, atol=0.015)
        assert np.isclose(p.sum(), 1) and (k is None or (p > 0).sum() == k)
    np.testing.assert_allclose(sampling_distribution(logits), np.exp(logits))
    for greedy in (sampling_distribution(logits, 0), sampling_distribution(logits, 1.0, 1)):
        np.testing.assert_array_equal(greedy, np.eye(5)[1])
    np.testing.assert_array_equal(sampling_distribution(np.array([5.0, 3.0, 1.0]), 1e-300), [1, 0, 0])  # no NaN
    with pytest.raises(ValueError, match="temperature"): sampling_distribution(logits, -1)
    with pytest.raises(ValueError, match="top_k"): sampling_distribution(logits, 1, 0)
    with pytest.raises(ValueError, match="log_probs"): sampling_distribution(np.zeros((2, 3)))


def test_plot_sampling_and_its_knobs(capsys):
    "The plot's sample is the sampler's, repeatable; the sliders redraw it; bad knobs are refused."
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rnn_tutorial.apps.generation import plot_sampling, sampling_knobs
    plt.close("all")  # figures other tests left open are not this test's
    vocab = Vocab("abcdefgh ")
    step = numpy_lm(len(vocab), seed=3)
    sample = plot_sampling(step, vocab, "a ", temperature=0.7, top_k=4, length=30, seed=2)
    assert capsys.readouterr().out == "a " + sample + "\n"
    drawn = sample_stream(step, None, vocab.encode("a "), 30, 0.7, 4, 2)
    assert sample == vocab.decode(np.array(list(drawn), np.int32))
    assert plot_sampling(step, vocab, "a ", temperature=0.7, top_k=4, length=30, seed=2) == sample
    assert plt.get_fignums() == []  # each figure is shown and closed
    knobs = sampling_knobs(step, vocab, "a ", temperature=0.7, length=30)
    temperature, top_k = knobs.children[:2]
    assert (temperature.value, top_k.value, top_k.max) == (0.7, len(vocab), len(vocab))  # top-k at V: no cut
    assert not temperature.continuous_update and not top_k.continuous_update
    first = knobs.result
    assert first == plot_sampling(step, vocab, "a ", 0.7, None, 30, 0)
    top_k.value = 1  # greedy
    assert knobs.result == plot_sampling(step, vocab, "a ", 0, None, 30, 0) != first
    with pytest.raises(ValueError, match="prefix"): plot_sampling(step, vocab, "")
    with pytest.raises(ValueError, match="n_bars"): plot_sampling(step, vocab, "a", n_bars=0)
    with pytest.raises(ValueError, match="temperature"): plot_sampling(step, vocab, "a", temperature=-1)
    with pytest.raises(ValueError, match="temperature"): sampling_knobs(step, vocab, "a", temperature=3)
    with pytest.raises(ValueError, match="top_k"): sampling_knobs(step, vocab, "a", top_k=len(vocab) + 1)


def test_importing_generation_imports_neither_ipywidgets_nor_matplotlib():
    "The knobs import ipywidgets, and the plots matplotlib, only when called."
    import subprocess
    import sys
    code = ("import sys, rnn_tutorial.apps.generation\n"
            "heavy = sorted(m for m in ('ipywidgets', 'matplotlib') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
