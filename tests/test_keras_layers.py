("Keras layers (`rnn_tutorial.keras_layers`): the cuDNN rules against Keras's own, streaming, masking, saving and "
 "resuming, and tf.distribute on two logical CPUs and two worker processes.")
import importlib
import json
import os
import re

import numpy as np
import pytest

from rnn_tutorial.data import TBPTTBatches, Vocab, pad_sequences
from rnn_tutorial.keras_layers import (CudnnReport, TrainingCheckpoint, cudnn_eligibility, first_token_task,
                                       load_keras_model,
                                       mask_problems, replicated_training, reset_states, run_distributed,
                                       save_keras_model,
                                       sequence_classifier, tf_config, to_stateful)
from rnn_tutorial.tf_rnn import CharModel, TFAdam, TrainStep, make_layer
from rnn_tutorial.persist import FormatError
from rnn_tutorial.tf_setup import configure_tensorflow, import_tensorflow

tf, keras = import_tensorflow()
configure_tensorflow()
L = keras.layers
# Keras's own saving code calls np.array on its variables the NumPy 1 way; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy "
                                        "keyword:DeprecationWarning")

try:  # Keras's own predicates: private, so the comparison is skipped only if they moved
    # the package exports a function `rnn` too
    keras_tf_rnn = importlib.import_module("keras.src.backend.tensorflow.rnn")
    KERAS_RULES = all(hasattr(keras_tf_rnn, n)
                      for n in ("_do_lstm_arguments_support_cudnn", "_do_gru_arguments_support_cudnn",
                                                       "_is_sequence_right_padded", "_has_fully_masked_sequence"))
except ImportError:
    KERAS_RULES = False

