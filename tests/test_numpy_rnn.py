"The NumPy vanilla RNN (`rnn_tutorial.numpy_rnn`): gradients, shapes, dtypes, bad input, saving."
import os

import numpy as np
import pytest

from rnn_tutorial import persist
from rnn_tutorial.numpy_rnn import (
    ACTIVATIONS, CELL_GATES, Bidirectional, SimpleRNN, StackedRNN, dense_backward, dense_forward, get_activation,
    gradient_check, init_dense_params, init_rnn_params, load_params, mse, rnn_backward, rnn_forward,
    save_params, softmax_cross_entropy, unflatten_tree,
)
from rnn_tutorial.persist import FormatError

B, T, D, H = 2, 5, 3, 4


def _rnn_loss(x, activation, R, r_last):
    "A loss reading the states at every step and the final state; f(arrays) for `gradient_check`."
    def f(a):
        hs, cache = rnn_forward(a.get("x", x), a["params"], a["h0"], activation)
        grads, dx, dh0 = rnn_backward(R, cache, dh_last=r_last)
        g = {"params": grads, "h0": dh0}
        if "x" in a:
            g["x"] = dx
        return float((hs * R).sum() + (hs[:, -1] * r_last).sum()), g
    return f


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("inputs", ["float", "ids"])
def test_rnn_gradient_check(activation, inputs):
    rng = np.random.default_rng(1)
    params = init_rnn_params(D, H, seed=1, dtype="float64")
    params["bias"] = rng.standard_normal(H) * 0.1
    arrays = {"params": params, "h0": rng.standard_normal((B, H)) * 0.5}
    x = rng.integers(0, D, (B, T))
    if inputs == "float":
        x = arrays["x"] = rng.standard_normal((B, T, D))
    errs = gradient_check(_rnn_loss(x, activation, rng.standard_normal((B, T, H)), rng.standard_normal((B, H))), arrays)
    expected = {"params/kernel", "params/recurrent_kernel", "params/bias",
                "h0"} | ({"x"} if inputs == "float" else set())
    assert set(errs) == expected
    assert max(errs.values()) < 1e-6, errs


def test_model_gradient_check():
    "RNN -> Dense -> softmax cross-entropy with integer targets and a mask."
    rng = np.random.default_rng(2)
    ids, targets = rng.integers(0, 5, (3, 4)), rng.integers(0, 5, (3, 4))
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])

    def f(a):
        hs, rc = rnn_forward(ids, a["rnn"], activation="sigmoid")
        logits, dc = dense_forward(hs, a["dense"])
        loss, dlogits = softmax_cross_entropy(logits, targets, mask)
        dg, dhs = dense_backward(dlogits, dc)
        rg, _, _ = rnn_backward(dhs, rc)
        return loss, {"rnn": rg, "dense": dg}

    arrays = {"rnn": init_rnn_params(5, 6, seed=2, dtype="float64"),
              "dense": init_dense_params(6, 5, seed=3, dtype="float64")}
    assert max(gradient_check(f, arrays).values()) < 1e-6


def test_mse_gradient_check():
    rng = np.random.default_rng(3)
    target = rng.standard_normal((2, 3))

    def f(a):
        loss, dpred = mse(a["p"], target)
        return loss, {"p": dpred}

    errs = gradient_check(f, {"p": rng.standard_normal((2, 3))})
    assert errs["p"] < 1e-6


@pytest.mark.parametrize("return_sequences", [True, False])
def test_stacked_bidirectional_gradient_check(return_sequences):
    net = StackedRNN([Bidirectional(SimpleRNN(3, seed=0, dtype="float64")),
                      SimpleRNN(2, activation="relu", return_sequences=return_sequences, seed=1,
                                dtype="float64")]).build(D)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((B, T, D))
    out, _ = net.forward(x)
    assert out.shape == ((B, T, 2) if return_sequences else (B, 2))
    R = rng.standard_normal(out.shape)

    def f(a):
        net.params = a["params"]
        out, cache = net.forward(a["x"])
        grads, dx, _ = net.backward(R, cache)
        return float((out * R).sum()), {"params": grads, "x": dx}

    errs = gradient_check(f, {"params": net.params, "x": x})
    assert len(errs) == 3 * 3 + 1
    assert max(errs.values()) < 1e-6, errs


