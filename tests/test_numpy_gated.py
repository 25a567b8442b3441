"The NumPy LSTM and GRU (`rnn_tutorial.numpy_gated`): gradients, Keras parity, shapes, dtypes, bad input, saving."
import os

import numpy as np
import pytest

from rnn_tutorial.numpy_gated import (
    GRU, LSTM, gru_backward, gru_forward, init_gru_params, init_lstm_params, lstm_backward, lstm_forward,
)
from rnn_tutorial.numpy_rnn import (
    Bidirectional, SimpleRNN, StackedRNN, dense_backward, dense_forward, gradient_check, load_params, save_params,
    softmax_cross_entropy,
)

B, T, D, H = 2, 5, 3, 4
CELLS = {"lstm": (init_lstm_params, lstm_forward, lstm_backward), "gru": (init_gru_params, gru_forward, gru_backward)}


def _params(cell, d=D, h=H, seed=1):
    "float64 parameters with a random bias, so that every bias element carries gradient."
    p = CELLS[cell][0](d, h, seed=seed, dtype="float64")
    p["bias"] = p["bias"] + np.random.default_rng(seed).standard_normal(p["bias"].shape) * 0.1
    return p


def _loss(cell, x, R, r_last, rc_last):
    "L = sum_t h_t . R_t + h_T . r_last (+ c_T . rc_last for the LSTM); f(arrays) for `gradient_check`."
    _, fwd, bwd = CELLS[cell]

    def f(a):
        xx = a.get("x", x)
        if cell == "lstm":
            layer = LSTM(a["h0"].shape[1], dtype="float64")
            layer.params = a["params"]
            hs, cache = layer.forward(xx, (a["h0"], a["c0"]))
            grads, dx, dh0, dc0 = bwd(R, cache, dh_last=r_last, dc_last=rc_last)
            loss = (hs * R).sum() + (hs[:, -1] * r_last).sum() + (layer.final_state(cache)[1] * rc_last).sum()
            g = {"params": grads, "h0": dh0, "c0": dc0}
        else:
            hs, cache = fwd(xx, a["params"], a["h0"])
            grads, dx, dh0 = bwd(R, cache, dh_last=r_last)
            loss, g = (hs * R).sum() + (hs[:, -1] * r_last).sum(), {"params": grads, "h0": dh0}
        if "x" in a:
            g["x"] = dx
        return float(loss), g
    return f


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("inputs", ["float", "ids"])
def test_gradient_check(cell, inputs):
    rng = np.random.default_rng(2)
    arrays = {"params": _params(cell), "h0": rng.standard_normal((B, H)) * 0.5}
    if cell == "lstm":
        arrays["c0"] = rng.standard_normal((B, H)) * 0.5
    x = rng.integers(0, D, (B, T))
    if inputs == "float":
        x = arrays["x"] = rng.standard_normal((B, T, D))
    f = _loss(cell, x, rng.standard_normal((B, T, H)), rng.standard_normal((B, H)), rng.standard_normal((B, H)))
    errs = gradient_check(f, arrays, eps=1e-5)
    expected = {"params/kernel", "params/recurrent_kernel", "params/bias", "h0"}
    expected |= ({"c0"} if cell == "lstm" else set()) | ({"x"} if inputs == "float" else set())
    assert set(errs) == expected
    assert max(errs.values()) < 1e-6, errs


@pytest.mark.parametrize("return_sequences", [True, False])
def test_stacked_bidirectional_gradient_check(return_sequences):
    "Bidirectional GRU -> LSTM -> SimpleRNN, every parameter, the input and every initial state."
    net = StackedRNN([Bidirectional(GRU(3, seed=0, dtype="float64")), LSTM(3, seed=2, dtype="float64"),
                      SimpleRNN(2, return_sequences=return_sequences, seed=3, dtype="float64")]).build(D)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((B, T, D))
    out, _ = net.forward(x)
    assert out.shape == ((B, T, 2) if return_sequences else (B, 2))
    R = rng.standard_normal(out.shape)
    s = {k: rng.standard_normal((B, n)) * 0.5 for k, n in [("gf", 3), ("gb", 3), ("h", 3), ("c", 3), ("r", 2)]}

    def f(a):
        net.params = a["params"]
        out, cache = net.forward(a["x"], [(a["gf"], a["gb"]), (a["h"], a["c"]), a["r"]])
        grads, dx, dh0s = net.backward(R, cache)
        (dgf, dgb), (dh, dc), dr = dh0s
        return float((out * R).sum()), {"params": grads, "x": dx, "gf": dgf, "gb": dgb, "h": dh, "c": dc, "r": dr}

    errs = gradient_check(f, {"params": net.params, "x": x, **s}, eps=1e-5)
    assert len(errs) == 4 * 3 + 1 + 5  # 4 cells, x, 5 initial states
    assert max(errs.values()) < 1e-6, errs


