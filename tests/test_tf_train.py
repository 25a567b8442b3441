"""The TensorFlow trainer (`rnn_tutorial.tf_train`): one evaluator for every backend, the trainer's interface,
exact resume, the stacked model."""
import json
import subprocess
import sys

import numpy as np
import pytest

from rnn_tutorial import numpy_train as nt
from rnn_tutorial.data import Vocab
from rnn_tutorial.numpy_rnn import StackedRNN
from rnn_tutorial.persist import FormatError, write_npz
from rnn_tutorial.tf_rnn import TFAdam, TrainStep, to_keras_weights
from rnn_tutorial.tf_setup import configure_tensorflow, gpu_details, import_tensorflow, pick_device
from rnn_tutorial.tf_train import (TF_CHECKPOINT_FORMAT, StackedCharModel, TFTrainer, char_model, check_tf_config,
                                   keras_step, keras_window, make_strategy, make_tf_trainer)

tf, keras = import_tensorflow()
configure_tensorflow(deterministic=True)

TEXT = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. " * 30
VOCAB = Vocab(TEXT)
IDS = VOCAB.encode(TEXT)
V = len(VOCAB)


def tf_copy(np_model, kind, layers=1):
    "A Keras model with the NumPy model's weights, copied with `to_keras_weights`"
    model = char_model(V, np_model.layer.units if layers == 1 else np_model.layer.layers[0].units, kind, layers)
    rnn = np_model.params["rnn"]
    if layers == 1: model.rnn.set_weights(to_keras_weights(rnn))
    else:
        for i, r in enumerate(model.rnns): r.set_weights(to_keras_weights(rnn[f"layer{i}"]))
    model.dense.set_weights(to_keras_weights(np_model.params["dense"]))
    return model


def numpy_model(kind, units=12, layers=1, seed=0):
    cls = nt.NUMPY_LAYERS[kind]
    if layers == 1: layer = cls(units, seed=seed)
    else: layer = StackedRNN([cls(units, seed=seed + i) for i in range(layers)]).build(V)
    return nt.init_model(V, units, seed, layer=layer)


@pytest.mark.parametrize("kind, layers", [("rnn", 1), ("lstm", 1), ("gru", 1), ("lstm", 2)])
def test_one_evaluator_gives_the_same_figure_everywhere(kind, layers):
    "The same weights on the same text: NumPy trainer, TF trainer and chapter 7's call agree to 1e-6 (float32)"
    m_np = numpy_model(kind, layers=layers)
    m_tf = tf_copy(m_np, kind, layers)
    valid = IDS[-777:]  # 776 predictions: with 32 streams and windows of 10, the last window and streams are ragged
    np_trainer = nt.Trainer(m_np, IDS[:2000], valid, batch_size=4, seq_len=10)
    tf_trainer = TFTrainer(m_tf, IDS[:2000], valid, batch_size=4, seq_len=10)
    a, b = np_trainer.evaluate(), tf_trainer.evaluate()
    c = nt.evaluate_windows(keras_window(m_tf), valid, 32, 10, m_tf.vocab_size)  # as chapter 7 calls it
    d = nt.evaluate(m_np, valid, 32, 10)  # as `rnn-tutorial evaluate` calls it
    assert a.n == b.n == c.n == d.n == 776
    for e in (b, c, d): assert e.nats == pytest.approx(a.nats, rel=1e-6)
    assert a.nats == d.nats and b.nats == c.nats  # the trainers call exactly these
    assert a.nats != pytest.approx(nt.evaluate(m_np, valid[:-7], 32, 10).nats, rel=1e-6)  # the tail counts


def test_evaluate_windows_counts_every_prediction_once():
    "A window function that records its weights: each of the N predictions weighted once, padding zero"
    seen = []
    def window(x, y, w, state):
        seen.append((x.copy(), y.copy(), w.copy()))
        return float(w.sum()), state
    ids = np.arange(23) % 5
    ev = nt.evaluate_windows(window, ids, batch_size=4, seq_len=3)
    assert ev.n == 22 and ev.nats == pytest.approx(1.0)  # the window's "loss" is its count: mean 1
    x = np.concatenate([s[0] for s in seen], 1).ravel()
    y = np.concatenate([s[1] for s in seen], 1).ravel()
    w = np.concatenate([s[2] for s in seen], 1).ravel()
    assert w.sum() == 22 and list(x[w == 1]) == list(ids[:-1]) and list(y[w == 1]) == list(ids[1:])


