"""Tests of `rnn_tutorial.diagnostics`: the measured Jacobian norms against explicit products and finite
differences, the bound, the spectral radius, the initialisers, clipping, the long-memory results and command."""
import json
import subprocess
import sys

import numpy as np
import pytest

from rnn_tutorial.diagnostics import (ACTIVATION_DERIVATIVE_BOUND, LONG_MEMORY_FILE, LONG_MEMORY_MODELS,
                                      clip_by_global_norm, clip_by_value, decay_rate, gradient_norm_by_distance,
                                      init_recurrent_kernel, jacobian_bound, jacobian_norms, load_long_memory,
                                      run_long_memory, scaled_recurrent_kernel, solved_table, spectral_radius,
                                      state_gradients)
from rnn_tutorial.numpy_gated import gru_forward, init_gru_params, init_lstm_params, lstm_forward
from rnn_tutorial.numpy_rnn import get_activation, init_rnn_params, rnn_backward, rnn_forward
from rnn_tutorial.persist import FormatError


def _rnn(D, H, seed, radius, bias=0.1):
    p = init_rnn_params(D, H, seed=seed, dtype="float64")
    p["recurrent_kernel"] = scaled_recurrent_kernel(init_recurrent_kernel(H, "gaussian", seed=seed + 1), radius)
    p["bias"][:] = bias
    return p


def _brute_force_norms(p, x, activation):
    "Spectral norms of dh_T/dh_{T-k}, k = 0..T, as explicit products diag(phi'(a_s)) W_hh^T, batch mean."
    hs, _ = rnn_forward(x, p, None, activation)
    dphi = get_activation(activation).df(hs)
    B, T, H = hs.shape
    out = np.zeros((B, T + 1))
    for b in range(B):
        J = np.eye(H)
        out[b, 0] = 1.0
        for k, s in enumerate(reversed(range(T)), 1):
            J = J @ (dphi[b, s][:, None] * p["recurrent_kernel"].T)
            out[b, k] = np.linalg.norm(J, 2)
    return out.mean(0)


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
@pytest.mark.parametrize("radius", [0.5, 1.0, 2.0])
def test_jacobian_norms_equal_explicit_product(activation, radius):
    x = np.random.default_rng(0).standard_normal((3, 7, 2))
    p = _rnn(2, 5, 1, radius)
    measured = jacobian_norms("rnn", p, x, activation=activation)
    np.testing.assert_allclose(measured, _brute_force_norms(p, x, activation), rtol=1e-10, atol=1e-300)
    assert measured.shape == (8,) and measured[0] == pytest.approx(1.0)


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
@pytest.mark.parametrize("seed", range(4))
def test_bound_holds(activation, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 12, 3)) * rng.uniform(0.1, 3)
    p = _rnn(3, 6, seed, rng.uniform(0.3, 3.0))
    measured = jacobian_norms("rnn", p, x, activation=activation)
    assert (measured <= jacobian_bound(p["recurrent_kernel"], activation, np.arange(13)) * (1 + 1e-10)).all()


def test_bound_values():
    W = np.diag([2.0, 0.5])
    np.testing.assert_allclose(jacobian_bound(W, "sigmoid", [0, 1, 3]), [1, 0.5, 0.125])
    np.testing.assert_allclose(jacobian_bound(W, "tanh", [2]), [4.0])
    assert ACTIVATION_DERIVATIVE_BOUND == {"tanh": 1.0, "relu": 1.0, "sigmoid": 0.25}
    with pytest.raises(ValueError, match="activation must be one of 'relu', 'sigmoid', 'tanh', got 'softplus'"):
        jacobian_bound(W, "softplus", [1])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gated_state_gradients_match_finite_differences(cell):
    rng = np.random.default_rng(2)
    B, T, D, H = 2, 5, 3, 4
    p = (init_lstm_params if cell == "lstm" else init_gru_params)(D, H, seed=3, dtype="float64")
    x, h0 = rng.standard_normal((B, T, D)), 0.5 * rng.standard_normal((B, H))
    r = rng.standard_normal((B, H))
    fwd = (lambda h: lstm_forward(x, p, h)[0]) if cell == "lstm" else (lambda h: gru_forward(x, p, h)[0])
    g = state_gradients(cell, p, x, r, h0)
    assert g.shape == (B, T + 1, H)
    np.testing.assert_array_equal(g[:, T], r)
    num = np.zeros((B, H))
    for b in range(B):
        for j in range(H):
            e = np.zeros((B, H))
            e[b, j] = 1e-6
            num[b, j] = ((fwd(h0 + e)[:, -1] * r).sum() - (fwd(h0 - e)[:, -1] * r).sum()) / 2e-6
    np.testing.assert_allclose(g[:, 0], num, rtol=1e-7, atol=1e-9)


