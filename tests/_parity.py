"Parity harness for the tests: NumPy, our TensorFlow layer and Keras's built-in layer on the same weights and inputs."
import numpy as np

from rnn_tutorial.numpy_gated import gru_backward, gru_forward, lstm_backward, lstm_forward
from rnn_tutorial.numpy_rnn import CELL_GATES, rnn_backward, rnn_forward
from rnn_tutorial.tf_rnn import from_keras_weights, make_layer, to_keras_weights
from rnn_tutorial.tf_setup import import_tensorflow

tf, keras = import_tensorflow()

NUMPY = {"rnn": (rnn_forward, rnn_backward), "lstm": (lstm_forward, lstm_backward), "gru": (gru_forward, gru_backward)}
TOL = {"float64": 1e-10, "float32": 1e-5}


def rel(a, b) -> float:
    "max |a - b| / max |b|"
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def random_params(kind, D, H, rng, dtype):
    "Random weights in Keras's layout, large enough to make every gate matter."
    g = CELL_GATES[kind]
    return {"kernel": rng.normal(0, 0.5, (D, g * H)).astype(dtype),
            "recurrent_kernel": rng.normal(0, 0.5 / np.sqrt(H), (H, g * H)).astype(dtype),
            "bias": rng.normal(0, 0.1, (2, g * H) if kind == "gru" else (g * H,)).astype(dtype)}


def numpy_run(kind, x, params, dhs, dh_last):
    "The NumPy layer of `kind` forward and backward: (hs, final h, grads, dx)."
    forward, backward = NUMPY[kind]
    hs, cache = forward(x, params)
    grads, dx = backward(dhs, cache, dh_last)[:2]
    return hs, hs[:, -1], grads, dx


def tf_run(layer, x, mask, G, G2):
    "Outputs, final h and gradients (by weight name, then the inputs') of the parity loss, with `tf.GradientTape`."
    x = tf.constant(x)
    m = None if mask is None else tf.constant(mask)
    with tf.GradientTape() as tape:
        tape.watch(x)
        hs, h, *_ = layer(x, mask=m)
        w = tf.ones_like(hs) if m is None else tf.cast(m, hs.dtype)[..., None]
        loss = tf.reduce_sum(hs * G * w) + tf.reduce_sum(h * G2)
    grads = tape.gradient(loss, [*layer.trainable_weights, x])
    return hs.numpy(), h.numpy(), {v.name: g.numpy() for v, g in zip(layer.trainable_weights, grads)}, grads[-1].numpy()


def parity_errors(kind, batch=4, steps=7, features=3, units=5, dtype="float64", masked=False, seed=0):
    """Relative errors of our TF layer and Keras's built-in layer against the NumPy layer, for the same weights:
    {"ours": {...}, "builtin": {...}}, each with outputs, state, every weight's and the inputs' gradient, and the
    absolute input gradient of the padding (`d_padding_abs`). With `masked`, the batch is right-padded to random
    lengths and NumPy runs each group of equal-length sequences cut to its length."""
    rng = np.random.default_rng(seed)
    B, T, D, H = batch, steps, features, units
    params = random_params(kind, D, H, rng, dtype)
    x = rng.normal(size=(B, T, D)).astype(dtype)
    lengths = np.full(B, T)
    if masked: lengths[1:] = rng.integers(1, T + 1, B - 1)  # one full-length sequence keeps T
    mask = (np.arange(T) < lengths[:, None]) if masked else None
    G, G2 = rng.normal(size=(B, T, H)).astype(dtype), rng.normal(size=(B, H)).astype(dtype)
    layers = {}
    for name, builtin in (("builtin", True), ("ours", False)):
        layer = make_layer(kind, H, builtin=builtin, return_state=True, dtype=dtype)
        layer.build((None, None, D))
        layer.set_weights(to_keras_weights(params))  # NumPy -> Keras
        layers[name] = layer
    for k, v in from_keras_weights(layers["builtin"]).items():  # Keras -> NumPy gives back the same arrays
        np.testing.assert_array_equal(v, params[k], err_msg=f"{k} changed in the round trip")
    ref_hs, ref_h, ref_dx = np.zeros((B, T, H), dtype), np.zeros((B, H), dtype), np.zeros((B, T, D), dtype)
    ref_g = {k: np.zeros_like(v) for k, v in params.items()}
    for L in np.unique(lengths):
        idx = np.flatnonzero(lengths == L)
        hs, h, grads, dx = numpy_run(kind, x[idx, :L], params, G[idx, :L], G2[idx])
        ref_hs[idx, :L], ref_h[idx], ref_dx[idx, :L] = hs, h, dx
        for k in ref_g: ref_g[k] += grads[k]
    real = np.ones((B, T), bool) if mask is None else mask
    out = {}
    for name in ("ours", "builtin"):
        hs, h, g, dx = tf_run(layers[name], x, mask, G, G2)
        e = {"outputs": rel(hs[real], ref_hs[real]), "state": rel(h, ref_h)}
        e.update({f"d_{k}": rel(g[k], ref_g[k]) for k in params})
        e["d_inputs"] = rel(dx[real], ref_dx[real])
        e["d_padding_abs"] = float(np.max(np.abs(dx[~real]))) if (~real).any() else 0.0
        out[name] = e
    return out
