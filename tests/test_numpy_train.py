"""The NumPy training chapter (`rnn_tutorial.numpy_train`): optimizers, clipping, the trainer, exact resume,
sampling, saving, bad input."""
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnn_tutorial.data import Corpus, Vocab
from rnn_tutorial.numpy_gated import GRU, LSTM
from rnn_tutorial.numpy_rnn import SimpleRNN, StackedRNN, flatten_tree, gradient_check
from rnn_tutorial.numpy_train import (
    SGD, Adam, CharRNN, Momentum, Trainer, backward, bits, clip_by_global_norm, clip_by_value, compute_loss, evaluate,
    final_state, forward, get_data, global_norm, init_model, load_checkpoint, load_model, predict, read_checkpoint,
    NUMPY_MODEL_FORMAT, sample, sample_next_id, save_model, update,
)
from rnn_tutorial.persist import FormatError, read_npz, write_npz

TEXT = "the quick brown fox jumps over the lazy dog. " * 60
VOCAB = Vocab(TEXT)
IDS = VOCAB.encode(TEXT)
V = len(VOCAB)


def quadratic(opt, steps=200):
    "Distance to the minimum of 0.5 * (w0^2 + 10 w1^2) after `steps` steps of `opt` from (1, 1)."
    theta, c = {"w": np.array([1.0, 1.0])}, np.array([1.0, 10.0])
    for _ in range(steps):
        opt.step(theta, {"w": c * theta["w"]})
    return float(np.linalg.norm(theta["w"]))


@pytest.mark.parametrize("opt", [SGD(0.05), Momentum(0.05, 0.9), Adam(0.05)], ids=repr)
def test_optimizers_minimise_a_quadratic(opt):
    assert quadratic(opt, 300) < 1e-2


def test_adam_matches_the_formulas():
    rng = np.random.default_rng(0)
    lr, b1, b2, eps = 0.02, 0.8, 0.99, 1e-6
    opt, theta = Adam(lr, b1, b2, eps), {"a": {"w": rng.standard_normal((2, 3))}}
    w, m, v = theta["a"]["w"].copy(), 0.0, 0.0
    for t in range(1, 6):
        g = rng.standard_normal((2, 3))
        opt.step(theta, {"a": {"w": g.copy()}})
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        np.testing.assert_allclose(theta["a"]["w"], w, rtol=1e-12, atol=1e-14)


def test_momentum_and_sgd_formulas():
    theta, opt = {"w": np.array([1.0])}, Momentum(0.1, 0.5)
    opt.step(theta, {"w": np.array([2.0])})  # v = -0.2, w = 0.8
    opt.step(theta, {"w": np.array([1.0])})  # v = -0.1 - 0.1 = -0.2, w = 0.6
    np.testing.assert_allclose(theta["w"], [0.6])
    theta = {"w": np.array([1.0])}
    SGD(0.25).step(theta, {"w": np.array([2.0])})
    np.testing.assert_allclose(theta["w"], [0.5])
    assert quadratic(SGD(0.05), 30) == quadratic(Momentum(0.05, 0.0), 30)


def test_optimizers_keep_float32():
    theta = {"w": np.ones(3, np.float32)}
    for opt in (SGD(), Momentum(), Adam()):
        opt.step(theta, {"w": np.ones(3, np.float32)})
        assert theta["w"].dtype == np.float32
        assert all(a.dtype == np.float32 for a in opt.slots.get("m", {}).values())


@pytest.mark.parametrize("cls", [SGD, Momentum, Adam])
def test_optimizer_state_dict_round_trip(cls):
    opt, theta = cls(0.01), {"w": np.ones(4), "b": {"c": np.zeros(2)}}
    grads = lambda k: {"w": np.full(4, 0.1 * k), "b": {"c": np.full(2, -0.2 * k)}}
    for k in range(3):
        opt.step(theta, grads(k))
    other, theta2 = cls(0.5), {"w": theta["w"].copy(), "b": {"c": theta["b"]["c"].copy()}}
    other.load_state_dict(opt.state_dict())
    assert other.lr == 0.01 and other.t == 3
    opt.step(theta, grads(5))
    other.step(theta2, grads(5))
    assert np.array_equal(theta["w"], theta2["w"]) and np.array_equal(theta["b"]["c"], theta2["b"]["c"])