def test_shapes_and_hoisting_matches_loop():
    params = init_rnn_params(D, H, seed=0, dtype="float64")
    x = np.random.default_rng(0).standard_normal((B, T, D))
    hs, _ = rnn_forward(x, params, activation="relu")
    assert hs.shape == (B, T, H)
    h = np.zeros((B, H))
    for t in range(T):
        h = np.maximum(x[:, t] @ params["kernel"] + h @ params["recurrent_kernel"] + params["bias"], 0)
        np.testing.assert_allclose(hs[:, t], h, atol=1e-12)


def test_ids_equal_one_hot():
    params = init_rnn_params(D, H, seed=0, dtype="float64")
    ids = np.random.default_rng(0).integers(0, D, (B, T))
    hs_ids, c_ids = rnn_forward(ids, params)
    hs_oh, c_oh = rnn_forward(np.eye(D)[ids], params)
    np.testing.assert_allclose(hs_ids, hs_oh, atol=1e-12)
    dhs = np.ones_like(hs_ids)
    g_ids, dx, _ = rnn_backward(dhs, c_ids)
    g_oh, _, _ = rnn_backward(dhs, c_oh)
    assert dx is None
    for k in g_ids:
        np.testing.assert_allclose(g_ids[k], g_oh[k], atol=1e-12)


def test_float32_path():
    layer = SimpleRNN(H, seed=0)  # float32 by default
    x = np.random.default_rng(0).standard_normal((B, T, D))  # float64 inputs are cast to the weights' dtype
    out, cache = layer.forward(x)
    grads, dx, dh0 = layer.backward(np.ones_like(out), cache)
    assert out.dtype == dx.dtype == dh0.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())
    p64 = {k: v.astype("float64") for k, v in layer.params.items()}
    np.testing.assert_allclose(out, rnn_forward(x, p64)[0], atol=1e-5)


def test_layer_api():
    layer = SimpleRNN(H, activation="sigmoid", return_sequences=False, seed=3)
    out, cache = layer.forward(np.zeros((B, 10, D), "float32"))
    assert out.shape == (B, H)
    assert layer.count_params() == D * H + H * H + H
    assert layer.get_config() == {"units": H, "activation": "sigmoid", "return_sequences": False, "seed": 3,
                                  "dtype": "float32"}
    assert layer.forward(np.zeros((1, 1000, D), "float32"))[0].shape == (1, H)
    assert layer.count_params() == D * H + H * H + H  # independent of length
    np.testing.assert_array_equal(SimpleRNN(H, seed=3).build(D).params["kernel"], layer.params["kernel"])
    with pytest.raises(ValueError, match=r"call build\(vocab_size\) before feeding token ids"):
        SimpleRNN(H).forward(np.zeros((B, T), int))
    with pytest.raises(ValueError, match="not built yet"):
        SimpleRNN(H).count_params()


def test_softmax_cross_entropy_is_stable():
    logits = np.array([[1e4, 0.0, -1e4]], "float32")
    loss, d = softmax_cross_entropy(logits, np.array([0]))
    assert loss == 0.0 and np.isfinite(d).all()
    loss, _ = softmax_cross_entropy(logits, np.array([2]))
    assert loss == pytest.approx(2e4)


P = init_rnn_params(D, H, dtype="float64")
X = np.zeros((B, T, D))


