"Watching neurons (`rnn_tutorial.neurons`): text properties by hand, correlation and selection, the shipped LSTM."
import json

import numpy as np
import pytest

from rnn_tutorial.neurons import (
    NEURONS_FILE, PROPERTIES, best_unit, check_lstm_params, colored_text_html, correlations,
    load_neuron_lstm, lstm_states, lstm_window, random_lstm_params, text_properties, train_neuron_lstm,
)
from rnn_tutorial.numpy_train import evaluate_windows
from rnn_tutorial.persist import FormatError, read_json, read_npz, write_npz


# ---- properties of the text, checked by hand ----------------------------------------------------------------------

def test_quotes_apostrophes_and_single_quotes():
    "A quote is on from its opening mark to the character before its closing one; an apostrophe opens nothing."
    p = text_properties("don't 'a\"b' \"c'd\" x")
    #                    d o n ' t _ ' a " b ' _ " c ' d " _ x
    assert p["in quote"].tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0]


def test_brackets_nest_ignore_quotes_and_never_go_negative():
    p = text_properties('a)(b[c{d}]")"e)')
    #                    a ) ( b [ c { d } ] " ) " e )
    assert p["bracket depth"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 2, 1, 1, 1, 1, 1, 0]


def test_a_blank_line_closes_open_quotes_and_brackets():
    p = text_properties('("x\n\ny')
    #                    ( " x \n \n y
    assert p["in quote"].tolist() == [0, 1, 1, 1, 0, 0]
    assert p["bracket depth"].tolist() == [1, 1, 1, 1, 0, 0]


def test_line_position_and_indentation():
    p = text_properties("ab\n  c d\n\n e")
    #                    a b \n _ _ c _ d \n \n _ e
    assert p["line position"].tolist() == [1, 2, 0, 1, 2, 3, 4, 5, 0, 0, 1, 2]
    assert p["indentation"].tolist() == [0, 0, 0, 1, 2, 2, 2, 2, 0, 0, 1, 1]


def test_properties_shape_and_bad_input():
    p = text_properties("")
    assert list(p) == list(PROPERTIES) and all(v.shape == (0,) for v in p.values())
    with pytest.raises(ValueError, match="text must be a str"):
        text_properties(b"abc")


# ---- correlation and selection -----------------------------------------------------------------------------------

def test_correlations_match_numpy_and_handle_constants():
    rng = np.random.default_rng(0)
    acts, prop = rng.standard_normal((300, 6)), rng.standard_normal(300)
    acts[:, 2] = 7.0  # a constant unit
    expected = np.array([0.0 if j == 2 else np.corrcoef(acts[:, j], prop)[0, 1] for j in range(6)])
    np.testing.assert_allclose(correlations(acts, prop), expected, atol=1e-12)
    np.testing.assert_array_equal(correlations(acts, np.ones(300)), np.zeros(6))


def test_a_planted_unit_is_found_and_confirmed():
    "A unit that is the property plus noise is chosen on one text and keeps its r on another; noise units do not."
    rng = np.random.default_rng(1)
    def slice_(n):
        prop = (rng.random(n) < 0.2).astype(float)
        acts = rng.standard_normal((n, 50))
        acts[:, 37] = -2 * prop + 0.3 * rng.standard_normal(n)
        return acts, prop
    (a1, p1), (a2, p2) = slice_(2000), slice_(2000)
    unit, r_sel, r_conf = best_unit(a1, p1, a2, p2)
    assert unit == 37 and r_sel < -0.9 and r_conf < -0.9
    a1[:, 37], a2[:, 37] = rng.standard_normal(2000), rng.standard_normal(2000)  # no planted unit: chance only
    unit, r_sel, r_conf = best_unit(a1, p1, a2, p2)
    assert abs(r_sel) < 0.15 and abs(r_conf) < abs(r_sel)