def test_bidirectional_lstm_reads_reversed_and_clones_config():
    bi = Bidirectional(LSTM(4, seed=0, dtype="float64", unit_forget_bias=False)).build(D)
    assert bi.backward_layer.get_config() == {**bi.forward_layer.get_config(), "seed": 1}
    x = np.random.default_rng(0).standard_normal((B, T, D))
    out, _ = bi.forward(x)
    np.testing.assert_allclose(out[..., 4:], lstm_forward(x[:, ::-1], bi.backward_layer.params)[0][:, ::-1], atol=1e-12)
    assert bi.output_dim == 8 and out.shape == (B, T, 8)


def test_model_gradient_check_ids():
    """Token ids -> LSTM -> Dense -> softmax cross-entropy, with initial states.

    Through the mean cross-entropy some elements' gradients are ~1e-6 of their array's largest, where the
    per-element relative error is set by rounding (1e-6 to 7e-6 at eps=1e-5 for other seeds; not a bug: it
    shrinks as eps grows). This seed has none so small.
    """
    from rnn_tutorial.numpy_rnn import init_dense_params
    rng = np.random.default_rng(4)
    ids, targets = rng.integers(0, 5, (3, 6)), rng.integers(0, 5, (3, 6))

    def f(a):
        hs, c = lstm_forward(ids, a["lstm"], a["h0"], a["c0"])
        logits, dc = dense_forward(hs, a["dense"])
        loss, dlogits = softmax_cross_entropy(logits, targets)
        dg, dhs = dense_backward(dlogits, dc)
        gl, _, dh0, dc0 = lstm_backward(dhs, c)
        return loss, {"lstm": gl, "dense": dg, "h0": dh0, "c0": dc0}

    arrays = {"lstm": _params("lstm", 5, 6, seed=2), "dense": init_dense_params(6, 5, seed=3, dtype="float64"),
              "h0": rng.standard_normal((3, 6)) * 0.5, "c0": rng.standard_normal((3, 6)) * 0.5}
    errs = gradient_check(f, arrays, eps=1e-5)
    assert max(errs.values()) < 1e-6, errs


def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return pytest.importorskip("keras")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-5)])
def test_keras_parity(cell, dtype, tol):
    "Keras's LSTM/GRU with our weights give our outputs, with and without initial states, and our gradients."
    keras = _keras()
    import tensorflow as tf
    rng = np.random.default_rng(6)
    Bk, Tk, Dk, Hk = 3, 7, 5, 6
    params = {k: v.astype(dtype) for k, v in _params(cell, Dk, Hk, seed=6).items()}
    params["bias"] = params["bias"] + rng.standard_normal(params["bias"].shape).astype(dtype) * 0.3
    x = rng.standard_normal((Bk, Tk, Dk)).astype(dtype)
    states = [rng.standard_normal((Bk, Hk)).astype(dtype) for _ in range(2 if cell == "lstm" else 1)]
    Layer = keras.layers.LSTM if cell == "lstm" else keras.layers.GRU
    layer = Layer(Hk, return_sequences=True, dtype=dtype)
    layer.build((None, Tk, Dk))
    assert [tuple(w.shape) for w in layer.get_weights()] == [params[k].shape for k in ("kernel", "recurrent_kernel",
                                                                                       "bias")]
    layer.set_weights([params["kernel"], params["recurrent_kernel"], params["bias"]])
    _, fwd, bwd = CELLS[cell]
    np.testing.assert_allclose(np.asarray(layer(x)), fwd(x, params)[0], rtol=0, atol=tol)
    hs, cache = fwd(x, params, *states)
    xt, st = tf.constant(x), [tf.constant(s) for s in states]
    R = rng.standard_normal(hs.shape).astype(dtype)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        tape.watch(st)
        loss = tf.reduce_sum(layer(xt, initial_state=st) * R)
    out = np.asarray(layer(xt, initial_state=st))
    np.testing.assert_allclose(out, hs, rtol=0, atol=tol)
    g_ref = tape.gradient(loss, [*layer.weights, xt, *st])
    grads, dx, *dstates = bwd(R, cache)
    ours = [grads["kernel"], grads["recurrent_kernel"], grads["bias"], dx, *dstates]
    for name, a, b in zip(["kernel", "recurrent_kernel", "bias", "x", "h0", "c0"], ours, g_ref):
        b = np.asarray(b)
        np.testing.assert_allclose(a, b, rtol=0, atol=tol * max(1.0, np.abs(b).max()), err_msg=name)