def test_gradient_norm_by_distance():
    x = np.random.default_rng(0).standard_normal((5, 9, 2))
    p = _rnn(2, 4, 0, 1.0)
    n = gradient_norm_by_distance("rnn", p, x, seed=3)
    assert n.shape == (10,) and n[0] == pytest.approx(1.0)  # a unit vector r at distance 0
    assert (n <= jacobian_norms("rnn", p, x) * (1 + 1e-12)).all()  # ||J^T r|| <= ||J|| for ||r|| = 1


def test_spectral_radius_known_matrices():
    assert spectral_radius(np.array([[0.0, -1.0], [1.0, 0.0]])) == pytest.approx(1.0)
    assert spectral_radius(np.array([[0.5, 10.0], [0.0, 0.2]])) == pytest.approx(0.5)
    assert spectral_radius(np.diag([-3.0, 2.0, 1.0])) == pytest.approx(3.0)
    W = init_recurrent_kernel(20, "gaussian", seed=0)
    assert spectral_radius(scaled_recurrent_kernel(W, 1.7)) == pytest.approx(1.7)
    with pytest.raises(ValueError, match="square"):
        spectral_radius(np.ones((2, 3)))
    with pytest.raises(ValueError, match="radius must be a finite number > 0.0, got 0"):
        scaled_recurrent_kernel(W, 0)


def test_init_recurrent_kernel():
    Q = init_recurrent_kernel(8, "orthogonal", seed=1)
    np.testing.assert_allclose(Q @ Q.T, np.eye(8), atol=1e-12)
    np.testing.assert_array_equal(init_recurrent_kernel(3, "identity", scale=0.5), 0.5 * np.eye(3))
    G = init_recurrent_kernel(400, "gaussian", seed=0)
    assert G.std() == pytest.approx(1 / 20, rel=0.05) and G.dtype == np.float64
    assert init_recurrent_kernel(4, dtype="float32").dtype == np.float32
    np.testing.assert_array_equal(init_recurrent_kernel(5, "gaussian", seed=7),
                                  init_recurrent_kernel(5, "gaussian", seed=7))
    assert not np.array_equal(init_recurrent_kernel(5, "gaussian", seed=7),
                              init_recurrent_kernel(5, "gaussian", seed=8))
    with pytest.raises(ValueError, match="kind must be one of 'orthogonal', 'identity', 'gaussian', got 'uniform'"):
        init_recurrent_kernel(4, "uniform")
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        init_recurrent_kernel(0)


def test_decay_rate_and_bad_cell():
    assert decay_rate(0.5 ** np.arange(31), start=10) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="cell must be one of 'rnn', 'lstm', 'gru', got 'transformer'"):
        jacobian_norms("transformer", _rnn(2, 3, 0, 1.0), np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="params must be a dict with 'kernel', 'recurrent_kernel' and 'bias'"):
        state_gradients("rnn", {"kernel": np.zeros((2, 3))}, np.zeros((1, 2, 2)), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="x must have shape"):
        state_gradients("rnn", _rnn(2, 3, 0, 1.0), np.zeros(4), np.zeros((1, 3)))