def test_correlation_bad_input():
    with pytest.raises(ValueError, match="prop"):
        correlations(np.zeros((5, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="acts"):
        correlations(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match="at least 2 rows"):
        correlations(np.zeros((1, 2)), np.zeros(1))


def test_colored_text_html_escapes_and_checks():
    out = colored_text_html("a<b\n", np.array([1.0, -0.5, 0.0, 2.0]))
    assert out.startswith("<pre") and "&lt;" in out and "<b" not in out.replace("<pre", "")
    assert "rgba(214,39,40,0.50)" in out and "rgba(31,119,180,0.25)" in out
    with pytest.raises(ValueError, match="values"):
        colored_text_html("abc", np.zeros(2))


# ---- the shipped LSTM --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped():
    return load_neuron_lstm()


def test_results_load_and_match_their_record(shipped):
    params, vocab, meta = shipped
    record = read_json(NEURONS_FILE.with_suffix(".json"))
    V, E, H = check_lstm_params(params)
    assert meta["config"] == record["config"]
    assert (H, E) == (record["config"]["units"], record["config"]["embedding_dim"])
    assert V == len(vocab) and meta["held_out_bits_per_char"] == record["held_out_bits_per_char"]
    assert record["command"].startswith("python -m rnn_tutorial.neurons train")
    assert record["steps_done"] == record["config"]["steps"]
    assert record["held_out_bits_per_char"] < record["unigram_bits_per_char"] - 1
    assert NEURONS_FILE.stat().st_size <= 3_000_000
    assert all(a.dtype == np.float32 for a in params.values())


def test_numpy_states_equal_keras(shipped):
    "The weights trained in Keras run in chapter 3's NumPy LSTM: same logits as the Keras model, to float32 rounding."
    from rnn_tutorial.tf_rnn import CharModel
    params, vocab, meta = shipped
    V, E, H = check_lstm_params(params)
    ids = vocab.encode('Return "True" if *d* has a key (or "False").\n   x = f(a[1])')
    model = CharModel(V, H, "lstm", embedding_dim=E, builtin=True)
    model.build()
    model.embedding.set_weights([params["embedding"]])
    model.rnn.set_weights([params["kernel"], params["recurrent_kernel"], params["bias"]])
    model.dense.set_weights([params["dense_kernel"], params["dense_bias"]])
    logits, (h_last, c_last) = model(ids[None])
    h, c = lstm_states(params, ids)
    np.testing.assert_allclose(h @ params["dense_kernel"] + params["dense_bias"], logits.numpy()[0], atol=1e-4)
    np.testing.assert_allclose(c[-1], c_last.numpy()[0], atol=1e-4)
    lp = logits.numpy()[0, :-1] - np.log(np.exp(logits.numpy()[0, :-1]).sum(-1, keepdims=True))
    keras_bits = -lp[np.arange(len(ids) - 1), ids[1:]].mean() / np.log(2)
    numpy_bits = evaluate_windows(lstm_window(params), ids, 1, 7, V).bits_per_char  # one stream, state carried
    assert numpy_bits == pytest.approx(keras_bits, abs=1e-4)


def test_streams_are_independent(shipped):
    "Two streams in one batch give each stream's states alone."
    params, vocab, _ = shipped
    a, b = vocab.encode("(a, b)\n"), vocab.encode('"x" yz\n')
    h2, c2 = lstm_states(params, np.stack([a, b]))
    for k, ids in enumerate((a, b)):
        h, c = lstm_states(params, ids)
        np.testing.assert_allclose(h2[k], h, atol=1e-6)
        np.testing.assert_allclose(c2[k], c, atol=1e-5)


def test_random_params_and_bad_ids(shipped):
    params, vocab, _ = shipped
    rnd = random_lstm_params(params, seed=3)
    assert check_lstm_params(rnd) == check_lstm_params(params)
    assert not np.allclose(rnd["kernel"], params["kernel"])
    for bad in (np.array([0, len(vocab)]), np.array([], int), np.array([0.5, 1.0]), np.zeros((1, 1, 1), int)):
        with pytest.raises(ValueError, match="ids must be"):
            lstm_states(params, bad)
    with pytest.raises(ValueError, match="params must be a dict"):
        lstm_states({"kernel": params["kernel"]}, np.array([0, 1]))


def test_damaged_or_missing_files(shipped, tmp_path):
    params, vocab, meta = shipped
    with pytest.raises(FileNotFoundError, match="run: OPENBLAS_NUM_THREADS=1"):
        load_neuron_lstm(tmp_path / "nothing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(FormatError):
        load_neuron_lstm(tmp_path / "junk.npz")
    write_npz(tmp_path / "short.npz", {**params, "dense_bias": params["dense_bias"][:-1]}, meta)
    with pytest.raises(FormatError, match="dense_bias"):
        load_neuron_lstm(tmp_path / "short.npz")
    write_npz(tmp_path / "config.npz", params, {**meta, "config": {**meta["config"], "units": 7}})
    with pytest.raises(FormatError, match="do not match"):
        load_neuron_lstm(tmp_path / "config.npz")
    write_npz(tmp_path / "nan.npz", {**params, "bias": np.full_like(params["bias"], np.nan)}, meta)
    with pytest.raises(FormatError, match="bias"):
        load_neuron_lstm(tmp_path / "nan.npz")


def test_a_tiny_training_run_writes_loadable_files(tmp_path):
    "The precompute command's function, tiny: two steps of an 8-unit LSTM, files that load and agree."
    record = train_neuron_lstm(tmp_path / "tiny", units=8, embedding_dim=4, batch_size=4, seq_len=16, steps=2,
                               command="test")
    params, vocab, meta = load_neuron_lstm(tmp_path / "tiny.npz")
    assert check_lstm_params(params) == (len(vocab), 4, 8) and record["steps_done"] == 2
    assert json.loads((tmp_path / "tiny.json").read_text())["config"] == meta["config"]
    arrays, _ = read_npz(tmp_path / "tiny.npz", "rnn-tutorial.neurons-lstm", 1)
    assert set(arrays) == {"embedding", "kernel", "recurrent_kernel", "bias", "dense_kernel", "dense_bias"}
    with pytest.raises(ValueError, match="units"):
        train_neuron_lstm(None, units=0)
