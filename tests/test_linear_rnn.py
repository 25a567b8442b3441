"Linear recurrences and minimal RNNs (`rnn_tutorial.linear_rnn`): scans against the loop, gradients, bad input."
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_tutorial.linear_rnn import (
    SCANS, MinGRU, MinLSTM, init_min_params, linear_scan, load_results, mingru_backward, mingru_forward,
    minlstm_forward, scan_backward, scan_cost, scan_log_space, scan_loop,
)
from rnn_tutorial.numpy_rnn import Bidirectional, StackedRNN, gradient_check


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 300), width=st.integers(1, 4), method=st.sampled_from(sorted(SCANS)), seed=st.integers(0, 99))
def test_every_scan_equals_the_loop(T, width, method, seed):
    "Any length, any width, any scan: the loop's states, with and without an initial state."
    rng = np.random.default_rng(seed)
    a, b, h0 = rng.uniform(-1, 1, (T, width)), rng.standard_normal((T, width)), rng.standard_normal(width)
    np.testing.assert_allclose(linear_scan(a, b, h0, method), scan_loop(a, b, h0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(linear_scan(a, b, None, method), scan_loop(a, b), rtol=1e-10, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(T=st.integers(1, 200), chunk=st.integers(1, 40), seed=st.integers(0, 99))
def test_chunked_scan_any_chunk(T, chunk, seed):
    "The chunked scan is right for any chunk size, including chunks longer than the sequence."
    from rnn_tutorial.linear_rnn import scan_chunked
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0, 1, (T, 2)), rng.standard_normal((T, 2))
    np.testing.assert_allclose(scan_chunked(a, b, chunk=chunk), scan_loop(a, b), rtol=1e-10, atol=1e-12)


def test_scan_keeps_trailing_shape_and_dtype():
    "Time first, any trailing shape; float32 in, float32 out."
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 1, (9, 2, 3)).astype(np.float32), rng.standard_normal((9, 2, 3)).astype(np.float32)
    for m in SCANS:
        h = linear_scan(a, b, method=m)
        assert h.shape == (9, 2, 3) and h.dtype == np.float32


@settings(max_examples=25, deadline=None)
@given(T=st.integers(1, 100), seed=st.integers(0, 99))
def test_log_space_matches_loop(T, seed):
    "For positive coefficients and inputs the log-space closed form is the loop's answer."
    rng = np.random.default_rng(seed)
    a, b, h0 = rng.uniform(0.01, 1, (T, 3)), rng.uniform(0.01, 2, (T, 3)), rng.uniform(0.1, 1, 3)
    np.testing.assert_allclose(np.exp(scan_log_space(np.log(a), np.log(b), np.log(h0))), scan_loop(a, b, h0),
                               rtol=1e-9)


def test_scan_backward_is_the_transposed_recurrence():
    "Gradients of sum(h * R) through the recurrence, against finite differences, with every scan."
    rng = np.random.default_rng(1)
    a, b, R = rng.uniform(-1, 1, (6, 2)), rng.standard_normal((6, 2)), rng.standard_normal((6, 2))
    h0 = rng.standard_normal(2)
    for m in SCANS:
        def f(arr):
            hs = scan_loop(arr["a"], arr["b"], arr["h0"])
            da, db, dh0 = scan_backward(R, arr["a"], np.concatenate([arr["h0"][None], hs[:-1]]), method=m)
            return float((hs * R).sum()), {"a": da, "b": db, "h0": dh0}
        assert max(gradient_check(f, {"a": a, "b": b, "h0": h0}).values()) < 1e-6


def test_scan_cost_counts():
    "Work and depth of each scan, at a few lengths."
    assert scan_cost(1, "loop") == {"combines": 1, "depth": 1}
    assert scan_cost(8, "hillis-steele") == {"combines": 17, "depth": 3}
    assert scan_cost(8, "blelloch") == {"combines": 22, "depth": 7}
    assert scan_cost(16, "chunked")["depth"] == 7


@pytest.mark.parametrize("cls", [MinGRU, MinLSTM])
def test_stacked_bidirectional_gradients(cls):
    "A stack of a bidirectional layer and a last-state layer, every array gradient-checked in float64."
    net = StackedRNN([Bidirectional(cls(3, dtype="float64", scan="blelloch")),
                      cls(2, return_sequences=False, seed=2, dtype="float64")]).build(3)
    rng = np.random.default_rng(0)
    x, R = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 2))
    arrays = {"params": net.params, "x": x}

    def f(a):
        net.params = a["params"]
        out, cache = net.forward(a["x"])
        grads, dx, _ = net.backward(R, cache)
        return float((out * R).sum()), {"params": grads, "x": dx}
    assert max(gradient_check(f, arrays, eps=1e-5).values()) < 1e-6