@pytest.mark.parametrize("make, message", [
    (lambda: SGD(0), "lr must be a finite number > 0"),
    (lambda: SGD(float("inf")), "lr must be a finite number > 0"),
    (lambda: SGD("0.1"), "lr must be a finite number > 0"),
    (lambda: Momentum(beta=-0.1), "beta must be a finite number >= 0"),
    (lambda: Momentum(beta=1), "beta must be in [0, 1)"),
    (lambda: Adam(beta1=1.0), "beta1 must be in [0, 1)"),
    (lambda: Adam(beta2=1.5), "beta2 must be in [0, 1)"),
    (lambda: Adam(eps=0), "eps must be a finite number > 0"),
])
def test_optimizer_bad_hyperparameters(make, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        make()


def test_optimizer_bad_grads():
    with pytest.raises(ValueError, match="grads must have the keys of params"):
        SGD().step({"w": np.ones(2)}, {"x": np.ones(2)})
    with pytest.raises(ValueError, match=r"grads\['w'\] must have shape \(2,\)"):
        Adam().step({"w": np.ones(2)}, {"w": np.ones((2, 1))})
    with pytest.raises(FloatingPointError, match=r"grads\['w'\] is not finite"):
        Adam().step({"w": np.ones(2)}, {"w": np.array([1.0, np.nan])})
    with pytest.raises(ValueError, match="optimizer state is missing"):
        Momentum().load_state_dict({"lr": 0.1, "t": 1})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_by_global_norm(dtype):
    rng = np.random.default_rng(0)
    grads = {"a": rng.standard_normal((3, 4)).astype(dtype), "b": {"c": rng.standard_normal(5).astype(dtype)}}
    before = {k: v.copy() for k, v in flatten_tree(grads).items()}
    norm = global_norm(grads)
    assert clip_by_global_norm(grads, norm * 2) == norm  # below: unchanged
    assert all(np.array_equal(before[k], v) for k, v in flatten_tree(grads).items())
    assert clip_by_global_norm(grads, norm / 3) == pytest.approx(norm)  # above: scaled to the limit, same direction
    assert global_norm(grads) == pytest.approx(norm / 3, rel=1e-6)
    for k, v in flatten_tree(grads).items():
        assert v.dtype == dtype
        np.testing.assert_allclose(v, before[k] / 3, rtol=1e-6)


def test_clipping_at_the_limit_not_twice_the_limit():
    "Norm 5 clipped to 4 (a clip at twice the limit, 8, would leave it); components in (c, 2c] are clipped to c"
    g = {"a": np.array([3.0, 0.0]), "b": np.array([4.0])}
    assert clip_by_global_norm(g, 4.0) == 5.0
    assert global_norm(g) == pytest.approx(4.0)
    np.testing.assert_allclose(g["a"], [2.4, 0.0])
    g = {"a": np.array([3.0, 0.0]), "b": np.array([4.0])}
    assert clip_by_global_norm(g, 5.0) == 5.0  # exactly at the limit: unchanged
    np.testing.assert_array_equal(g["a"], [3.0, 0.0])
    g = {"w": np.array([1.5, -1.9, 1.0, -0.3, 2.5])}
    assert clip_by_value(g, 1.0) == 3  # 1.5, -1.9 and 2.5 are above the limit; 1.0 is at it
    np.testing.assert_array_equal(g["w"], [1.0, -1.0, 1.0, -0.3, 1.0])
    p, grads = {"w": np.zeros(2)}, {"w": np.array([3.0, 4.0])}  # through `update`: the step applied is clipped
    assert update(p, grads, SGD(1.0), clip_norm=4.0) == 5.0
    np.testing.assert_allclose(p["w"], [-2.4, -3.2])
    p, grads = {"w": np.zeros(2)}, {"w": np.array([1.5, -0.5])}
    update(p, grads, SGD(1.0), clip_norm=None, clip_value=1.0)
    np.testing.assert_array_equal(p["w"], [-1.0, 0.5])


def test_clip_by_value():
    grads = {"w": np.array([[-5.0, 0.2], [0.7, 3.0]]), "b": np.array([0.1])}
    assert clip_by_value(grads, 0.5) == 3
    np.testing.assert_array_equal(grads["w"], [[-0.5, 0.2], [0.5, 0.5]])
    np.testing.assert_array_equal(grads["b"], [0.1])
    assert clip_by_value(grads, 0.5) == 0


@pytest.mark.parametrize("call, message", [
    (lambda g: clip_by_global_norm(g, -1.0), "max_norm must be a finite number > 0"),
    (lambda g: clip_by_global_norm(g, None), "max_norm must be a finite number > 0"),
    (lambda g: clip_by_value(g, 0), "limit must be a finite number > 0"),
    (lambda g: clip_by_value(g, float("nan")), "limit must be a finite number > 0"),
])
def test_clipping_bad_limits(call, message):
    with pytest.raises(ValueError, match=message):
        call({"w": np.ones(2)})


def test_update_clips_then_steps():
    params, grads = {"w": np.zeros(2)}, {"w": np.array([30.0, 40.0])}
    assert update(params, grads, SGD(1.0), clip_norm=5.0) == 50.0
    np.testing.assert_allclose(params["w"], [-3.0, -4.0])
    params, grads = {"w": np.zeros(2)}, {"w": np.array([30.0, -0.5])}
    update(params, grads, SGD(1.0), clip_norm=None, clip_value=1.0)
    np.testing.assert_allclose(params["w"], [-1.0, 0.5])
    with pytest.raises(FloatingPointError, match="gradients are not finite"):
        update({"w": np.zeros(1)}, {"w": np.array([np.inf])}, SGD())


def test_model_gradient_check_float64():
    model = init_model(6, units=4, seed=3, dtype="float64")
    rng = np.random.default_rng(1)
    x, y, h0 = rng.integers(0, 6, (2, 5)), rng.integers(0, 6, (2, 5)), rng.standard_normal((2, 4)) * 0.3

    def f(params):
        model.params = params
        logits, cache, _ = forward(model, x, h0)
        loss, dlogits = compute_loss(logits, y)
        return loss, backward(model, dlogits, cache)
    errors = gradient_check(f, model.params)
    assert len(errors) == 5 and max(errors.values()) < 1e-6, errors


def test_forward_carries_state_exactly():
    model = init_model(V, units=16, seed=0, dtype="float64")
    x = IDS[:40].reshape(2, 20)
    logits, _, h = forward(model, x)
    a, _, ha = forward(model, x[:, :7])
    b, _, hb = forward(model, x[:, 7:], ha)
    np.testing.assert_allclose(np.concatenate([a, b], 1), logits, rtol=1e-12)
    np.testing.assert_allclose(hb, h, rtol=1e-12)
    dlogits = compute_loss(logits, x)[1]
    before = flatten_tree(backward(model, dlogits, forward(model, x)[1]))
    logits, cache, h = forward(model, x)
    h[:] = 123.0  # the returned state is a copy: changing it leaves the cache (which backward reads) alone
    after = flatten_tree(backward(model, dlogits, cache))
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_model_bad_input():
    model = init_model(V, units=8)
    with pytest.raises(ValueError, match="x must be a 2-D integer array"):
        forward(model, np.zeros((2, 3, V)))
    with pytest.raises(ValueError, match="x must hold token ids"):
        forward(model, np.array([[0, V]]))
    with pytest.raises(ValueError, match="return_sequences=True"):
        CharRNN(V, SimpleRNN(8, return_sequences=False))
    with pytest.raises(ValueError, match="vocab_size must be an integer >= 1"):
        CharRNN(0)
    with pytest.raises(ValueError, match="layer must have a final_state"):
        final_state(object(), cache=None)


def test_get_data_maps_unseen_characters():
    data = get_data(Corpus("toy", "abcabc", "abz"))
    assert data.vocab.unknown == "\ufffd" and len(data.vocab) == 4
    assert data.valid[-1] == data.vocab.unknown_id
    assert get_data(Corpus("toy", "abcabc", "cab")).vocab.unknown is None


def test_evaluate():
    model = init_model(V, units=16, seed=0)
    ids = IDS[:501]
    e1, e2 = evaluate(model, ids, batch_size=3, seq_len=11), evaluate(model, ids, batch_size=3, seq_len=500)
    assert e1.n == 500 and e1.nats == pytest.approx(e2.nats, rel=1e-5)
    assert e1.bits_per_char == pytest.approx(e1.nats / math.log(2))
    assert abs(evaluate(model, ids).nats - math.log(V)) < 0.2  # untrained: about uniform
    with pytest.raises(ValueError, match="at least 2 ids"):
        evaluate(model, ids[:1])
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        evaluate(model, ids, batch_size=0)
    with pytest.raises(ValueError, match="ids must be a 1-D array of integers"):
        evaluate(model, ids.astype(float))


def test_a_tiny_training_run_learns():
    model = init_model(V, units=32, seed=0)
    tr = Trainer(model, IDS[:2000], IDS[2000:2500], Adam(1e-2), batch_size=8, seq_len=20, eval_every=50, seed=0)
    first = evaluate(model, IDS[2000:2500]).nats
    tr.fit(150)
    assert tr.step == 150 and tr.epoch >= 1 and len(tr.log["train"]) == 150 and len(tr.log["valid"]) == 3
    assert tr.log["valid"][-1][1] < first - 1.5  # a repetitive text: far below the start
    assert np.mean([r[1] for r in tr.log["train"][-10:]]) < np.mean([r[1] for r in tr.log["train"][:10]]) - 1.5
    assert sample(model, VOCAB, "the quick ", 20, temperature=0) == "brown fox jumps over"


def make_trainer(weights_seed=0, layer=None, **kw):
    model = CharRNN(V, layer if layer is not None else SimpleRNN(16, seed=weights_seed), seed=weights_seed)
    args = dict(optimizer=Momentum(0.05), batch_size=4, seq_len=25, clip_norm=1.0, clip_value=0.5, eval_every=7, seed=5)
    return Trainer(model, IDS[:1200], IDS[1200:1500], **{**args, **kw})


def assert_same_run(a, b):
    pa, pb = flatten_tree(a.model.params), flatten_tree(b.model.params)
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert a.log == b.log and (a.step, a.epoch, a.k, a.offset) == (b.step, b.epoch, b.k, b.offset)


@pytest.mark.parametrize("stop", [1, 11, 12, 13, 29])
def test_resume_is_bit_identical(tmp_path, stop):
    full = make_trainer().fit(40)  # 11 windows per epoch: crosses three epoch boundaries
    ckpt = tmp_path / "run.npz"
    make_trainer().fit(stop, checkpoint=ckpt)
    resumed = load_checkpoint(ckpt, make_trainer(weights_seed=9)).fit(40)
    assert full.epoch >= 3
    assert_same_run(full, resumed)
    assert np.array_equal(full.state, resumed.state)


def test_resume_with_periodic_checkpoints_and_adam(tmp_path):
    ckpt = tmp_path / "run.npz"
    full = make_trainer(optimizer=Adam(3e-3)).fit(30)
    make_trainer(optimizer=Adam(3e-3)).fit(17, checkpoint=ckpt, checkpoint_every=5)  # last save at 17
    arrays, meta = read_checkpoint(ckpt)
    assert meta["step"] == 17 and "state/0" in arrays and "optimizer/m/rnn/kernel" in arrays
    resumed = load_checkpoint(ckpt, make_trainer(optimizer=Adam(3e-3))).fit(30, checkpoint=ckpt)
    assert_same_run(full, resumed)
    assert read_checkpoint(ckpt)[1]["step"] == 30
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


class TwoStateRNN:
    "A test double with a tuple state (h, c), like an LSTM's: a SimpleRNN whose second state is a running sum of h."
    def __init__(self, units, seed=0):
        self.inner, self.return_sequences = SimpleRNN(units, seed=seed), True

    def build(self, input_dim):
        self.inner.build(input_dim)
        return self

    output_dim = property(lambda self: self.inner.units)
    params = property(lambda self: self.inner.params, lambda self, p: setattr(self.inner, "params", p))

    def forward(self, x, h0=None):
        h, c = (None, None) if h0 is None else h0
        out, cache = self.inner.forward(x, h)
        c_last = (0 if c is None else c) + out.sum(1)
        return out, {"inner": cache, "c_last": c_last}

    def backward(self, dout, cache):
        return self.inner.backward(dout, cache["inner"])

    def final_state(self, cache):
        return cache["inner"]["hs"][-1], cache["c_last"]

    def get_config(self):
        return {"units": self.inner.units}


def test_layers_with_tuple_states_train_and_resume(tmp_path):
    full = make_trainer(layer=TwoStateRNN(8)).fit(20)
    assert isinstance(full.state, tuple) and len(full.state) == 2
    make_trainer(layer=TwoStateRNN(8)).fit(6, checkpoint=tmp_path / "c.npz")
    resumed = load_checkpoint(tmp_path / "c.npz", make_trainer(layer=TwoStateRNN(8, seed=3))).fit(20)
    assert_same_run(full, resumed)
    assert all(np.array_equal(a, b) for a, b in zip(full.state, resumed.state))


def test_stacked_lstm_state_round_trips_as_is(tmp_path):
    "A stack's state (a list of per-layer states, an LSTM's an (h, c) tuple) comes back from a checkpoint as saved."
    def make_stacked(seed=0):
        layer = StackedRNN([LSTM(6, seed=seed), LSTM(6, seed=seed + 1), GRU(6, seed=seed + 2)]).build(V)
        return make_trainer(layer=layer)
    full = make_stacked().fit(20)
    half = make_stacked().fit(6, checkpoint=tmp_path / "c.npz")
    arrays, meta = read_checkpoint(tmp_path / "c.npz")
    assert sorted(k for k in arrays if k.startswith("state/")) == [f"state/{i}" for i in range(5)]
    resumed = load_checkpoint(tmp_path / "c.npz", make_stacked(seed=7))
    assert type(resumed.state) is list and [type(s) for s in resumed.state] == [tuple, tuple, np.ndarray]
    for a, b in zip(half.state, resumed.state):
        if isinstance(a, tuple): assert len(b) == 2 and all(np.array_equal(x, y) for x, y in zip(a, b))
        else: assert np.array_equal(a, b)
    resumed.fit(20)  # the stack takes the loaded state as it is
    assert_same_run(full, resumed)


def test_learning_rate_is_part_of_the_configuration(tmp_path):
    "A checkpoint records the optimizer's hyperparameters; another learning rate is refused, the same one restores it."
    trainer = make_trainer(optimizer=Adam(3e-3))
    assert trainer.config()["lr"] == 3e-3 and trainer.config()["beta2"] == 0.999
    trainer.fit(4, checkpoint=tmp_path / "c.npz")
    assert read_checkpoint(tmp_path / "c.npz")[1]["config"]["lr"] == 3e-3
    with pytest.raises(ValueError, match="lr is 0.01 here, 0.003 in the checkpoint"):
        load_checkpoint(tmp_path / "c.npz", make_trainer(optimizer=Adam(1e-2)))
    resumed = load_checkpoint(tmp_path / "c.npz", make_trainer(optimizer=Adam(3e-3)))
    assert resumed.optimizer.lr == 3e-3 and resumed.config() == trainer.config()


def test_checkpoint_errors(tmp_path):
    path = tmp_path / "c.npz"
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(path, make_trainer())
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="is not a valid checkpoint"):
        load_checkpoint(path, make_trainer())
    np.savez(path, x=np.zeros(2))
    with pytest.raises(ValueError, match="is not a valid checkpoint"):
        read_checkpoint(path)
    np.savez(path, **{"meta.json": np.frombuffer(b'{"format": "other"}', np.uint8)})
    with pytest.raises(FormatError, match="is not a checkpoint .expected format 'rnn-tutorial.numpy-train-checkpoint'"):
        read_checkpoint(path)
    make_trainer().fit(3, checkpoint=path)
    with pytest.raises(ValueError, match="seq_len is 20 here, 25 in the checkpoint"):
        load_checkpoint(path, make_trainer(seq_len=20))
    with pytest.raises(ValueError, match="train_sha256"):
        load_checkpoint(path, Trainer(make_trainer().model, IDS[1:1201], IDS[1200:1500], Momentum(0.05), 4, 25,
                                      clip_norm=1.0, clip_value=0.5, eval_every=7, seed=5))
    with pytest.raises(ValueError, match="holds parameters"):
        load_checkpoint(path, make_trainer(layer=SimpleRNN(12)))
    with pytest.raises(ValueError, match="optimizer is 'Adam' here"):
        load_checkpoint(path, make_trainer(optimizer=Adam()))