# (layer factory, the setting that must be named in the reasons, or None when eligible)
CASES = {
    "lstm": (lambda: L.LSTM(4), None),
    "gru": (lambda: L.GRU(4), None),
    "lstm tf.tanh/tf.sigmoid": (lambda: L.LSTM(4, activation=tf.tanh, recurrent_activation=tf.sigmoid), None),
    "gru dropout": (lambda: L.GRU(4, dropout=0.3), None),
    "lstm go_backwards stateful": (lambda: L.LSTM(4, go_backwards=True), None),
    "lstm activation": (lambda: L.LSTM(4, activation="relu"), "activation='relu'"),
    "gru activation": (lambda: L.GRU(4, activation="sigmoid"), "activation='sigmoid'"),
    "lstm recurrent_activation": (lambda: L.LSTM(4, recurrent_activation="hard_sigmoid"),
                                  "recurrent_activation='hard_sigmoid'"),
    "gru recurrent_activation": (lambda: L.GRU(4, recurrent_activation="tanh"), "recurrent_activation='tanh'"),
    "lstm recurrent_dropout": (lambda: L.LSTM(4, recurrent_dropout=0.1), "recurrent_dropout=0.1"),
    "gru recurrent_dropout": (lambda: L.GRU(4, recurrent_dropout=0.5), "recurrent_dropout=0.5"),
    "lstm unroll": (lambda: L.LSTM(4, unroll=True), "unroll=True"),
    "gru unroll": (lambda: L.GRU(4, unroll=True), "unroll=True"),
    "lstm use_bias": (lambda: L.LSTM(4, use_bias=False), "use_bias=False"),
    "gru use_bias": (lambda: L.GRU(4, use_bias=False), "use_bias=False"),
    "gru reset_after": (lambda: L.GRU(4, reset_after=False), "reset_after=False"),
    "lstm use_cudnn": (lambda: L.LSTM(4, use_cudnn=False), "use_cudnn=False"),
    "simple rnn": (lambda: L.SimpleRNN(4), "SimpleRNN"),
    "our lstm cell": (lambda: make_layer("lstm", 4), "LSTMCell"),
    "bidirectional ok": (lambda: L.Bidirectional(L.GRU(4)), None),
    "bidirectional unroll": (lambda: L.Bidirectional(L.LSTM(4, unroll=True)), "unroll=True"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cudnn_rule(case):
    "Each rule alone: eligible layers have no reasons; others name the setting and what cuDNN needs."
    make, setting = CASES[case]
    r = cudnn_eligibility(make(), gpus=[])  # a faked device list: the same answer on any machine
    assert isinstance(r, CudnnReport) and r.gpu is False
    assert cudnn_eligibility(make(), gpus=["/device:GPU:0"]).gpu is True
    if setting is None:
        assert r.eligible and bool(r) and r.reasons == ()
    else:
        assert not r.eligible and not r
        assert any(setting in reason for reason in r.reasons), r.reasons
        if "=" in setting: assert all("cuDNN needs" in reason for reason in r.reasons)


def test_cudnn_reasons_accumulate():
    "Several obstacles: every one is reported, once (also through a Bidirectional wrapper)."
    r = cudnn_eligibility(L.GRU(4, activation="relu", use_bias=False, reset_after=False, recurrent_dropout=0.2))
    assert len(r.reasons) == 4
    r = cudnn_eligibility(L.Bidirectional(L.LSTM(4, unroll=True, use_bias=False)))
    assert len(r.reasons) == 2 and "not eligible" in repr(r)


@pytest.mark.skipif(not KERAS_RULES, reason="Keras's private cuDNN predicates are not importable in this Keras version")
@pytest.mark.parametrize("case", sorted(c for c in CASES if CASES[c][1] in (None,) or "lstm" in c or "gru" in c))
def test_cudnn_rule_matches_keras(case):
    "For LSTM and GRU layers, our verdict is Keras's own predicate plus its inner_loop conditions."
    layer = CASES[case][0]()
    if isinstance(layer, L.Bidirectional): layer = layer.forward_layer
    if not isinstance(layer, (L.LSTM, L.GRU)): pytest.skip("not a built-in LSTM/GRU")
    args = dict(activation=layer.activation, recurrent_activation=layer.recurrent_activation, unroll=layer.unroll,
                use_bias=layer.use_bias)
    if isinstance(layer, L.GRU):
        keras_ok = keras_tf_rnn._do_gru_arguments_support_cudnn(**args, reset_after=layer.reset_after)
    else: keras_ok = keras_tf_rnn._do_lstm_arguments_support_cudnn(**args)
    keras_ok = bool(keras_ok) and not layer.recurrent_dropout and layer.use_cudnn is not False
    assert cudnn_eligibility(layer).eligible == keras_ok


MASKS = {
    "right": ([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], []),
    "left": ([[0, 1, 1, 1], [1, 1, 1, 1]], ["not right-padded"]),
    "hole": ([[1, 0, 1, 0]], ["not right-padded"]),
    "empty row": ([[1, 0, 0, 0], [0, 0, 0, 0]], ["no real step"]),
    "empty and left": ([[0, 0, 0], [0, 1, 1]], ["not right-padded", "no real step"]),
    "all real": ([[1, 1], [1, 1]], []),
}


@pytest.mark.parametrize("case", sorted(MASKS))
def test_mask_rule(case):
    "Right-padded masks pass; left padding, holes and empty rows are each named; Keras's own checks agree."
    mask, expected = MASKS[case]
    m = np.array(mask, bool)
    problems = mask_problems(m)
    assert len(problems) == len(expected) and all(e in p for e, p in zip(expected, problems)), problems
    assert mask_problems(np.array(mask, np.int32)) == problems  # 0/1 integers accepted too
    assert cudnn_eligibility(L.LSTM(3), mask=m).eligible == (not expected)
    assert cudnn_eligibility(L.LSTM(3), mask=tf.constant(m)).eligible == (not expected)
    if KERAS_RULES:
        keras_ok = bool(keras_tf_rnn._is_sequence_right_padded(tf.constant(m))) and not bool(
            keras_tf_rnn._has_fully_masked_sequence(tf.constant(m)))
        assert keras_ok == (not expected)


def test_pad_sequences_masks_are_cudnn_friendly():
    "Chapter 0's `pad_sequences` pads on the right: its masks always pass."
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 9, k) for k in rng.integers(1, 30, 50)]
    assert mask_problems(pad_sequences(seqs)[1]) == []


