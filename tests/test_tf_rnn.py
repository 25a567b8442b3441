("TensorFlow cells (`rnn_tutorial.tf_rnn`): parity with NumPy and Keras, weights both ways, saving, tracing, device "
 "policy, quiet import.")
import warnings

import numpy as np
import pytest

from _parity import TOL, parity_errors
from rnn_tutorial import numpy_train as nt
from rnn_tutorial.numpy_rnn import CELL_GATES
from rnn_tutorial.tf_rnn import (CELL_CLASSES, CharModel, LSTMCell, Recurrent, TFAdam, TrainStep, check_token_ids,
                                 from_keras_weights, make_layer, make_optimizer, to_keras_weights)
from rnn_tutorial.tf_setup import (choose_policy, configure_tensorflow, device_report, enable_memory_growth,
                                   import_tensorflow)

tf, keras = import_tensorflow()
configure_tensorflow()
CELLS = CELL_CLASSES


def test_cell_names_and_gates_are_numpy_rnns():
    "One vocabulary: the TF cell table has CELL_GATES's names, and each cell class its gate count."
    assert list(CELL_CLASSES) == list(CELL_GATES)
    for kind, cls in CELL_CLASSES.items():
        assert cls.gates == CELL_GATES[kind]
        layer = make_layer(kind, 3)
        layer.build((None, None, 2))
        assert tuple(layer.cell.kernel.shape) == (2, CELL_GATES[kind] * 3)


@pytest.mark.parametrize("kind", sorted(CELLS))
@pytest.mark.parametrize("dtype", sorted(TOL))
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("batch,steps", [(1, 1), (3, 12), (6, 25)])
def test_parity_outputs_and_gradients(kind, dtype, masked, batch, steps):
    "NumPy, our TF cell and Keras's built-in layer agree on outputs, final state and every gradient."
    errs = parity_errors(kind, batch, steps, features=4, units=6, dtype=dtype, masked=masked, seed=batch * 31 + steps)
    for name in ("ours", "builtin"):
        e = dict(errs[name])
        assert e.pop("d_padding_abs") == 0
        assert max(e.values()) < TOL[dtype], (name, e)


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_weights_both_ways(kind):
    "NumPy -> built-in -> NumPy -> ours keeps the arrays bit for bit, and the two layers then agree."
    rng = np.random.default_rng(0)
    builtin, ours = make_layer(kind, 5, builtin=True), make_layer(kind, 5)
    builtin.build((None, None, 3))
    ours.build((None, None, 3))
    params = {v.name: rng.normal(size=tuple(v.shape)).astype("float32") for v in builtin.weights}
    builtin.set_weights(to_keras_weights(params))
    ours.set_weights(to_keras_weights(from_keras_weights(builtin)))
    for k, v in from_keras_weights(ours).items(): np.testing.assert_array_equal(v, params[k])
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    np.testing.assert_allclose(ours(x).numpy(), builtin(x).numpy(), rtol=1e-5, atol=1e-6)