def test_trainer_bad_arguments():
    model = init_model(V, units=8)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        Trainer(model, IDS, batch_size=0)
    with pytest.raises(ValueError, match="seq_len must be an integer >= 1"):
        Trainer(model, IDS, seq_len=2.5)
    with pytest.raises(ValueError, match="clip_norm must be a finite number > 0"):
        Trainer(model, IDS, clip_norm=-1)
    with pytest.raises(ValueError, match=r"train_ids must hold ids in \[0, "):
        Trainer(model, IDS + V)
    with pytest.raises(ValueError, match="not enough data"):
        Trainer(model, IDS[:100], batch_size=64, seq_len=100)
    with pytest.raises(ValueError, match="steps must be an integer >= 0"):
        Trainer(model, IDS, batch_size=4, seq_len=10).fit(-1)


def test_sampling_properties():
    model = init_model(V, units=16, seed=2)
    greedy = sample(model, VOCAB, "the ", 30, temperature=0)
    assert len(greedy) == 30 and set(greedy) <= set(VOCAB.chars)
    assert sample(model, VOCAB, "the ", 30, temperature=1e-5, seed=4) == greedy
    assert sample(model, VOCAB, "the ", 30, top_k=1, seed=5) == greedy
    assert sample(model, VOCAB, "the ", 30, seed=6) == sample(model, VOCAB, "the ", 30, seed=6)
    assert sample(model, VOCAB, "the ", 0) == ""
    # greedy is the argmax of predict at every step
    text = "the "
    for _ in range(5):
        p, _ = predict(model, VOCAB.encode(text))
        text += VOCAB.decode([int(np.argmax(p))])
    assert text[4:] == greedy[:5]