def test_cudnn_bad_input():
    "Non-recurrent layers and malformed masks are refused with the argument named."
    with pytest.raises(ValueError, match="layer must be a Keras recurrent layer"): cudnn_eligibility(L.Dense(3))
    with pytest.raises(ValueError, match="layer must be"): cudnn_eligibility("LSTM")
    with pytest.raises(ValueError, match="mask must have shape"): mask_problems(np.ones(5, bool))
    with pytest.raises(ValueError, match="mask must hold booleans"): mask_problems(np.full((2, 3), 0.5))


def _lm(kind_layer, V=9, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((None,), dtype="int32"), L.Embedding(V, 6), kind_layer, L.Dense(V)])


@pytest.mark.parametrize("layer", ["LSTM", "GRU", "SimpleRNN", "ours-lstm", "ours-gru"])
def test_streaming_matches_whole_sequence(layer):
    ("A stateful copy fed one token at a time (or in chunks) gives the whole-sequence outputs to 1e-5; reset_states "
     "forgets.")
    rec = make_layer(layer[5:], 8) if layer.startswith("ours") else getattr(L, layer)(8, return_sequences=True)
    lm = _lm(rec)
    ids = np.random.default_rng(3).integers(0, 9, (3, 11)).astype("int32")
    full = lm(ids).numpy()
    live = to_stateful(lm, batch_size=3)
    assert reset_states(live) == 1
    steps = np.concatenate([live(ids[:, t:t + 1]).numpy() for t in range(11)], axis=1)
    np.testing.assert_allclose(steps, full, rtol=0, atol=1e-5)
    reset_states(live)
    chunks = np.concatenate([live(ids[:, a:b]).numpy() for a, b in ((0, 4), (4, 5), (5, 11))], axis=1)
    np.testing.assert_allclose(chunks, full, rtol=0, atol=1e-5)
    reset_states(live)
    np.testing.assert_allclose(live(ids[:, :2]).numpy(), full[:, :2], rtol=0, atol=1e-5)


def test_to_stateful_bad_input():
    "Only Sequential models, no Bidirectional, positive batch sizes."
    with pytest.raises(ValueError, match="model must be a keras.Sequential"): to_stateful(L.LSTM(3))
    with pytest.raises(ValueError, match="Bidirectional"):
        to_stateful(_lm(L.Bidirectional(L.LSTM(3, return_sequences=True))))
    with pytest.raises(ValueError, match="batch_size"): to_stateful(_lm(L.LSTM(3, return_sequences=True)), batch_size=0)


def test_first_token_task():
    "Right-padded with 0, labels from the first token, balanced, mask matching the padding; bad arguments named."
    ids, y, mask = first_token_task(400, length=30, seed=5)
    assert ids.shape == mask.shape == (400, 30) and ids.dtype == np.int32 and y.shape == (400,)
    assert np.array_equal(ids != 0, mask) and mask_problems(mask) == []
    assert np.array_equal(y, (ids[:, 0] > 5).astype(np.float32)) and 0.4 < y.mean() < 0.6
    assert 3 <= mask.sum(1).min() and mask.sum(1).max() <= 10
    for kw, name in (({"n": 0}, "n"), ({"n": 5, "vocab_size": 2}, "vocab_size"),
                     ({"n": 5, "length": 5}, r"max_len must be an integer in \[1, 5\], got 10"),
                     ({"n": 5, "min_len": 8, "max_len": 6}, r"min_len must be an integer in \[1, 6\], got 8")):
        with pytest.raises(ValueError, match=name): first_token_task(**kw)
    with pytest.raises(ValueError, match="kind must be one of 'rnn', 'lstm', 'gru'"):
        sequence_classifier(11, kind="LSTM")
    for kind, layer in (("rnn", L.SimpleRNN), ("lstm", L.LSTM), ("gru", L.GRU)):
        assert type(sequence_classifier(11, kind=kind).layers[1]) is layer