def test_shipped_long_memory_results():
    "Every shipped results file names its command and configuration, and each run's ratio is its loss / baseline."
    assert LONG_MEMORY_FILE.exists()
    for name in ("long_memory.json", "long_memory_gru.json", "long_memory_tanh.json", "long_memory_t100.json",
                 "long_memory_t100_gru.json", "long_memory_t100_tanh.json", "long_memory_ablation.json",
                 "long_memory_ablation_t200.json", "long_memory_ablation_lr1e-3.json",
                 "long_memory_ablation_noclip.json", "copy_long.json",
                 "long_memory_copy_gru.json"):
        d = load_long_memory(LONG_MEMORY_FILE.parent / name)
        assert d["command"].startswith("python -m rnn_tutorial.diagnostics long-memory") and name in d["command"]
        cfg = d["config"]
        assert set(cfg["models"]) <= set(LONG_MEMORY_MODELS) and d["runs"]
        for r in d["runs"]:
            assert r["baseline"] > 0 and r["T"] in cfg["lengths"] and r["steps"] <= cfg["steps"]
            assert r["ratio"] is None or r["ratio"] == pytest.approx(r["final_loss"] / r["baseline"])
            assert r["curve"][-1] == [r["steps"], r["final_loss"]] and r["stopped"] != "running"