def test_next_id_temperature_and_top_k():
    z = np.array([1.0, 4.0, 3.0, 0.0, 2.0])
    draws = lambda **kw: [sample_next_id(z, rng=np.random.default_rng(s), **kw) for s in range(400)]
    assert set(draws(temperature=1.0, top_k=3)) == {1, 2, 4}
    assert set(draws(temperature=1e-3, top_k=None)) == {1}
    assert set(draws(temperature=1.0, top_k=None)) == {0, 1, 2, 3, 4}
    hot = np.bincount(draws(temperature=3.0, top_k=None), minlength=5)
    cold = np.bincount(draws(temperature=0.5, top_k=None), minlength=5)
    assert cold[1] > hot[1]  # lower temperature: the top character more often


@pytest.mark.parametrize("kw, message", [
    (dict(prime=""), "prime must be a non-empty str"),
    (dict(prime="é"), "character 'é'"),
    (dict(length=-1), "length must be an integer >= 0"),
    (dict(temperature=-0.5), "temperature must be a finite number >= 0"),
    (dict(temperature=float("nan")), "temperature must be a finite number >= 0"),
    (dict(top_k=0), "top_k must be an integer >= 1"),
])
def test_sampling_bad_input(kw, message):
    model = init_model(V, units=8)
    with pytest.raises(ValueError, match=message):
        sample(model, VOCAB, **{"prime": "the", "length": 5, **kw})