def test_mask_makes_padding_invisible():
    "A masked classifier gives the same output whatever the amount of right padding; an unmasked one does not."
    short, long_ = first_token_task(6, length=12, seed=2)[0], first_token_task(6, length=60, seed=2)[0]
    for masked in (True, False):
        keras.utils.set_random_seed(0)
        clf = sequence_classifier(11, masked=masked)
        diff = np.abs(clf(short).numpy() - clf(long_).numpy()).max()
        assert (diff < 1e-6) if masked else (diff > 1e-6)


def test_save_load_roundtrip_exact(tmp_path):
    "Our custom cells and a mask: the `.keras` round trip in safe mode gives identical outputs."
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((None,), dtype="int32"), L.Embedding(10, 5, mask_zero=True),
                              make_layer("rnn", 6), make_layer("lstm", 6), make_layer("gru", 6, return_sequences=False),
                              L.Dense(3)])
    ids = pad_sequences([[1, 2, 3, 4], [5, 6], [7]], max_len=5)[0]
    path = save_keras_model(model, tmp_path / "sub" / "m.keras")
    assert path.exists() and [p.name for p in path.parent.iterdir()] == ["m.keras"]  # no temporary file left
    loaded = load_keras_model(path)
    assert np.array_equal(model(ids).numpy(), loaded(ids).numpy())
    for a, b in zip(model.get_weights(), loaded.get_weights()): assert np.array_equal(a, b)
    save_keras_model(loaded, path)  # overwrite in place
    assert np.array_equal(load_keras_model(path)(ids).numpy(), model(ids).numpy())


def test_save_load_errors(tmp_path):
    "Wrong suffix, missing or corrupt files, non-models, and code in the file (safe mode) are refused."
    model = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    with pytest.raises(ValueError, match="path must end in .keras"): save_keras_model(model, tmp_path / "m.h5")
    with pytest.raises(ValueError, match="model must be a keras.Model"):
        save_keras_model(L.Dense(2), tmp_path / "m.keras")
    with pytest.raises(FileNotFoundError, match="no Keras model at"): load_keras_model(tmp_path / "missing.keras")
    with pytest.raises(ValueError, match="path must end in .keras"): load_keras_model(tmp_path / "m.txt")
    (tmp_path / "half.keras").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(FormatError, match="not a .keras archive"): load_keras_model(tmp_path / "half.keras")
    save_keras_model(keras.Sequential([keras.Input((3,)), L.Lambda(lambda t: t + 1)]), tmp_path / "code.keras")
    with pytest.raises(ValueError, match="Lambda"): load_keras_model(tmp_path / "code.keras")
    assert not list(tmp_path.glob(".*part*"))  # no temporary file left behind