def test_final_state_carries_a_sequence_across_chunks():
    "Running two halves with the state carried equals one run over the whole."
    layer = MinLSTM(4, seed=0).build(3)
    x = np.random.default_rng(0).standard_normal((2, 10, 3)).astype(np.float32)
    whole, _ = layer.forward(x)
    first, cache = layer.forward(x[:, :6])
    second, _ = layer.forward(x[:, 6:], layer.final_state(cache))
    np.testing.assert_allclose(np.concatenate([first, second], 1), whole, rtol=1e-5, atol=1e-6)


def test_token_ids_equal_one_hot_inputs():
    "Ids are one-hot inputs: the same states and the same kernel gradient; dx is None."
    p = init_min_params(5, 3, 2, dtype="float64")
    ids = np.random.default_rng(0).integers(0, 5, (2, 4))
    hs_ids, c_ids = mingru_forward(ids, p)
    hs_oh, c_oh = mingru_forward(np.eye(5)[ids], p)
    np.testing.assert_allclose(hs_ids, hs_oh)
    R = np.ones_like(hs_ids)
    g_ids, dx, _ = mingru_backward(R, c_ids)
    np.testing.assert_allclose(g_ids["kernel"], mingru_backward(R, c_oh)[0]["kernel"])
    assert dx is None


def test_config_round_trip():
    "get_config gives the constructor's arguments back."
    layer = MinGRU(8, return_sequences=False, seed=3, dtype="float64", scan="chunked")
    assert type(layer)(**layer.get_config()).get_config() == layer.get_config()


@pytest.mark.parametrize("call, message", [
    (lambda: MinGRU(0), "units must be an integer >= 1, got 0"),
    (lambda: MinGRU(4, scan="fast"), "scan must be one of"),
    (lambda: MinLSTM(4, dtype="int32"), "dtype must be a floating-point dtype"),
    (lambda: linear_scan(np.ones(3), np.ones(3), method="magic"), "method must be one of"),
    (lambda: linear_scan(np.ones(3), np.ones(4)), "a must have shape (4)"),
    (lambda: linear_scan(np.ones((3, 2)), np.ones((3, 2)), h0=np.ones(3)), "h0 must have shape (2)"),
    (lambda: linear_scan(np.ones(0), np.ones(0)), "b must be an array (time, ...) with at least 1 step"),
    (lambda: linear_scan(np.ones(2), np.array([1.0, np.nan])), "b must be finite"),
    (lambda: linear_scan(np.ones(2, int), np.ones(2)), "a must be a floating-point array"),
    (lambda: mingru_forward(np.ones((1, 2, 3)), {"kernel": np.ones((3, 4))}),
     "must be a dict with 'kernel' and 'bias'"),
    (lambda: mingru_forward(np.ones((1, 2, 3)), init_min_params(4, 2, 2)), "x must have shape"),
    (lambda: minlstm_forward(np.ones((1, 2, 3)), init_min_params(3, 2, 2)), "kernel of a minLSTM must have shape"),
    (lambda: mingru_forward(np.ones((1, 2, 3)), init_min_params(3, 2, 2), h0=np.ones((2, 2))), "h0 must have shape"),
    (lambda: scan_cost(0, "loop"), "T must be an integer >= 1, got 0"),
])
def test_bad_input_is_refused_with_one_clear_line(call, message):
    with pytest.raises(ValueError, match=None) as e:
        call()
    assert message in str(e.value), str(e.value)


def test_forward_before_build_needs_features():
    "Token ids cannot build a layer: the vocabulary size is unknown."
    with pytest.raises(ValueError, match="call build"):
        MinGRU(3).forward(np.zeros((1, 2), int))