def test_save_and_load_model(tmp_path):
    model = init_model(V, units=12, seed=4)
    model.params["dense"]["bias"][:] = 0.25
    save_model(tmp_path / "m.npz", model, VOCAB)
    loaded, vocab = load_model(tmp_path / "m.npz")
    assert vocab == VOCAB and loaded.count_params() == model.count_params()
    pa, pb = flatten_tree(model.params), flatten_tree(loaded.params)
    assert all(np.array_equal(pa[k], pb[k]) and pa[k].dtype == pb[k].dtype for k in pa)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        assert all(f[k].dtype != object for k in f.files)
    with pytest.raises(FileNotFoundError, match="no model file"):
        load_model(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(ValueError, match="is not a valid model file"):
        load_model(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="vocab must have the model's"):
        save_model(tmp_path / "m2.npz", model, Vocab("ab"))


MODEL_CHANGES = [  # (what a crafted model file changes, the message): the layer is named in the file's metadata
    (dict(layer="save_params"),
     "field layer must be one of 'SimpleRNN', 'LSTM', 'GRU', 'MinGRU', 'MinLSTM', got 'save_params'"),
    (dict(layer="__import__"), "field layer must be one of"),
    (dict(layer="os.system"), "field layer must be one of"),
    (dict(layer="Optimizer"), "field layer must be one of"),
    (dict(layer=["SimpleRNN"]), "field layer must be one of"),
    (dict(layer_config="units=12"), "field layer_config must be of type dict"),
    (dict(drop="activation"), "model file .field layer_config.: field 'activation' is missing"),
    (dict(extra={"__class__": "x"}), "unknown field.s. '__class__'"),
    (dict(extra={"units": "12"}), "field units must be an integer >= 1, got '12'"),
    (dict(extra={"units": True}), "field units must be an integer >= 1, got True"),
    (dict(extra={"units": 0}), "field units must be an integer >= 1, got 0"),
    (dict(extra={"units": 10**9}), r"array params/rnn/kernel must have shape \(28, 1000000000\)"),
    (dict(extra={"return_sequences": 1}), "field return_sequences must be of type bool"),
    (dict(extra={"return_sequences": False}), "return_sequences must be true"),
    (dict(extra={"activation": "os.system"}), "field activation must be one of 'tanh', 'sigmoid', 'relu'"),
    (dict(extra={"dtype": "object"}), "field dtype must be one of"),
    (dict(extra={"dtype": "float64"}), "array params/rnn/kernel must be float64, as field layer_config says"),
    (dict(extra={"seed": -1}), "field seed must be None or a non-negative integer"),
    (dict(vocab_size="28"), "field vocab_size must be an integer >= 1, got '28'"),
    (dict(vocab_size=29), "field vocab has 28 characters, but field vocab_size is 29"),
    (dict(vocab=Vocab("abc").to_dict(), vocab_size=3), r"array params/rnn/kernel must have shape \(3, 12\)"),
    (dict(vocab={"format": "rnn-tutorial.vocab", "version": 1, "chars": "ba", "unknown": None}), "field vocab: "),
    (dict(vocab="abc"), "field vocab must be of type dict"),
    (dict(seed=-2), "field seed must be an integer >= 0, got -2"),
    (dict(seed=None), "field seed must be an integer >= 0, got None"),
    (dict(top="missing"), "field 'vocab_size' is missing"),
    (dict(top="unknown"), "unknown field.s. 'callback'"),
]


@pytest.mark.parametrize("change, message", MODEL_CHANGES, ids=[str(c) for c, _ in MODEL_CHANGES])
def test_load_model_refuses_crafted_metadata(tmp_path, change, message):
    "The layer named by the file is looked up in an explicit table, every field checked; anything else is a FormatError"
    path = tmp_path / "m.npz"
    save_model(path, init_model(V, units=12), VOCAB)
    arrays, meta = read_npz(path, NUMPY_MODEL_FORMAT, noun="model file")
    change = dict(change)
    meta["layer_config"] = {**meta["layer_config"], **change.pop("extra", {})}
    meta["layer_config"].pop(change.pop("drop", None), None)
    top = change.pop("top", None)
    if top == "missing": del meta["vocab_size"]
    if top == "unknown": meta["callback"] = "os.system"
    meta.update(change)
    write_npz(path, arrays, meta)
    with pytest.raises(FormatError, match=message) as e:
        load_model(path)
    assert str(e.value).startswith(f"{path} is not a valid model file") and "\n" not in str(e.value)


@pytest.mark.parametrize("name, array, message", [
    ("params/rnn/kernel", np.full((V, 12), np.nan, np.float32), "params/rnn/kernel must be finite"),
    ("params/dense/bias", np.array([np.inf] * V, np.float32), "params/dense/bias must be finite"),
    ("params/dense/kernel", np.zeros((12, V + 1), np.float32), r"params/dense/kernel must have shape \(12, 28\)"),
    ("params/rnn/recurrent_kernel", np.zeros((12, 12), np.int32), "must be a floating-point array"),
    ("params/rnn/bias", np.zeros(12, np.float64), "params/rnn/bias must be float32"),
    ("params/extra", np.zeros(2, np.float32), "unknown array.s. 'params/extra'"),
    ("params/rnn/bias", None, "array.s. 'params/rnn/bias' missing"),
])
def test_load_model_checks_arrays_against_the_configuration(tmp_path, name, array, message):
    path = tmp_path / "m.npz"
    save_model(path, init_model(V, units=12), VOCAB)
    arrays, meta = read_npz(path, NUMPY_MODEL_FORMAT, noun="model file")
    if array is None: del arrays[name]
    else: arrays[name] = array
    write_npz(path, arrays, meta)
    with pytest.raises(FormatError, match=message):
        load_model(path)


def test_a_crafted_model_file_cannot_call_import_or_write(tmp_path, monkeypatch):
    """Loading files that name functions records no import, exec, process or file opened for writing (NumPy reads
    .npy headers with ast.literal_eval, which compiles a literal: that is not recorded)"""
    events, recording = [], [False]
    def hook(event, args):
        if recording[0] and (event in ("import", "os.system", "subprocess.Popen", "os.exec", "os.posix_spawn",
                                       "os.remove", "os.rename", "shutil.rmtree", "exec")
                             or (event == "open" and (len(args) < 2 or args[1] not in ("r", "rb", None)))):
            events.append((event, args))
    import sys
    sys.addaudithook(hook)  # stays for the process; inert unless recording
    save_model(tmp_path / "good.npz", init_model(V, units=6), VOCAB)
    load_model(tmp_path / "good.npz")  # warm up: every module the loader needs is imported now
    arrays, meta = read_npz(tmp_path / "good.npz", NUMPY_MODEL_FORMAT, noun="model file")
    crafted = []
    for i, layer in enumerate(["save_params", "__import__", "os.system", "eval", "SimpleRNN"]):
        config = {**meta["layer_config"], "units": 6} if layer == "SimpleRNN" else meta["layer_config"]
        extra = {"dtype": "numpy.ctypeslib"} if layer == "SimpleRNN" else {}
        write_npz(tmp_path / f"c{i}.npz", arrays, {**meta, "layer": layer, "layer_config": {**config, **extra}})
        crafted.append(tmp_path / f"c{i}.npz")
    before = sorted(tmp_path.iterdir())
    recording[0] = True
    try:
        for path in crafted:
            with pytest.raises(FormatError):
                load_model(path)
    finally:
        recording[0] = False
    assert events == [] and sorted(tmp_path.iterdir()) == before


def test_load_model_accepts_every_layer_it_saves(tmp_path):
    from rnn_tutorial.linear_rnn import MinGRU, MinLSTM
    for layer in (SimpleRNN(5, activation="relu", seed=3), LSTM(5, unit_forget_bias=False), GRU(5, dtype="float64"),
                  MinGRU(5, seed=2, scan="chunked"), MinLSTM(5, dtype="float64")):
        model = init_model(V, layer=layer)
        save_model(tmp_path / "m.npz", model, VOCAB)
        loaded, vocab = load_model(tmp_path / "m.npz")
        assert loaded.layer.get_config() == layer.get_config() and vocab == VOCAB
        pa, pb = flatten_tree(model.params), flatten_tree(loaded.params)
        assert all(np.array_equal(pa[k], pb[k]) and pa[k].dtype == pb[k].dtype for k in pa)


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_load_model_minimal_cells(tmp_path, cell):
    "A minGRU or minLSTM model file (--cell mingru): the same outputs after a load; a kernel of another shape, a \
recurrent kernel, or an unknown scan refused before anything is allocated"
    from rnn_tutorial.numpy_train import NUMPY_LAYERS
    cls = NUMPY_LAYERS[cell]
    model = init_model(V, layer=cls(6, seed=2))
    save_model(tmp_path / "m.npz", model, VOCAB)
    loaded, _ = load_model(tmp_path / "m.npz")
    assert type(loaded.layer) is cls and loaded.layer.get_config() == model.layer.get_config()
    np.testing.assert_array_equal(forward(loaded, IDS[None, :30])[0], forward(model, IDS[None, :30])[0])
    arrays, meta = read_npz(tmp_path / "m.npz", NUMPY_MODEL_FORMAT, noun="model file")
    for name, (a, m), message in [
        ("units", (arrays, {**meta, "layer_config": {**meta["layer_config"], "units": 10**9}}),
         rf"array params/rnn/kernel must have shape \({V}, {cls.gates * 10**9}\)"),
        ("scan", (arrays, {**meta, "layer_config": {**meta["layer_config"], "scan": "os.system"}}),
         "field scan must be one of 'loop', 'chunked'"),
        ("extra", ({**arrays, "params/rnn/recurrent_kernel": np.zeros((6, 6 * cls.gates), np.float32)}, meta),
         "recurrent_kernel"),
    ]:
        write_npz(tmp_path / f"{name}.npz", a, m)
        with pytest.raises(FormatError, match=message):
            load_model(tmp_path / f"{name}.npz")


def test_save_model_refuses_non_finite_weights(tmp_path):
    model = init_model(V, units=4)
    model.params["rnn"]["bias"][0] = np.nan
    with pytest.raises(ValueError, match=r"model must have finite parameters, got NaN or infinite values in \['rnn/b"):
        save_model(tmp_path / "m.npz", model, VOCAB)
    assert not (tmp_path / "m.npz").exists()


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["layer", "layer_config", "vocab_size", "seed", "vocab", "units", "activation", "dtype",
                              "return_sequences", "new"]), value=JSON)