def test_save_keeps_the_old_file_when_keras_fails(tmp_path, monkeypatch):
    "A save that fails part-way leaves the previous model in place, whole, and no temporary file."
    model = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    path = save_keras_model(model, tmp_path / "m.keras")
    before = path.read_bytes()

    def broken_save(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f: f.write(b"PK half an archive")
        raise OSError("disk full")
    monkeypatch.setattr(keras.Model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"): save_keras_model(model, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.keras"]


def _char_run(seed, batches, H=16):
    keras.utils.set_random_seed(seed)
    model = CharModel(int(batches.x.max()) + 1, H, kind="gru", embedding_dim=8)
    return model, TrainStep(model, TFAdam(1e-2)), [tf.zeros((batches.batch_size, H))]


def test_checkpoint_resume_is_exact(tmp_path):
    ("Stop after 3 steps, restore into a fresh model and optimizer: the next losses equal an uninterrupted run's "
     "exactly.")
    text = "the quick brown fox jumps over the lazy dog. " * 40
    batches = TBPTTBatches(Vocab(text).encode(text), batch_size=4, seq_len=10)
    model, step, state = _char_run(0, batches)
    ref = []
    for k in range(6):
        loss, _, state = step(*batches[k], state)
        ref.append(float(loss))
    model, step, state = _char_run(0, batches)
    ckpt = TrainingCheckpoint(tmp_path, model, step.optimizer, state, max_to_keep=2)
    assert ckpt.restore()[0] == 0  # nothing saved yet: start at step 0
    for k in range(3):
        loss, _, state = step(*batches[k], state)
        ckpt.save(k + 1, state)
    assert len(list(tmp_path.glob("ckpt-*.index"))) == 2  # max_to_keep
    model, step, state = _char_run(99, batches)
    ckpt = TrainingCheckpoint(tmp_path, model, step.optimizer, state)
    done, state = ckpt.restore()
    assert done == 3 and int(step.optimizer.iterations.numpy()) == 3
    resumed = []
    for k in range(done, 6):
        loss, _, state = step(*batches[k], state)
        resumed.append(float(loss))
    assert resumed == ref[3:]
    with pytest.raises(ValueError, match="state must hold 1"): ckpt.save(4, [])


def test_checkpoint_corrupt(tmp_path):
    "A damaged checkpoint gives a ValueError naming the directory."
    model = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    opt = keras.optimizers.Adam()
    opt.build(model.trainable_variables)
    TrainingCheckpoint(tmp_path, model, opt).save(1)
    for p in tmp_path.glob("ckpt-1.data*"): p.write_bytes(b"garbage")
    with pytest.raises(FormatError, match="cannot be restored"): TrainingCheckpoint(tmp_path, model, opt).restore()
    with pytest.raises(ValueError, match="max_to_keep"): TrainingCheckpoint(tmp_path, model, opt, max_to_keep=0)


def test_tf_config():
    "TF_CONFIG JSON for worker `index` of a cluster; bad arguments named."
    cfg = json.loads(tf_config(["10.0.0.1:12345", "10.0.0.2:12345"], 1))
    assert cfg == {"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]}, "task": {"type": "worker", "index": 1}}
    with pytest.raises(ValueError, match="workers"): tf_config([], 0)
    with pytest.raises(ValueError, match="workers"): tf_config(["10.0.0.1"], 0)
    with pytest.raises(ValueError, match="index"): tf_config(["a:1", "b:2"], 2)
    with pytest.raises(ValueError, match="mode"): run_distributed("tpu")
    with pytest.raises(ValueError, match="batch_size"): replicated_training(batch_size=0)


@pytest.fixture(scope="module")
def one_device():
    "Losses of `replicated_training` on one device, in this process."
    tf.config.experimental.enable_op_determinism()
    return replicated_training(steps=4, batch_size=16)


REL_TOL = 1e-5  # float32 rounding: the replicas' gradients are summed in another order


def test_mirrored_two_logical_cpus(one_device):
    "MirroredStrategy on two logical CPUs (set up in a fresh process) gives one device's losses to 1e-5 relative."
    out = run_distributed("mirrored", n=2, timeout=240, steps=4, batch_size=16)
    assert out["replicas"] == 2
    np.testing.assert_allclose(out["losses"], one_device, rtol=REL_TOL)


def test_multiworker_two_processes(one_device):
    ("MultiWorkerMirroredStrategy, two worker processes on 127.0.0.1 with TF_CONFIG: equal losses on both, and one "
     "device's to 1e-5.")
    out = run_distributed("multiworker", n=2, timeout=240, steps=4, batch_size=16)
    w0, w1 = out["workers"]
    assert w0["replicas"] == w1["replicas"] == 2
    assert w0["losses"] == w1["losses"]
    np.testing.assert_allclose(w0["losses"], one_device, rtol=REL_TOL)


def test_to_stateful_needs_a_known_input_shape():
    "A Sequential model without an Input and never built is named in the 'must ..., got ...' shape."
    with pytest.raises(ValueError, match="model must start with a keras.Input or be built .*got an unbuilt Sequential"):
        to_stateful(keras.Sequential([L.LSTM(3, return_sequences=True)]))


def _edited_copy(src, dst, config=None, meta=None, extra=None):
    "A copy of the .keras archive `src` with its config.json or metadata.json changed, or members added"
    import zipfile
    with zipfile.ZipFile(src) as z: files = {n: z.read(n) for n in z.namelist()}
    if config is not None: files["config.json"] = json.dumps(config(json.loads(files["config.json"]))).encode()
    if meta is not None: files["metadata.json"] = json.dumps(meta).encode()
    files.update(extra or {})
    with zipfile.ZipFile(dst, "w") as z:
        for n, b in files.items(): z.writestr(n, b)
    return dst


def test_load_keras_model_names_through_the_table(tmp_path):
    "A .keras file edited to name a class outside the table, or with bad metadata, members or weights: FormatError."
    import stat
    model = keras.Sequential([keras.Input((None,), dtype="int32"), L.Embedding(10, 4), make_layer("gru", 3),
                              L.Dense(2)])
    good = save_keras_model(model, tmp_path / "good.keras")
    assert type(load_keras_model(good).layers[1].cell).__name__ == "GRUCell"

    def layer(**kw):
        def change(cfg):
            cfg["config"]["layers"][1].update(kw)
            return cfg
        return change
    cases = {"os.system": layer(module="os", class_name="system"),
             "keras.layers.TFSMLayer": layer(class_name="TFSMLayer"),
             "keras.layers.Lambda": layer(class_name="Lambda"),
             "builtins.eval": layer(module="builtins", class_name="eval"),
             "'evil>GRUCell'": layer(module="rnn_tutorial.tf_rnn", class_name="GRUCell",
                                     registered_name="evil>GRUCell"),
             "keras.layers.None": layer(class_name=None),
             "keys among": lambda cfg: {**cfg, "extra": 1},
             "not a valid Keras model: TypeError": layer(config=[1])}
    for msg, change in cases.items():
        with pytest.raises(FormatError, match=re.escape(msg)):
            load_keras_model(_edited_copy(good, tmp_path / "x.keras", config=change))
    for meta, msg in (({"keras_version": "3", "who": 1}, "unknown field(s) 'who'"),
                      ({"keras_version": 3}, "keras_version must be of type str"), ([1], "must be a JSON object"),
                      ({}, "'keras_version' is missing")):
        with pytest.raises(FormatError, match=re.escape(msg)):
            load_keras_model(_edited_copy(good, tmp_path / "x.keras", meta=meta))
    with pytest.raises(FormatError, match=r"holds \['config.json', 'evil.py'"):
        load_keras_model(_edited_copy(good, tmp_path / "x.keras", extra={"evil.py": b"import os"}))
    model.layers[-1].kernel.assign(np.full((3, 2), np.inf, "float32"))
    with pytest.raises(FormatError, match="hold NaN or infinite values"):
        load_keras_model(save_keras_model(model, tmp_path / "inf.keras"))
    old = os.umask(0o027)
    try:
        assert stat.S_IMODE(save_keras_model(model, tmp_path / "mode.keras").stat().st_mode) == 0o640
        optimizer = keras.optimizers.Adam()
        optimizer.build(model.trainable_variables)
        TrainingCheckpoint(tmp_path / "ck", model, optimizer).save(1)  # TensorFlow's own writer keeps the umask too
        assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "ck").iterdir()} == {0o640}
    finally: os.umask(old)


def test_seeds_are_checked():
    assert first_token_task(3, seed=None)[0].shape == (3, 100)
    for bad in (-1, 0.5, "1", True):
        with pytest.raises(ValueError, match="seed must be None or a non-negative integer"):
            first_token_task(3, seed=bad)
        with pytest.raises(ValueError, match="seed must be an integer >= 0"):
            replicated_training(steps=1, seed=bad)