def test_keras_step_matches_numpy_step():
    m_np = numpy_model("gru")
    m_tf = tf_copy(m_np, "gru")
    a = list(nt.sample_stream(nt.numpy_step(m_np), None, IDS[:5], 30, temperature=0))
    b = list(nt.sample_stream(keras_step(m_tf), None, IDS[:5], 30, temperature=0))
    assert a == b


def make(seed=0, lr=1e-2, **kw):
    model = char_model(V, 16, "lstm", seed=seed)
    kw = {"batch_size": 4, "seq_len": 25, "eval_every": 7, **kw}
    return TFTrainer(model, IDS[:1200], IDS[1200:1500], TFAdam(lr), **kw)


def test_interface_and_exact_resume(tmp_path):
    full = make().fit(30)
    assert (full.step, len(full.log["train"]), [s for s, _ in full.log["valid"]]) == (30, 30, [7, 14, 21, 28])
    assert full.epoch >= 1  # 1199 training characters make 11 windows: the run crosses epochs
    ckpt = tmp_path / "c.npz"
    make().fit(12, checkpoint=ckpt, checkpoint_every=5)
    resumed = make(seed=3).load_checkpoint(ckpt).fit(30)
    assert resumed.log == full.log
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(full.model.weights, resumed.model.weights))
    pairs = zip(full.optimizer.variables, resumed.optimizer.variables)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in pairs)
    assert resumed.config() == full.config() and full.config()["optimizer"] == "TFAdam"
    with pytest.raises(FormatError, match="seq_len is 20 here, 25 in the checkpoint"):
        make(seq_len=20).load_checkpoint(ckpt)
    with pytest.raises(FormatError, match="lr is 0.02 here, 0.01 in the checkpoint"):
        make(lr=2e-2).load_checkpoint(ckpt)
    with pytest.raises(FormatError, match="array 'model/0' must have shape"):
        TFTrainer(char_model(V, 8, "lstm"), IDS[:1200], IDS[1200:1500], TFAdam(1e-2), 4, 25,
                  eval_every=7).load_checkpoint(ckpt)
    with pytest.raises(FormatError, match="expected format 'rnn-tutorial.tf-train-checkpoint'"):
        nt.Trainer(numpy_model("lstm"), IDS[:1200], batch_size=4, seq_len=25).save_checkpoint(tmp_path / "n.npz")
        make().load_checkpoint(tmp_path / "n.npz")
    assert nt.read_checkpoint(ckpt, TF_CHECKPOINT_FORMAT, 2)[1]["step"] == 12
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        make().load_checkpoint(tmp_path / "missing.npz")


def test_bad_arguments_and_non_finite_loss():
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"): make(batch_size=0)
    with pytest.raises(ValueError, match="train_ids must hold ids"):
        TFTrainer(char_model(V, 4, "rnn"), np.array([0, V]))
    with pytest.raises(ValueError, match="model must be a CharModel-like"): TFTrainer(object(), IDS)
    t = make()
    for v in t.model.weights: v.assign(tf.fill(v.shape, np.nan))
    with pytest.raises(FloatingPointError, match="not finite at step 1"): t.train_step()


def test_stacked_model_is_registered_and_round_trips(tmp_path):
    model = char_model(V, 8, "gru", layers=3, seed=0)
    assert isinstance(model, StackedCharModel) and model.n_states == 3
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is StackedCharModel and loaded.get_config()["layers"] == 3
    x = IDS[None, :20].astype(np.int32)
    np.testing.assert_array_equal(loaded(x)[0].numpy(), model(x)[0].numpy())
    with pytest.raises(ValueError, match="embedding_dim must be None"):
        StackedCharModel(V, 8, "gru", 2, embedding_dim=4)