def test_fuzz_model_metadata(tmp_path, field, value):
    "Any JSON in any field: the load succeeds or raises FormatError, nothing else"
    path = tmp_path / "m.npz"
    if not path.exists(): save_model(path, init_model(V, units=4), VOCAB)
    arrays, meta = read_npz(path, NUMPY_MODEL_FORMAT, noun="model file")
    meta = json.loads(json.dumps(meta))
    if field in ("units", "activation", "dtype", "return_sequences"): meta["layer_config"][field] = value
    else: meta[field] = value
    write_npz(tmp_path / "f.npz", arrays, meta)
    try: load_model(tmp_path / "f.npz")
    except FormatError: pass


def test_load_model_gated_layers(tmp_path):
    for cls in (LSTM, GRU):
        model = init_model(V, layer=cls(6, seed=2))
        save_model(tmp_path / "g.npz", model, VOCAB)
        loaded, _ = load_model(tmp_path / "g.npz")
        assert type(loaded.layer) is cls and loaded.layer.get_config() == model.layer.get_config()
        x = IDS[None, :30]
        np.testing.assert_array_equal(forward(loaded, x)[0], forward(model, x)[0])


def test_bits():
    assert bits(math.log(2)) == pytest.approx(1.0)


def test_adam_ignores_a_constant_rescaling_of_the_gradients():
    "Adam divides by the running RMS of the gradient: gradients all multiplied by 1000 give the same steps (eps aside)."
    rng = np.random.default_rng(1)
    gs = [rng.standard_normal(5) for _ in range(10)]
    a, b = {"w": np.zeros(5)}, {"w": np.zeros(5)}
    oa, ob = Adam(0.01, eps=1e-12), Adam(0.01, eps=1e-12)
    for g in gs:
        oa.step(a, {"w": g.copy()})
        ob.step(b, {"w": 1000 * g})
    np.testing.assert_allclose(a["w"], b["w"], rtol=1e-9, atol=1e-12)