@pytest.mark.parametrize("Layer", [LSTM, GRU])
def test_layer_shapes_dtypes_and_params(Layer):
    layer = Layer(8, return_sequences=False, seed=3)
    x = np.random.default_rng(0).standard_normal((4, 6, 5))
    out, cache = layer.forward(x)
    assert out.shape == (4, 8) and out.dtype == np.float32
    assert all(v.dtype == np.float32 for v in layer.params.values())
    n = 4 if Layer is LSTM else 3
    assert layer.count_params() == n * (5 * 8 + 8 * 8 + (8 if Layer is LSTM else 16))
    grads, dx, dh0 = layer.backward(np.ones_like(out), cache)
    assert dx.shape == x.shape and dx.dtype == np.float32
    assert {k: v.shape for k, v in grads.items()} == {k: v.shape for k, v in layer.params.items()}
    final = layer.final_state(cache)
    np.testing.assert_array_equal(final[0] if Layer is LSTM else final, out)
    if Layer is LSTM:
        assert isinstance(dh0, tuple) and [d.shape for d in dh0] == [(4, 8), (4, 8)]
        assert layer.params["bias"][8:16].tolist() == [1.0] * 8


def test_lstm_state_carries_across_chunks():
    "Running two chunks with the carried state (h_T, c_T) equals running the whole sequence."
    layer = LSTM(5, dtype="float64").build(3)
    x = np.random.default_rng(1).standard_normal((2, 10, 3))
    full, _ = layer.forward(x)
    a, cache = layer.forward(x[:, :4])
    b, _ = layer.forward(x[:, 4:], layer.final_state(cache))
    np.testing.assert_allclose(np.concatenate([a, b], 1), full, atol=1e-14)
    g = GRU(5, dtype="float64").build(3)
    full, _ = g.forward(x)
    a, cache = g.forward(x[:, :4])
    b, _ = g.forward(x[:, 4:], g.final_state(cache))
    np.testing.assert_allclose(np.concatenate([a, b], 1), full, atol=1e-14)


def test_stacked_gated_final_state_carries_across_chunks():
    "A stack of an LSTM and a GRU: `final_state` gives [(h_T, c_T), h_T], a valid h0 for the next chunk."
    net = StackedRNN([LSTM(5, seed=0, dtype="float64"), GRU(4, seed=1, dtype="float64")]).build(3)
    x = np.random.default_rng(2).standard_normal((2, 9, 3))
    full, _ = net.forward(x)
    a, cache = net.forward(x[:, :5])
    state = net.final_state(cache)
    assert isinstance(state[0], tuple) and [s.shape for s in state[0]] == [(2, 5), (2, 5)] and state[1].shape == (2, 4)
    b, _ = net.forward(x[:, 5:], state)
    np.testing.assert_allclose(np.concatenate([a, b], 1), full, rtol=0, atol=1e-13)