def test_load_results_refuses_other_files(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a results file"):
        load_results(tmp_path / "x.json")
    with pytest.raises(FileNotFoundError, match="python -m rnn_tutorial.linear_rnn"):
        load_results(tmp_path / "missing.json")


def test_shipped_results_load():
    "The precomputed files shipped in the package are readable and were made by the recorded command."
    from rnn_tutorial.linear_rnn import ADDING_FILES, QUALITY_FILE, SPEED_FILE
    for path in (SPEED_FILE, QUALITY_FILE):
        assert "python -m rnn_tutorial.linear_rnn" in load_results(path)["command"]
    for model, path in ADDING_FILES.items():  # one model per file, T=200, the command that the chapter prints
        r = load_results(path)
        assert f"adding --models {model} " in r["command"] and [run["model"] for run in r["runs"]] == [model]
        assert r["config"]["T"] == 200 and r["config"]["lr"] == 3e-3 and r["config"]["batch_size"] == 64


def test_import_does_not_import_tensorflow():
    code = "import rnn_tutorial.linear_rnn, sys; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_usage_error_exits_2():
    r = subprocess.run([sys.executable, "-m", "rnn_tutorial.linear_rnn", "nothing"], capture_output=True, text=True)
    assert r.returncode == 2 and "invalid choice" in r.stderr


@pytest.mark.parametrize("cls", [MinGRU, MinLSTM])
def test_layer_has_the_interface_of_the_numpy_train_layers(cls):
    """What `numpy_train` asks of a layer in `NUMPY_LAYERS` (for `--cell mingru`): the GRU's constructor arguments
    and methods, `cls(1)` builds, a JSON config that rebuilds the layer, `params` of `kernel` and `bias`, a single
    array as state, and one training step of a `CharRNN` through `forward`, `compute_loss`, `backward`, `update`."""
    import inspect

    from rnn_tutorial import numpy_train as nt
    from rnn_tutorial.numpy_gated import GRU
    gru_args = list(inspect.signature(GRU).parameters)
    assert list(inspect.signature(cls).parameters)[:len(gru_args)] == gru_args  # then `scan`, with a default
    for name in ("build", "forward", "backward", "final_state", "get_config", "count_params", "output_dim"):
        assert hasattr(cls, name), name
    config = cls(1).get_config()
    assert set(config) == set(GRU(1).get_config()) | {"scan"}
    assert json.loads(json.dumps(config)) == config and cls(**config).get_config() == config
    layer = cls(6, seed=1)
    model = nt.CharRNN(9, layer, seed=1)
    assert set(model.params["rnn"]) == {"kernel", "bias"} and model.params["rnn"]["kernel"].shape == (9, cls.gates * 6)
    x, y = np.random.default_rng(0).integers(0, 9, (2, 3, 5))
    opt, losses = nt.Adam(0.05), []
    state = None
    for _ in range(8):
        logits, cache, state = nt.forward(model, x, state)
        assert isinstance(state, np.ndarray) and state.shape == (3, 6)  # one array, like the GRU's h
        loss, dlogits = nt.compute_loss(logits, y)
        nt.update(model.params, nt.backward(model, dlogits, cache), opt, clip_norm=5.0)
        losses.append(loss)
    assert losses[-1] < losses[0]


def test_adding_run_short(tmp_path):
    "A few steps of the adding-problem run: its JSON has the config, one record per model and a learning curve."
    from rnn_tutorial.linear_rnn import ADDING_MODELS, AddingNet, run_adding
    out = tmp_path / "adding.json"
    r = run_adding(out, models=("mingru", "mingru-2"), T=8, steps=30, eval_every=10, n_valid=32, command="test")
    assert load_results(out) == json.loads(json.dumps(r))
    assert [run["model"] for run in r["runs"]] == ["mingru", "mingru-2"] and r["config"]["T"] == 8
    for run in r["runs"]:
        assert [s for s, _ in run["curve"]][:3] == [10, 20, 30][:len(run["curve"])]
        assert run["ratio"] == pytest.approx(run["final_loss"] / run["baseline"])
        assert 0.05 < run["baseline"] < 0.4  # about 1/6: the variance of the sum of two uniform values
    net = AddingNet("mingru-2", units=5)
    assert net.predict(np.zeros((3, 7, 2), np.float32)).shape == (3,) and set(ADDING_MODELS) >= {"mingru", "minlstm"}
    with pytest.raises(ValueError, match="model must be one of"):
        AddingNet("lstm")