def checkpoint_meta(path):
    arrays, meta = read_npz(path, "rnn-tutorial.numpy-train-checkpoint", 2, "checkpoint")
    return arrays, json.loads(json.dumps(meta))


CHECKPOINT_CHANGES = [  # (a change to a valid checkpoint's metadata, the message)
    (lambda m: m.update(step=-1), "field step must be an integer >= 0, got -1"),
    (lambda m: m.update(step="3"), "field step must be an integer >= 0, got '3'"),
    (lambda m: m.update(step=2), "field step is 2, but its log holds 3 steps"),
    (lambda m: m.update(epoch=1.5), "field epoch must be an integer >= 0"),
    (lambda m: m.update(k=True), "field k must be an integer >= 0, got True"),
    (lambda m: m.update(k=10**6), "field k must be <= 11 windows"),
    (lambda m: m.update(offset=25), "field offset must be < seq_len=25"),
    (lambda m: m.pop("rng"), "field 'rng' is missing"),
    (lambda m: m.update(extra=1), "unknown field.s. 'extra'"),
    (lambda m: m.update(config=[1]), "field config must be of type dict"),
    (lambda m: m.update(rng={"bit_generator": "MT19937"}), "field rng is not a PCG64 state"),
    (lambda m: m["rng"]["state"].update(state="x"), "field rng is not a PCG64 state"),
    (lambda m: m.update(state={"tuple": [0, 7]}), "field state names the array state/7, missing or used twice"),
    (lambda m: m.update(state={"tuple": [0, 0]}), "field state names the array state/0, missing or used twice"),
    (lambda m: m.update(state={"eval": [0]}), "field state must be null, an index >= 0"),
    (lambda m: m.update(state=None), r"arrays \['state/0'\] are not part of the state"),
    (lambda m: m.update(log={"train": []}), "field log must be"),
    (lambda m: m["log"]["train"][0].__setitem__(1, "x"), "field log must be"),
    (lambda m: m.update(optimizer=[]), "field optimizer must be of type dict"),
    (lambda m: m["optimizer"].update(lr=10.0), "field optimizer.: field lr must be 0.05, as in this run, got 10.0"),
    (lambda m: m["optimizer"].pop("t"), "field 't' is missing"),
    (lambda m: m["optimizer"].update(t=-3), "field t must be an integer >= 0"),
    (lambda m: m["optimizer"].update(__class__="x"), "unknown field.s. '__class__'"),
]


@pytest.mark.parametrize("change, message", CHECKPOINT_CHANGES, ids=[m for _, m in CHECKPOINT_CHANGES])
def test_load_checkpoint_refuses_bad_metadata(tmp_path, change, message):
    "Wrong types, negative or inconsistent numbers, missing or unknown fields: a FormatError naming file and field"
    path = tmp_path / "c.npz"
    make_trainer().fit(3, checkpoint=path)
    arrays, meta = checkpoint_meta(path)
    change(meta)
    write_npz(path, arrays, meta)
    trainer = make_trainer(weights_seed=1)
    before = {k: v.copy() for k, v in flatten_tree(trainer.model.params).items()}
    with pytest.raises(FormatError, match=message) as e:
        load_checkpoint(path, trainer)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)
    assert trainer.step == 0 and trainer.log == {"train": [], "valid": []} and trainer.state is None
    assert all(np.array_equal(v, before[k]) for k, v in flatten_tree(trainer.model.params).items())