def test_load_long_memory_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="long-memory"):
        load_long_memory(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(FormatError, match="not a long-memory results file"):
        load_long_memory(bad)
    bad.write_text("{not json")
    with pytest.raises(FormatError, match="not a valid long-memory results file"):
        load_long_memory(bad)


def test_solved_table():
    runs = [{"task": "adding", "model": "gru", "T": 10, "ratio": 0.01},
            {"task": "adding", "model": "gru", "T": 50, "ratio": 0.5},
            {"task": "adding", "model": "gru", "T": 100, "ratio": 0.1},  # at the threshold: not solved
            {"task": "adding", "model": "tanh", "T": 10, "ratio": None}]
    assert solved_table({"runs": runs}) == {("adding", "gru"): [10], ("adding", "tanh"): []}


def test_module_imports_without_tensorflow():
    code = "import sys, rnn_tutorial.diagnostics; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_long_memory_command(tmp_path):
    "The documented command, at a tiny size: it writes a results file that `load_long_memory` reads."
    out = tmp_path / "lm.json"
    cmd = [sys.executable, "-m", "rnn_tutorial.diagnostics", "long-memory", "--out", str(out),
           "--tasks", "adding", "copy", "--lengths", "3", "--models", "tanh", "gru", "--units", "4", "--steps", "2",
           "--batch-size", "8"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300)
    assert proc.stderr == "", proc.stderr  # TensorFlow's set-up logs silenced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm.json"]  # written atomically: no temporary file left
    d = load_long_memory(out)
    assert [(r["task"], r["model"], r["T"]) for r in d["runs"]] == [("adding", "tanh", 3), ("adding", "gru", 3),
                                                                      ("copy", "tanh", 3), ("copy", "gru", 3)]
    assert d["config"]["steps"] == 2 and "--steps 2" in d["command"]
    assert all(r["final_loss"] is not None and len(r["curve"]) == 1 for r in d["runs"])


def test_long_memory_short_run_learns():
    "A short version of chapter 04's runs: an LSTM with the chapter's settings solves the adding problem at T = 4."
    r = run_long_memory(None, ("adding",), (4,), ("lstm",), units=32, steps=600, eval_every=25, stop_ratio=0.1,
                        n_valid=256)["runs"][0]
    assert r["curve"][0][1] > 0.3 * r["baseline"]  # it starts far from the answer
    assert r["ratio"] < 0.1 and r["steps"] < 600  # and stops early once below 10% of the baseline, 1/6
    assert r["baseline"] == pytest.approx(1 / 6)


def test_long_memory_bad_arguments_before_tensorflow(tmp_path):
    "Bad arguments are refused with the argument named, before TensorFlow is imported or anything is written."
    for kwargs, msg in (({"tasks": ("adding", "sorting")}, "tasks must be one of 'adding', 'copy', got 'sorting'"),
                        ({"models": ("lstm", "rnn")}, "models must be one of 'tanh', 'relu-identity'"),
                        ({"lengths": (10, 1)}, "lengths must be an integer >= 2, got 1"),
                        ({"units": 2.5}, "units must be an integer >= 1, got 2.5"),
                        ({"lr": -1.0}, "lr must be a finite number > 0.0, got -1.0"),
                        ({"clipnorm": 0}, "clipnorm must be a finite number > 0.0, got 0"),
                        ({"stop_ratio": -0.1}, "stop_ratio must be a finite number > 0.0, got -0.1"),
                        ({"copy_length": 0}, "copy_length must be an integer >= 1, got 0"),
                        ({"threads": 0}, "threads must be an integer >= 1, got 0")):
        with pytest.raises(ValueError, match=msg):
            run_long_memory(tmp_path / "x.json", **kwargs)
    assert not list(tmp_path.iterdir())


def test_rnn_state_gradients_equal_one_backward_pass():
    "The step-by-step walk back gives the same dL/dh_0 as one full backward pass of the vanilla cell."
    rng = np.random.default_rng(4)
    p, x, h0, r = _rnn(3, 5, 2, 1.2), rng.standard_normal((2, 8, 3)), rng.standard_normal((2,
                                                                                           5)), rng.standard_normal((2,
                                                                                                                     5))
    g = state_gradients("rnn", p, x, r, h0, activation="relu")
    _, _, dh0 = rnn_backward(None, rnn_forward(x, p, h0, "relu")[1], dh_last=r)
    np.testing.assert_allclose(g[:, 0], dh0, rtol=1e-12, atol=1e-14)
    assert np.abs(g[:, 0] - r).max() > 0.1  # the walk back really moved the gradient


def test_clipping_by_value_at_the_limit():
    "Components at the limit are kept, components above it are cut to it: the limit is c, not 2c."
    g = {"w": np.array([-3.0, -1.0, 0.5, 1.0, 1.5, 2.0])}
    assert clip_by_value(g, 1.0) == 3  # -3, 1.5 and 2 are above 1; 1.0 is at the limit
    np.testing.assert_array_equal(g["w"], [-1.0, -1.0, 0.5, 1.0, 1.0, 1.0])
    g = {"w": np.array([-3.0, -1.0, 0.5, 1.0, 1.5, 2.0])}
    assert clip_by_value(g, 2.0) == 1
    np.testing.assert_array_equal(g["w"], [-2.0, -1.0, 0.5, 1.0, 1.5, 2.0])


def test_clipping_by_global_norm_at_the_limit():
    "A gradient of global norm 5 is kept at limit 5, halved at 2.5, kept at 10; the direction never changes."
    def grads(): return {"a": np.array([3.0]), "b": {"c": np.array([[4.0]])}}
    for limit, scale in ((5.0, 1.0), (2.5, 0.5), (10.0, 1.0), (1.0, 0.2)):
        g = grads()
        assert clip_by_global_norm(g, limit) == pytest.approx(5.0)
        np.testing.assert_allclose([g["a"][0], g["b"]["c"][0, 0]], [3.0 * scale, 4.0 * scale], rtol=1e-12)


def test_init_recurrent_kernel_kinds_and_errors():
    "Moved from chapter 04: every kind's shape, orthogonality, the identity's scale, and the one-line errors."
    from rnn_tutorial.diagnostics import RECURRENT_INITS
    for kind in RECURRENT_INITS:
        assert init_recurrent_kernel(5, kind).shape == (5, 5)
    Q = init_recurrent_kernel(6, "orthogonal", seed=3)
    np.testing.assert_allclose(Q @ Q.T, np.eye(6), atol=1e-12)
    np.testing.assert_array_equal(init_recurrent_kernel(4, "identity", scale=2.0), 2 * np.eye(4))
    with pytest.raises(ValueError, match="kind must be one of 'orthogonal', 'identity', 'gaussian', got 'uniform'"):
        init_recurrent_kernel(4, "uniform")
    with pytest.raises(ValueError, match="square"):
        spectral_radius(np.ones((2, 3)))
    with pytest.raises(ValueError, match="radius must be a finite number > 0.0, got -1"):
        scaled_recurrent_kernel(np.array([[0.0, -1.0], [1.0, 0.0]]), -1)