@pytest.mark.parametrize("call, message", [
    (lambda: rnn_forward(np.zeros((B, T, D + 1)), P), r"x must have shape \(batch, time, 3\), got \(2, 5, 4\)"),
    (lambda: rnn_forward(np.zeros((B, T, D, 1)), P), r"x must have shape \(batch, time, 3\)"),
    (lambda: rnn_forward(np.zeros((B, T, D), bool), P), "x must be a float array .* got dtype bool"),
    (lambda: rnn_forward(np.zeros((B, T, D), complex), P), "got dtype complex128"),
    (lambda: rnn_forward(np.full((B, T, D), np.nan), P), "x must be finite"),
    (lambda: rnn_forward(np.zeros((B, 0, D)), P), "at least 1 step"),
    (lambda: rnn_forward(np.zeros((0, T, D)), P), "at least 1 sequence"),
    (lambda: rnn_forward(np.array([[0, D]]), P), r"x must hold token ids in \[0, 3\), got values in \[0, 3\]"),
    (lambda: rnn_forward(np.array([[-1, 0]]), P), r"x must hold token ids in \[0, 3\), got values in \[-1, 0\]"),
    (lambda: rnn_forward(X, P, h0=np.zeros((B + 1, H))), r"h0 must have shape \(2, 4\), got \(3, 4\)"),
    (lambda: rnn_forward(X, P, h0=np.full((B, H), np.inf)), "h0 must be finite"),
    (lambda: rnn_forward(X, P, activation="gelu"), "activation must be one of 'relu', 'sigmoid', 'tanh', got 'gelu'"),
    (lambda: rnn_forward(X, {**P, "bias": np.zeros(H, "float32")}), "must share one dtype"),
    (lambda: rnn_forward(X, {**P, "bias": np.zeros(H + 1)}), r"bias must have shape \(4\)"),
    (lambda: rnn_forward(X, {**P, "recurrent_kernel": np.zeros((H, H + 1))}), "recurrent_kernel must have shape"),
    (lambda: rnn_forward(X, {**P, "kernel": np.full((D, H), np.nan)}), "kernel must be finite"),
    (lambda: rnn_forward(X, {"kernel": P["kernel"]}), r"params must be a dict with .*, got \['kernel'\]"),
    (lambda: rnn_forward(X, [P]), "params must be a dict with .*, got list"),
    (lambda: rnn_backward(np.zeros((B, T, H + 1)), rnn_forward(X, P)[1]), "dhs must have shape"),
    (lambda: rnn_backward(None, rnn_forward(X, P)[1], dh_last=np.zeros(H)), "dh_last must have shape"),
    (lambda: get_activation("swish"), "activation must be one of"),
    (lambda: get_activation(None), "activation must be one of .*, got None"),
    (lambda: SimpleRNN(0), "units must be an integer >= 1, got 0"),
    (lambda: SimpleRNN(2.5), "units must be an integer >= 1"),
    (lambda: SimpleRNN(3, activation="elu"), "activation must be one of .*, got 'elu'"),
    (lambda: init_rnn_params(-1, 3), "input_dim must be an integer >= 1, got -1"),
    (lambda: dense_forward(np.zeros((B, T, H + 1)), init_dense_params(H, 2)), r"h must have shape \(2, 5, 4\)"),
    (lambda: softmax_cross_entropy(np.zeros((B, 3)), np.zeros(B)), "targets must be an integer array"),
    (lambda: softmax_cross_entropy(np.zeros((B, 3)), np.array([0, 3])), r"targets must be class ids in \[0, 3\)"),
    (lambda: softmax_cross_entropy(np.zeros((B, 3)), np.zeros(B + 1, int)), r"targets must have shape \(2\)"),
    (lambda: softmax_cross_entropy(np.zeros((B, 3)), np.zeros(B, int), mask=np.zeros(B)),
     "mask must select at least one"),
    (lambda: softmax_cross_entropy(np.full((B, 3), np.nan), np.zeros(B, int)), "logits must be finite"),
    (lambda: mse(np.zeros(3), np.zeros(4)), r"target must have shape \(3\)"),
    (lambda: StackedRNN([]), "at least one layer"),
    (lambda: SimpleRNN(3, dtype="int32"), "dtype must be a floating-point dtype .* got 'int32'"),
    (lambda: init_dense_params(3, 4, dtype="bogus"), "dtype must be a floating-point dtype"),
])
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_save_load_round_trip(tmp_path):
    net = Bidirectional(SimpleRNN(3, seed=0)).build(D)
    params = {"rnn": net.params, "dense": init_dense_params(6, 2)}
    save_params(tmp_path / "model.npz", params)
    save_params(tmp_path / "model.npz", params)  # overwriting is atomic too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]  # no temporary file left
    loaded = load_params(tmp_path / "model.npz")
    assert loaded.keys() == params.keys() and loaded["rnn"].keys() == {"forward", "backward"}
    for k in ("kernel", "recurrent_kernel", "bias"):
        np.testing.assert_array_equal(loaded["rnn"]["backward"][k], params["rnn"]["backward"][k])
        assert loaded["rnn"]["backward"][k].dtype == np.float32


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no parameter file at"):
        load_params(tmp_path / "missing.npz")
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(FormatError, match="corrupt.npz is not a valid parameter file"):
        load_params(tmp_path / "corrupt.npz")
    np.savez(tmp_path / "pickled.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(FormatError, match="pickled.npz is not a valid parameter file"):
        load_params(tmp_path / "pickled.npz")
    with pytest.raises(ValueError, match="numeric arrays only"):
        save_params(tmp_path / "bad.npz", {"a": np.array(["text"])})
    assert not (tmp_path / "bad.npz").exists()


def test_interrupted_save_keeps_old_file(tmp_path, monkeypatch):
    "Interrupted after the new content is written but before it replaces the file: the old file and nothing else."
    path = tmp_path / "p.npz"
    save_params(path, {"a": np.ones(3)})
    written = []

    def boom(fd):
        written.append(os.fstat(fd).st_size)
        raise KeyboardInterrupt

    monkeypatch.setattr(persist.os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        save_params(path, {"a": np.zeros(3)})
    assert written and written[0] > 0  # the interruption came after the new content was written
    np.testing.assert_array_equal(load_params(path)["a"], np.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npz"]


def test_bidirectional_on_token_ids():
    "Token ids through a bidirectional layer: gradients for both directions, no dx; the reverse half reads x reversed."
    bi = Bidirectional(SimpleRNN(3, seed=0, dtype="float64")).build(D)
    ids = np.random.default_rng(5).integers(0, D, (B, T))
    out, cache = bi.forward(ids)
    assert out.shape == (B, T, 6)
    np.testing.assert_allclose(out[..., 3:], rnn_forward(ids[:, ::-1], bi.backward_layer.params)[0][:, ::-1],
                               atol=1e-12)
    R = np.random.default_rng(6).standard_normal(out.shape)

    def f(a):
        bi.params = a
        out, cache = bi.forward(ids)
        grads, dx, _ = bi.backward(R, cache)
        assert dx is None
        return float((out * R).sum()), grads

    assert max(gradient_check(f, bi.params).values()) < 1e-6


def test_cell_gates():
    "The one table of cell kinds: the vanilla cell is 'rnn', with one block of H columns; LSTM 4, GRU 3."
    assert CELL_GATES == {"rnn": 1, "lstm": 4, "gru": 3}
    assert init_rnn_params(D, H)["kernel"].shape == (D, CELL_GATES["rnn"] * H)


def test_final_state_carries_a_split_sequence():
    "Running the first steps, then the rest from `final_state`, gives the states of one run over the whole sequence."
    x = np.random.default_rng(7).standard_normal((B, 9, D))
    for return_sequences in (True, False):
        layer = SimpleRNN(H, activation="relu", return_sequences=return_sequences, seed=1, dtype="float64").build(D)
        whole, cache = layer.forward(x)
        last = whole[:, -1] if return_sequences else whole
        np.testing.assert_array_equal(layer.final_state(cache), last)
        first, c1 = layer.forward(x[:, :4])
        h4 = layer.final_state(c1)
        assert not np.allclose(h4, last)  # the state after step 4, not after the whole sequence
        rest, _ = layer.forward(x[:, 4:], h4)
        np.testing.assert_allclose(rest, whole[:, 4:] if return_sequences else whole, rtol=0, atol=1e-12)


def test_stacked_and_bidirectional_final_state():
    x = np.random.default_rng(8).standard_normal((B, 7, D))
    stack = StackedRNN([SimpleRNN(4, seed=0, dtype="float64"), SimpleRNN(3, seed=1, dtype="float64")]).build(D)
    whole, _ = stack.forward(x)
    _, c1 = stack.forward(x[:, :3])
    state = stack.final_state(c1)
    assert [s.shape for s in state] == [(B, 4), (B, 3)]
    rest, _ = stack.forward(x[:, 3:], state)  # one state per layer: a valid h0
    np.testing.assert_allclose(rest, whole[:, 3:], rtol=0, atol=1e-12)
    bi = Bidirectional(SimpleRNN(4, seed=0, dtype="float64")).build(D)
    out, cache = bi.forward(x)
    h_forward, h_backward = bi.final_state(cache)
    np.testing.assert_array_equal(h_forward, out[:, -1, :4])  # forward direction: after step T
    np.testing.assert_array_equal(h_backward, out[:, 0, 4:])  # backward direction: after reading back to step 1
    assert bi.forward(x, bi.final_state(cache))[0].shape == out.shape


# ---------------------------------------------------------------- checks moved out of chapter 01
# (they were `#| hide` cells or bad-input lines of nbs/01_rnn_numpy.ipynb; the same assertions)

def test_ch01_gradient_check_helpers():
    from fastcore.test import test_eq, test_fail
    from rnn_tutorial.numpy_rnn import flatten_tree, unflatten_tree
    tree = {"a": np.arange(3.0), "b": {"c": np.ones((2, 2)), "d": {"e": np.zeros(1)}}}
    test_eq(sorted(flatten_tree(tree)), ["a", "b/c", "b/d/e"])
    test_eq(unflatten_tree(flatten_tree(tree))["b"]["d"]["e"], tree["b"]["d"]["e"])
    before = {"w": np.array([1.0, 2.0], "float32")}
    errs = gradient_check(lambda a: (float((a["w"] ** 2).sum()), {"w": 2 * a["w"]}), before)
    assert errs["w"] < 1e-6 and before["w"].dtype == np.float32  # the caller's arrays are not touched
    test_eq(before["w"], [1.0, 2.0])
    # wrong gradient caught
    assert gradient_check(lambda a: (float((a["w"] ** 2).sum()), {"w": 3 * a["w"]}), before)["w"] > 0.1
    test_fail(lambda: gradient_check(lambda a: (0.0, {}), before), contains="missing ['w']")


def test_ch01_save_params_and_bad_arguments(tmp_path):
    from fastcore.test import test_eq, test_fail
    d = tmp_path
    test_fail(lambda: save_params(d / "s.npz", {"a": np.array(["text"])}), contains="numeric arrays only")
    test_eq(os.listdir(d), [])
    save_params(d / "s.npz", {"a": np.ones(2)})
    save_params(d / "s.npz", {"a": np.zeros(2)})
    test_eq(load_params(d / "s.npz")["a"], np.zeros(2))  # overwritten in place
    test_eq(os.listdir(d), ["s.npz"])
    test_fail(lambda: SimpleRNN(4, dtype="int32"), contains="dtype must be a floating-point dtype")
    test_fail(lambda: SimpleRNN(4).count_params(), contains="not built yet")
    test_fail(lambda: get_activation("softplus"), contains="activation must be one of 'relu', 'sigmoid', 'tanh'")
    test_fail(lambda: init_rnn_params(3, 0), contains="units must be an integer >= 1, got 0")


def test_stacked_rnn_wants_one_initial_state_per_layer():
    net = StackedRNN([SimpleRNN(4, seed=0, dtype="float64"), SimpleRNN(3, seed=1, dtype="float64")]).build(2)
    x = np.random.default_rng(0).standard_normal((2, 5, 2))
    out, _ = net.forward(x, [None, None])
    assert out.shape == (2, 5, 3)
    for h0, got in (([np.zeros((2, 4))], "got 1 state"), ([None] * 3, "got 3 state"), ((), "got 0 state"),
                    (np.zeros((2, 4)), "got ndarray")):
        with pytest.raises(ValueError, match=f"h0 must be None or a list of one initial state .* per layer, 2 here, "
                                             f"{got}"):
            net.forward(x, h0)


def test_softmax_cross_entropy_mask_weights():
    logits, targets = np.zeros((3, 4)), np.array([0, 1, 2])
    loss, _ = softmax_cross_entropy(logits, targets, mask=np.array([2.0, 0.0, 1.0]))
    assert np.isclose(loss, np.log(4))
    for mask, msg in (([1.0, -1.0, 1.0], "mask must hold weights >= 0, got a minimum of -1.0"),
                      ([1.0, np.nan, 1.0], "mask must be finite"), ([np.inf, 1.0, 1.0], "mask must be finite"),
                      ([0.0, 0.0, 0.0], "mask must select at least one position")):
        with pytest.raises(ValueError, match=msg):
            softmax_cross_entropy(logits, targets, mask=np.array(mask))


def test_seeds_are_checked_and_none_is_fresh():
    assert SimpleRNN(3, seed=None).build(2).params["kernel"].shape == (2, 3)
    assert Bidirectional(SimpleRNN(3, seed=None)).build(2).output_dim == 6
    for bad in (-1, 1.5, "0", True):
        with pytest.raises(ValueError, match="seed must be None or a non-negative integer"):
            SimpleRNN(3, seed=bad)
        with pytest.raises(ValueError, match="seed must be None or a non-negative integer"):
            init_rnn_params(2, 3, seed=bad)


def test_unflatten_tree_refuses_a_key_that_is_leaf_and_branch():
    for flat in ({"a": 1, "a/b": 2}, {"a/b": 2, "a": 1}, {"a/b": 1, "a/b/c": 2}):
        with pytest.raises(ValueError, match="must not name both a leaf and a branch"):
            unflatten_tree(flat)
    assert unflatten_tree({"a/b": 1, "a/c": 2, "d": 3}) == {"a": {"b": 1, "c": 2}, "d": 3}


def test_load_params_refuses_non_numeric_non_finite_or_clashing_arrays(tmp_path):
    for name, arrays, msg in (("nan", {"w": np.array([1.0, np.inf])}, "NaN or infinite"),
                              ("str", {"w": np.array(["a"])}, "dtype <U1"),
                              ("clash", {"w": np.zeros(1), "w/b": np.zeros(1)}, "leaf and a branch")):
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(FormatError, match=f"{name}.npz is not a valid parameter file: .*{msg}"):
            load_params(tmp_path / f"{name}.npz")