@pytest.mark.parametrize("name, array, message", [
    ("state/0", np.full((4, 16), np.nan, np.float32), "array state/0 must be finite"),
    ("state/0", np.zeros((3, 16), np.float32), r"array state/0 must have shape \(4, n\)"),
    ("params/rnn/kernel", np.full((V, 16), np.inf, np.float32), "params/rnn/kernel must be finite"),
    ("params/dense/bias", np.zeros(V, np.float64), "array params/dense/bias must be float32"),
    ("optimizer/m/rnn/bias", np.zeros(16, np.float32), "unknown array.s. .optimizer/m/rnn/bias."),
    ("code", np.zeros(1, np.float32), "unknown array.s. 'code'"),
])
def test_load_checkpoint_checks_arrays(tmp_path, name, array, message):
    path = tmp_path / "c.npz"
    make_trainer().fit(3, checkpoint=path)
    arrays, meta = checkpoint_meta(path)
    arrays[name] = array
    write_npz(path, arrays, meta)
    trainer = make_trainer(weights_seed=1)
    before = {k: v.copy() for k, v in flatten_tree(trainer.model.params).items()}
    with pytest.raises(FormatError, match=message):
        load_checkpoint(path, trainer)
    assert all(np.array_equal(v, before[k]) for k, v in flatten_tree(trainer.model.params).items())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["config", "step", "epoch", "k", "offset", "state", "rng", "log", "optimizer", "new"]),
       value=JSON)
def test_fuzz_checkpoint_metadata(tmp_path, field, value):
    "Any JSON in any field of a checkpoint: the load succeeds or raises FormatError, nothing else"
    path = tmp_path / "c.npz"
    if not path.exists(): make_trainer().fit(2, checkpoint=path)
    arrays, meta = checkpoint_meta(path)
    meta[field] = value
    write_npz(tmp_path / "f.npz", arrays, meta)
    try: load_checkpoint(tmp_path / "f.npz", make_trainer())
    except FormatError: pass


def test_tiny_temperatures_are_greedy():
    "logits / temperature overflows: the draw is among the largest scores (ties split), never the last id or NaN"
    z = np.array([0.0, 7e8, 7e8, -1e9, 3.0])
    for t in (1e-300, 1e-320):
        assert {sample_next_id(z, t, None, np.random.default_rng(s)) for s in range(50)} == {1, 2}
    z = np.array([1.0, 5.0, 2.0, -1e12, 4.0])
    for t in (1e-300, 1e-320, 1e-12):
        assert all(sample_next_id(z, t, k, np.random.default_rng(s)) == 1 for s in range(20) for k in (None, 3))
    assert sample_next_id(np.array([2.0, -np.inf, 1.0]), 1e-300, None, np.random.default_rng(0)) == 0


@pytest.mark.parametrize("temperature, logits, message", [
    (-1.0, [1.0, 2.0], "temperature must be a finite number >= 0.0, got -1.0"),
    (float("nan"), [1.0, 2.0], "temperature must be a finite number >= 0"),
    (float("inf"), [1.0, 2.0], "temperature must be a finite number >= 0"),
    ("1", [1.0, 2.0], "temperature must be a finite number >= 0"),
    (1.0, [1.0, float("nan")], "logits must be a non-empty 1-D array of finite scores"),
    (1.0, [float("inf"), 1.0], "logits must be a non-empty 1-D array of finite scores"),
    (1.0, [-float("inf")] * 2, "logits must be a non-empty 1-D array of finite scores"),
    (1.0, [], "logits must be a non-empty 1-D array of finite scores"),
    (1.0, [[1.0, 2.0]], "logits must be a non-empty 1-D array of finite scores"),
])
def test_sample_next_id_bad_input(temperature, logits, message):
    with pytest.raises(ValueError, match=message):
        sample_next_id(np.array(logits), temperature, None, np.random.default_rng(0))


def test_char_rnn_refuses_a_layer_built_for_another_input_size():
    with pytest.raises(ValueError, match=f"layer must be built for inputs of size vocab_size={V}, got a layer "
                                         f"built for inputs of size {V + 3}"):
        CharRNN(V, SimpleRNN(8).build(V + 3))
    with pytest.raises(ValueError, match="layer must be built for inputs of size"):
        CharRNN(V, StackedRNN([GRU(4), LSTM(4)]).build(V - 1))
    assert CharRNN(V, StackedRNN([GRU(4), LSTM(4)]).build(V)).count_params() > 0


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True, None])
def test_seeds_get_our_message(seed):
    with pytest.raises(ValueError, match=f"seed must be an integer >= 0, got {seed!r}"):
        init_model(V, units=4, seed=seed)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        CharRNN(V, SimpleRNN(4), seed=seed)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        Trainer(init_model(V, units=4), IDS, batch_size=2, seq_len=5, seed=seed)
    if seed is not None:
        with pytest.raises(ValueError, match=f"seed must be None or a non-negative integer, got {seed!r}"):
            sample(init_model(V, units=4), VOCAB, "the", 3, seed=seed)


def test_trainer_step_and_evaluation_run_on_the_thread_policy(monkeypatch):
    """The trainer's step and the held-out evaluation run NumPy's BLAS on `BLAS_THREADS` threads (one), whatever the
    process had set, which is restored afterwards."""
    from threadpoolctl import ThreadpoolController

    import rnn_tutorial.numpy_train as nt
    blas = ThreadpoolController().select(user_api="blas")
    if not blas.lib_controllers: pytest.skip("no BLAS found by threadpoolctl")
    seen, real_forward = [], nt.forward
    def spy(*args, **kwargs):
        seen.append(ThreadpoolController().select(user_api="blas").info()[0]["num_threads"])
        return real_forward(*args, **kwargs)
    monkeypatch.setattr(nt, "forward", spy)
    with nt.blas_threads(2):  # as if the environment had given the BLAS two threads
        tr = Trainer(init_model(V, 8, seed=0), IDS, IDS[:200], batch_size=2, seq_len=10, eval_every=1, seed=0)
        tr.train_step()
        assert ThreadpoolController().select(user_api="blas").info()[0]["num_threads"] == 2
    assert nt.BLAS_THREADS == 1 and len(seen) >= 2 and set(seen) == {1}  # the step's forward and the evaluation's
    with pytest.raises(ValueError, match="threads must be an integer >= 1, got 0"):
        with nt.blas_threads(0): pass