def test_bad_weights():
    with pytest.raises(ValueError, match="params must be a dict"): to_keras_weights({"kernel": np.zeros(2)})
    with pytest.raises(ValueError, match="not built"): from_keras_weights(make_layer("rnn", 3))
    with pytest.raises(ValueError, match="kind must be one of 'rnn', 'lstm', 'gru', got 'tcn'"): make_layer("tcn", 3)
    with pytest.raises(ValueError, match="units must be an integer >= 1, got 0"): LSTMCell(0)
    # a type: ValueError too
    with pytest.raises(ValueError, match="units must be an integer >= 1, got 2.0"): LSTMCell(2.0)
    with pytest.raises(ValueError, match="cell must be one of RNNCell, LSTMCell, GRUCell, got SimpleRNNCell"):
        Recurrent(keras.layers.SimpleRNNCell(3))
    with pytest.raises(ValueError, match="input_dim must be None for Keras's built-in layers"):
        make_layer("gru", 3, builtin=True, input_dim=5)


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_recurrent_leaves_its_cell_as_given(kind):
    "After `Recurrent` has used a cell, the same cell in a plain `keras.layers.RNN` still projects its inputs itself."
    cell = CELLS[kind](4)
    x = np.random.default_rng(5).normal(size=(2, 6, 3)).astype("float32")
    hoisted = Recurrent(cell, return_sequences=True)(x).numpy()
    assert cell.hoisted is False
    plain = keras.layers.RNN(cell, return_sequences=True)(x).numpy()  # same cell, same weights, Keras's own loop
    np.testing.assert_allclose(plain, hoisted, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_config_and_keras_file_round_trip(kind, tmp_path):
    "get_config/from_config, and a `.keras` file loaded in safe mode, give the same model."
    cell = CELLS[kind](4, input_dim=7)
    assert type(cell).from_config(cell.get_config()).get_config() == cell.get_config()
    model = CharModel(7, 4, kind)
    model.build((None, None))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(1).integers(0, 7, (2, 5))
    np.testing.assert_allclose(loaded(x)[0].numpy(), model(x)[0].numpy(), rtol=1e-6, atol=1e-7)
    assert type(loaded.rnn.cell) is CELLS[kind]


def test_train_step_matches_numpy_trainer():
    "Forward, loss, backward, clip and Adam in TF give the NumPy trainer's loss, norm and weights (float64)."
    V, H, B, T = 9, 6, 2, 5
    rng = np.random.default_rng(2)
    np_model = nt.init_model(V, H, seed=4, dtype="float64")
    tf_model = CharModel(V, H, dtype="float64")
    tf_model.build((None, None))
    tf_model.set_params(np_model.params)
    lr = 2 ** -7
    opt, step, state, tf_state = nt.Adam(lr), TrainStep(tf_model, TFAdam(lr), clip_norm=0.3), None, None
    for _ in range(2):
        x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
        logits, cache, state = nt.forward(np_model, x, state)
        loss, dlogits = nt.compute_loss(logits, y)
        norm = nt.update(np_model.params, nt.backward(np_model, dlogits, cache), opt, clip_norm=0.3)
        tf_loss, tf_norm, tf_state = step(x, y, tf_state)
        assert abs(float(tf_loss) - loss) < 1e-12 and abs(float(tf_norm) - norm) < 1e-12
        for part, arrays in tf_model.params.items():
            for k, a in arrays.items():
                ref = np_model.params[part][k]
                assert np.max(np.abs(a - ref)) <= 1e-10 * np.max(np.abs(ref)), (part, k)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_fixed_signature_traces_once(kind):
    "With the (None, None) signature, new lengths and batch sizes reuse one graph; a mask is accepted."
    step = TrainStep(CharModel(5, 4, kind), masked=True)
    rng = np.random.default_rng(3)
    for B, T in ((2, 3), (2, 7), (3, 11)):
        mask = np.arange(T) < rng.integers(1, T + 1, B)[:, None]  # right-padded
        loss, norm, state = step(rng.integers(0, 5, (B, T)), rng.integers(0, 5, (B, T)), mask=mask)
        assert np.isfinite(float(loss)) and len(state) == (2 if kind == "lstm" else 1)
    assert step.traces == 1


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_char_model_keeps_the_mask_on_its_logits(kind):
    ("A mask given to `CharModel` stays on its logits (Keras does not warn that it is dropped); the final states carry "
     "none.")
    model, mask = CharModel(5, 4, kind), tf.constant([[True, True, False], [True, False, False]])
    assert model.supports_masking
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        logits, state = model(tf.zeros((2, 3), tf.int32), mask=mask)
    np.testing.assert_array_equal(getattr(logits, "_keras_mask", None), mask)
    assert all(getattr(s, "_keras_mask", None) is None for s in state) and len(state) == model.n_states
    assert getattr(model(tf.zeros((2, 3), tf.int32))[0], "_keras_mask", None) is None  # no mask in, none out


def test_policy_branches():
    cpu = choose_policy([])
    assert (cpu.device, cpu.precision, cpu.loss_scale, cpu.replicas) == ("/CPU:0", "float32", False, 1)
    ampere = choose_policy([{"name": "/physical_device:GPU:0", "compute_capability": (8, 6)}])
    assert (ampere.device, ampere.precision, ampere.loss_scale, ampere.jit_compile) == ("/GPU:0", "mixed_float16",
                                                                                        True, True)
    pascal = choose_policy([{"name": "/physical_device:GPU:0", "compute_capability": (6, 0)}])
    assert (pascal.precision, pascal.loss_scale) == ("float32", False)
    assert choose_policy([{"name": "g", "compute_capability": (8, 0)}], mixed_precision=False).precision == "float32"
    mixed = choose_policy([{"name": "a", "compute_capability": (7, 0)}, {"name": "b", "compute_capability": (6, 1)}])
    assert mixed.replicas == 2 and mixed.precision == "float32"  # the weakest GPU decides
    assert choose_policy([{"name": "g"}]).precision == "float32"  # unknown capability: be safe


def test_device_report_with_faked_devices():
    "The report follows the device list it is given, whatever this machine has."
    cpu = device_report(gpus=[])
    assert cpu["tensorflow"] == tf.__version__ and cpu["dtype_policy"] == "float32"
    assert cpu["gpus"] == [] and cpu["cudnn_available"] is False and cpu["policy"]["device"] == "/CPU:0"
    a100 = [{"name": "/physical_device:GPU:0", "compute_capability": (8, 0)}]
    gpu = device_report(gpus=a100)
    assert gpu["gpus"] == a100 and gpu["cudnn_available"] is tf.test.is_built_with_cuda()
    assert (gpu["policy"]["device"], gpu["policy"]["precision"]) == ("/GPU:0", "mixed_float16")
    assert device_report(choose_policy([]), gpus=a100)["policy"]["precision"] == "float32"  # a given policy is kept


def test_memory_growth_names_only_real_gpus():
    "Memory growth is set on the GPUs TensorFlow sees, and only on those."
    real = {g.name for g in tf.config.list_physical_devices("GPU")}
    grown = enable_memory_growth()
    assert isinstance(grown, list) and set(grown) <= real


@pytest.mark.parametrize("cc,expected", [((8, 0), "LossScaleOptimizer"), ((6, 1), "TFAdam"), (None, "TFAdam")])
def test_make_optimizer_follows_the_policy(cc, expected):
    "Loss scaling (and so clipping inside the optimizer) only where the policy asks for it."
    policy = choose_policy([] if cc is None else [{"name": "g", "compute_capability": cc}])
    opt = make_optimizer(policy, 1e-3, clip_norm=2.0)
    assert type(opt).__name__ == expected
    if expected == "LossScaleOptimizer":
        assert type(opt.inner_optimizer) is TFAdam and opt.inner_optimizer.global_clipnorm == 2.0


def test_mixed_precision_loss_is_float32():
    policy = choose_policy([{"name": "g", "compute_capability": (8, 0)}])
    keras.mixed_precision.set_global_policy(policy.precision)
    try:
        model = CharModel(5, 4, "gru")
        step = TrainStep(model, make_optimizer(policy, 1e-2))
        rng = np.random.default_rng(0)
        assert model(rng.integers(0, 5, (2, 3)))[0].dtype == tf.float16
        loss, _, _ = step(rng.integers(0, 5, (2, 3)), rng.integers(0, 5, (2, 3)))
        assert loss.dtype == tf.float32 and np.isfinite(float(loss))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_loss_scaling_needs_the_inner_optimizer_to_clip():
    "With a LossScaleOptimizer, clipping belongs to the inner optimizer (after unscaling): clip_norm is refused."
    opt = keras.optimizers.LossScaleOptimizer(TFAdam(1e-3))
    with pytest.raises(ValueError, match="clip_norm must be None with a LossScaleOptimizer"):
        TrainStep(CharModel(5, 4), opt, clip_norm=1.0)
    TrainStep(CharModel(5, 4), keras.optimizers.LossScaleOptimizer(TFAdam(1e-3, global_clipnorm=1.0)), clip_norm=1.0)


# --- token ids: the NumPy rule, 0 <= id < V, in eager, in tf.function, and before XLA -------------------------------

def _message(e):
    "The text of an error, without Keras's terminal colours"
    import re
    return re.sub(r"\x1b\[[0-9;]*m", "", str(e))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_token_ids_checked_eager_and_in_graph(kind):
    layer = make_layer(kind, 3, input_dim=5)
    ok = tf.constant([[0, 4, 2]])
    layer(ok)
    graph = tf.function(layer)
    graph(ok)
    for ids, got in (([[0, 5, 1]], "[0, 5]"), ([[0, -1, 2]], "[-1, 2]"), ([[7]], "[7, 7]")):
        with pytest.raises(ValueError) as e:
            layer(tf.constant(ids))
        assert f"x must hold token ids in [0, 5), got values in {got}" in _message(e.value)
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"x must hold token ids in \[0, 5\)"):
            graph(tf.constant(ids))
    assert check_token_ids("x", tf.zeros((0, 3), tf.int32), 5).shape == (0, 3)  # empty is fine


def test_token_ids_checked_with_an_embedding_and_for_targets():
    model = CharModel(5, 4, embedding_dim=3)
    with pytest.raises(ValueError) as e:
        model(tf.constant([[1, 5]]))
    assert "ids must hold token ids in [0, 5), got values in [1, 5]" in _message(e.value)
    for jit in (False, True):  # XLA drops assert ops, so TrainStep checks before calling its compiled function
        step = TrainStep(CharModel(5, 4), jit_compile=jit)
        ok = np.array([[0, 4, 1]], np.int32)
        step(ok, ok)
        for x, y, name in ((ok + 1, ok, "x"), (ok, ok - 1, "y")):
            with pytest.raises(ValueError, match=rf"{name} must hold token ids in \[0, 5\), got values in"):
                step(x, y)
    step = TrainStep(CharModel(5, 4))  # the graph itself refuses a bad target (a GPU would give NaN silently)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"y must hold token ids in \[0, 5\)"):
        step.fn(tf.constant([[0, 1]]), tf.constant([[0, 5]]), tf.zeros((1, 4)))