def test_numpy_modules_import_without_tensorflow():
    code = ("import sys, json; import rnn_tutorial.cli, rnn_tutorial.numpy_train, rnn_tutorial.apps.generation; "
            "print(json.dumps('tensorflow' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) is False


def test_cached_functions_do_not_keep_their_model_alive():
    "keras_step and keras_window cache one tf.function per model; a model nobody else holds is freed with its cache."
    import gc
    import weakref

    from rnn_tutorial import tf_train

    model = tf_copy(numpy_model("gru"), "gru")
    step, window = keras_step(model), keras_window(model)
    step(None, IDS[:2])
    window(IDS[:6].reshape(2, 3), IDS[1:7].reshape(2, 3), np.ones((2, 3)), None)
    alive = weakref.ref(model)
    assert alive() in tf_train._STEP_FNS and alive() in tf_train._WINDOW_FNS
    del model, step, window
    gc.collect()
    assert alive() is None, "a cached tf.function keeps its Keras model alive"


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    "A fresh trainer, and the arrays and metadata of a 12-step checkpoint of the same configuration"
    path = tmp_path_factory.mktemp("ckpt") / "c.npz"
    make().fit(12, checkpoint=path)
    arrays, meta = nt.read_checkpoint(path, TF_CHECKPOINT_FORMAT, 2)
    return make(seed=3), arrays, meta, path.parent


def _set(keys, value):
    "A change that sets meta[keys[0]][keys[1]]... to `value`"
    def change(meta, arrays):
        for k in keys[:-1]: meta = meta[k]
        meta[keys[-1]] = value
    return change


DAMAGE = {  # name -> (change(meta, arrays), what the FormatError must say)
    "unknown field": (_set(["exec"], "os.system('rm -rf ~')"), "field 'exec' is unknown"),
    "missing field": (lambda m, a: m.pop("log"), "log"),
    "negative step": (_set(["step"], -1), "-1"),
    "string step": (_set(["step"], "12"), "'12'"),
    "bool epoch": (_set(["epoch"], True), "True"),
    "step beyond its log": (_set(["step"], 13), "13"),
    "offset beyond seq_len": (_set(["offset"], 25), "offset"),
    "window beyond the epoch": (_set(["k"], 10**6), "k"),
    "epoch beyond step": (_set(["epoch"], 99), "epoch must be at most step 12"),
    "config of another run": (_set(["config", "seed"], 7), "seed is 0 here, 7 in the checkpoint"),
    "config not an object": (_set(["config"], [1, 2]), "config"),
    "state naming a missing array": (_set(["state"], {"list": [0, 7]}), "state"),
    "rng of another generator": (_set(["rng", "bit_generator"], "MT19937"), "rng"),
    "rng state out of range": (_set(["rng", "state", "inc"], -1), "rng"),
    "NaN in the log": (lambda m, a: m["log"]["train"][0].__setitem__(1, float("nan")), "train[0]"),
    "variable names not a list": (_set(["optimizer"], {"a": 1}), "optimizer"),
    "a GRU's variable": (_set(["model", 0], "char_model/recurrent/gru_cell/kernel"), "model variable 0 is"),
    "one variable too many": (lambda m, a: m["model"].append("char_model/dense/extra"), "names 6 variables"),
    "NaN weight": (lambda m, a: a["model/0"].__setitem__((0, 0), np.nan), "array 'model/0' holds NaN"),
    "infinite optimizer moment": (lambda m, a: a["optimizer/3"].fill(np.inf), "array 'optimizer/3' holds NaN"),
    "weight of another dtype": (lambda m, a: a.update({"model/1": a["model/1"].astype(np.float64)}), "dtype float32"),
    "weight of another shape": (lambda m, a: a.update({"model/1": a["model/1"].T.copy()}), "must have shape"),
    "unknown array": (lambda m, a: a.update({"payload": np.zeros(3)}), "array 'payload' is unknown"),
    "missing array": (lambda m, a: a.pop("optimizer/2"), "optimizer/2"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_checkpoint_is_refused_and_changes_nothing(saved_run, case):
    "Every field and array of a TF checkpoint is checked before anything is assigned; FormatError names what is wrong"
    trainer, arrays, meta, d = saved_run
    change, expected = DAMAGE[case]
    arrays, meta = {k: v.copy() for k, v in arrays.items()}, json.loads(json.dumps(meta))
    change(meta, arrays)
    write_npz(d / "damaged.npz", arrays, meta)
    before = [v.numpy().copy() for v in [*trainer.model.weights, *trainer.optimizer.variables]]
    with pytest.raises(FormatError) as e: trainer.load_checkpoint(d / "damaged.npz")
    assert expected in str(e.value), str(e.value)
    after = [v.numpy() for v in [*trainer.model.weights, *trainer.optimizer.variables]]
    assert trainer.step == 0 and all(np.array_equal(a, b) for a, b in zip(before, after))


def test_undamaged_checkpoint_loads(saved_run):
    "The same checkpoint, rewritten unchanged, loads (so the checks above refuse only what is damaged)"
    _, arrays, meta, d = saved_run
    write_npz(d / "same.npz", arrays, meta)
    assert make(seed=3).load_checkpoint(d / "same.npz").step == 12


class ByTrainStep(TFTrainer):
    "`TFTrainer` whose window step is chapter 5's `TrainStep`: the numbers a run without dropout must reproduce"
    def window_step(self, x, y):
        if not hasattr(self, "reference"):
            self.reference = TrainStep(self.model, self.optimizer, self.clip_norm, self.clip_value)
        loss, norm, state = self.reference(x, y, self.state)
        return float(loss), float(norm), list(state)


@pytest.mark.parametrize("kind, layers, clip_value", [("lstm", 1, None), ("rnn", 2, 0.05)])
def test_without_dropout_the_step_is_chapter_5s_bit_for_bit(kind, layers, clip_value):
    "dropout=0.0 gives TrainStep's losses, norms and weights exactly, and a checkpoint configuration without dropout"
    a, b = [cls(char_model(V, 12, kind, layers, seed=0), IDS[:1200], IDS[1200:1500], TFAdam(1e-2), batch_size=4,
                seq_len=25, eval_every=4, clip_value=clip_value).fit(8) for cls in (TFTrainer, ByTrainStep)]
    assert a.log == b.log
    assert all(np.array_equal(u.numpy(), v.numpy()) for u, v in zip(a.model.weights, b.model.weights))
    assert "dropout" not in a.config() and type(char_model(V, 4, kind, 1, dropout=0.0)) is not StackedCharModel


def test_dropout_is_checked_named_and_only_in_training():
    for bad in (-0.1, 1.0, 1.5, "0.2", float("nan"), True):
        with pytest.raises(ValueError, match="dropout must be"): char_model(V, 4, "gru", dropout=bad)
    model = char_model(V, 8, "lstm", layers=2, seed=0, dropout=0.5)
    x, seed = IDS[None, :30].repeat(3, 0).astype(np.int32), tf.constant([1, 2], tf.int64)
    (la, sa), (lb, _), (le, se) = model(x, training=True, dropout_seed=seed), model(x, training=True,
                                                                                    dropout_seed=seed), model(x)
    np.testing.assert_array_equal(la.numpy(), lb.numpy())  # a function of the seed
    assert not np.array_equal(la.numpy(), le.numpy())  # dropped in training, not in evaluation
    for i in (0, 1): np.testing.assert_array_equal(sa[i].numpy(), se[i].numpy())  # layer 0's recurrence untouched
    assert not np.array_equal(sa[2].numpy(), se[2].numpy())  # layer 1 read dropped outputs
    other, _ = model(x, training=True, dropout_seed=tf.constant([1, 3], tf.int64))
    assert not np.array_equal(la.numpy(), other.numpy())
    with pytest.raises(ValueError, match="dropout_seed must be given"): model(x, training=True)


def test_one_layer_with_dropout_keeps_the_one_layer_layout(tmp_path):
    "A StackedCharModel of one layer has CharModel's params layout; config and Keras files keep the rate"
    plain, drop = char_model(V, 8, "gru", seed=0), char_model(V, 8, "gru", seed=0, dropout=0.2)
    assert type(drop) is StackedCharModel and drop.n_layers == 1
    shapes = lambda m: {k: v.shape for k, v in nt.flatten_tree(m.params).items()}  # noqa: E731
    assert shapes(plain) == shapes(drop)
    drop.set_params(plain.params)
    x = IDS[None, :20].astype(np.int32)
    np.testing.assert_array_equal(drop(x)[0].numpy(), plain(x)[0].numpy())  # evaluation: nothing dropped
    stacked = char_model(V, 8, "lstm", layers=2, seed=1, dropout=0.3)
    twin = char_model(V, 8, "lstm", layers=2, seed=2)
    twin.set_params(stacked.params)
    np.testing.assert_array_equal(twin(x)[0].numpy(), stacked(x)[0].numpy())
    stacked.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.get_config()["dropout"] == 0.3 and loaded.dropout == 0.3


def make_dropout(seed=0, dropout=0.3, **kw):
    model = char_model(V, 12, "gru", layers=2, seed=seed, dropout=dropout)
    return TFTrainer(model, IDS[:1200], IDS[1200:1500], TFAdam(1e-2), batch_size=4, seq_len=25, eval_every=4, **kw)


def test_dropout_resumes_exactly(tmp_path):
    full = make_dropout().fit(4, checkpoint=tmp_path / "c.npz").fit(10)
    resumed = make_dropout(seed=5).load_checkpoint(tmp_path / "c.npz").fit(10)
    assert resumed.log == full.log
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(full.model.weights, resumed.model.weights))
    assert full.config()["dropout"] == 0.3
    with pytest.raises(FormatError, match="dropout is 0.2 here, 0.3 in the checkpoint"):
        make_dropout(dropout=0.2).load_checkpoint(tmp_path / "c.npz")
    without = make_dropout(dropout=0.0)
    with pytest.raises(FormatError, match="dropout is None here, 0.3 in the checkpoint"):
        without.load_checkpoint(tmp_path / "c.npz")
    assert without.fit(1).log["train"][0] != full.log["train"][0]  # the trainer uses the masks


def test_device_choice():
    on_cpu = make(device="cpu").fit(6)
    assert on_cpu.device == "/CPU:0" and on_cpu.log == make().fit(6).log
    with pytest.raises(ValueError, match="device must be one of 'cpu', 'gpu', got 'tpu'"): make(device="tpu")
    with pytest.raises(ValueError, match="device 'gpu' was asked for, but none is visible"):
        pick_device("gpu", gpus=[])
    if not gpu_details():
        with pytest.raises(ValueError, match="none is visible"): make(device="gpu")
    t = make_tf_trainer(V, IDS[:1200], IDS[1200:1500], units=16, cell="lstm", layers=1, seed=0, lr=1e-2,
                        device="cpu", batch_size=4, seq_len=25, eval_every=7)
    assert t.fit(6).log == on_cpu.log  # the factory builds what `make` builds, on the device asked for
    with pytest.raises(ValueError, match="lr must be"):
        make_tf_trainer(V, IDS, None, units=4, cell="rnn", layers=1, seed=0, lr=0)


def test_tf_config_is_checked_and_named(monkeypatch):
    good = {"cluster": {"worker": ["127.0.0.1:1234", "127.0.0.1:1235"]}, "task": {"type": "worker", "index": 1}}
    assert check_tf_config(json.dumps(good)) == good
    cases = {None: "it is not set", "": "it is not set", "{": "it is not JSON", "[1]": "got [1]",
             json.dumps({"task": good["task"]}): "'cluster' must map",
             json.dumps({**good, "cluster": {"ps": ["a:1"]}}): "'cluster' must map",
             json.dumps({**good, "cluster": {"worker": ["localhost"]}}): "'host:port'",
             json.dumps({**good, "task": {"type": "worker", "index": 2}}): "'task' must name",
             json.dumps({**good, "task": {"type": "chief", "index": 0}}): "'task' must name"}
    for raw, want in cases.items():
        with pytest.raises(ValueError, match="TF_CONFIG must describe the cluster") as e: check_tf_config(raw)
        assert want in str(e.value), (raw, str(e.value))
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG .* it is not set"): make_strategy("multi-worker")
    with pytest.raises(ValueError, match="strategy must be one of 'mirrored', 'multi-worker', got 'tpu'"):
        make_strategy("tpu")
    assert make_strategy(None) is None


def test_a_strategy_needs_the_model_and_optimizer_built_in_its_scope():
    "One replica in this process (two need a fresh one: tests/test_tf_distribute.py); the checks name what is wrong"
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    args = (IDS[:1200], IDS[1200:1500])
    with pytest.raises(ValueError, match="model must be built under the strategy's scope"):
        TFTrainer(char_model(V, 8, "lstm"), *args, strategy=strategy)
    with strategy.scope(): model = char_model(V, 8, "lstm")
    with pytest.raises(ValueError, match="optimizer must be created"):
        TFTrainer(model, *args, TFAdam(1e-2), strategy=strategy)
    with pytest.raises(ValueError, match="jit_compile must be False"):
        TFTrainer(model, *args, strategy=strategy, jit_compile=True)
    with pytest.raises(ValueError, match="device must be None with a strategy"):
        TFTrainer(model, *args, strategy=strategy, device="cpu")
    with pytest.raises(ValueError, match="device must be None with a strategy"):
        make_tf_trainer(V, *args, units=8, cell="lstm", layers=1, seed=0, lr=1e-2, strategy=strategy, device="cpu")
    kw = dict(units=16, cell="lstm", layers=1, seed=0, lr=1e-2, batch_size=4, seq_len=25, eval_every=7)
    under = make_tf_trainer(V, *args, strategy=strategy, **kw).fit(6)
    np.testing.assert_allclose([r[1] for r in under.log["train"]], [r[1] for r in make().fit(6).log["train"]],
                               rtol=1e-6)
    assert under.is_chief


def test_multi_worker_strategy_must_come_first(monkeypatch):
    "This process has run TensorFlow already: the collective ops cannot be set up any more, and the error says so"
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1"]},
                                                "task": {"type": "worker", "index": 0}}))
    tf.ones(1)
    with pytest.raises(RuntimeError, match="must be called before TensorFlow runs its first operation"):
        make_strategy("multi-worker")