def test_save_load_round_trip(tmp_path):
    net = StackedRNN([LSTM(4, seed=0), Bidirectional(GRU(3, seed=1))]).build(6)
    path = tmp_path / "gated.npz"
    save_params(path, net.params)
    other = StackedRNN([LSTM(4, seed=9), Bidirectional(GRU(3, seed=9))]).build(6)
    other.params = load_params(path)
    x = np.random.default_rng(0).integers(0, 6, (2, 5))
    np.testing.assert_array_equal(net.forward(x)[0], other.forward(x)[0])


LP, GP = init_lstm_params(3, 4, dtype="float64"), init_gru_params(3, 4, dtype="float64")


@pytest.mark.parametrize("call,match", [
    (lambda: lstm_forward(np.zeros((2, 5, 2)), LP), r"x must have shape \(batch, time, 3\)"),
    (lambda: gru_forward(np.zeros((2, 0, 3)), GP), "at least 1 step"),
    (lambda: lstm_forward(np.zeros((0, 5, 3)), LP), "at least 1 sequence"),
    (lambda: gru_forward(np.full((1, 2, 3), np.inf), GP), "x must be finite"),
    (lambda: lstm_forward(np.array([["a"]]), LP), "x must be a float array"),
    (lambda: gru_forward(np.zeros((2, 5), bool), GP), "x must be a float array"),
    (lambda: lstm_forward(np.array([[0, 3]]), LP), r"x must hold token ids in \[0, 3\), got values in \[0, 3\]"),
    (lambda: lstm_forward(np.zeros((2, 5, 3)), LP, h0=np.zeros((3, 4))), r"h0 must have shape \(2, 4\)"),
    (lambda: lstm_forward(np.zeros((2, 5, 3)), LP, c0=np.full((2, 4), np.nan)), "c0 must be finite"),
    (lambda: gru_forward(np.zeros((2, 5, 3)), GP, h0=np.zeros((2, 4), int)), "h0 must be a floating-point array"),
    (lambda: lstm_forward(np.zeros((2, 5, 3)), GP), r"recurrent_kernel of an LSTM must have shape \(units, 4\*units\)"),
    (lambda: gru_forward(np.zeros((2, 5, 3)), {**GP, "bias": GP["bias"][0]}), r"bias must have shape \(2, 12\)"),
    (lambda: lstm_forward(np.zeros((2, 5, 3)), {**LP, "kernel": LP["kernel"].astype("float32")}), "share one dtype"),
    (lambda: lstm_forward(np.zeros((2, 5, 3)), {"kernel": LP["kernel"]}),
     r"params of an LSTM must be a dict .*, got \['kernel'\]"),
    (lambda: lstm_backward(np.zeros((2, 4, 4)), lstm_forward(np.zeros((2, 5, 3)), LP)[1]),
     r"dhs must have shape \(2, 5, 4\)"),
    (lambda: lstm_backward(None, lstm_forward(np.zeros((2, 5, 3)), LP)[1], dc_last=np.zeros(4)),
     r"dc_last must have shape"),
    (lambda: gru_backward(None, gru_forward(np.zeros((2, 5, 3)), GP)[1], dh_last=np.zeros((2, 5))),
     r"dh_last must have shape"),
    (lambda: LSTM(4).forward(np.zeros((2, 5, 3)), np.zeros((2, 4))), r"pair \(h0, c0\), .* got ndarray"),
    (lambda: GRU(4).forward(np.zeros((2, 5), int)), r"call build\(vocab_size\)"),
    (lambda: LSTM(0), "units must be an integer >= 1"),
    (lambda: GRU(4, dtype="int32"), "dtype must be a floating-point dtype"),
    (lambda: init_lstm_params(0, 4), "input_dim must be an integer >= 1"),
    (lambda: LSTM(3).count_params(), "not built yet"),
    (lambda: lstm_forward(np.full((1, 2, 3), np.nan), LP), "x must be finite"),
    (lambda: lstm_forward(np.zeros((2, 5, 3)), LP, c0=np.zeros((2, 5))), r"c0 must have shape \(2, 4\)"),
    (lambda: gru_forward(np.zeros((2, 5, 3)), LP), r"recurrent_kernel of a GRU must have shape \(units, 3\*units\)"),
    (lambda: lstm_forward(np.zeros((2, 5, 3)), {**LP, "kernel": np.zeros((3, 16), int)}),
     "kernel must be a floating-point array"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
