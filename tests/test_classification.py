("Classification (`rnn_tutorial.apps.classification`): the generated messages, word ids, metrics against hand-computed "
 "cases, the NumPy bag of words, and the recurrent classifier's shapes, masking and errors.")
import numpy as np
import pytest

from rnn_tutorial.apps.classification import (CLASS_NAMES, KIND_NAMES, BagOfWords, classification_metrics, encode_texts,
                                              plot_confusion, predict_proba, prose_sentences, rnn_classifier,
                                              spam_messages, tokenize, word_vocab)
from rnn_tutorial.data import pad_sequences
from rnn_tutorial.tf_setup import configure_tensorflow, import_tensorflow, quiet_stderr

tf, keras = import_tensorflow()
configure_tensorflow()


# --- data -----------------------------------------------------------------------------------------------------

def test_prose_split_is_disjoint_and_seeded():
    tr, te = prose_sentences("train"), prose_sentences("test")
    assert not set(tr) & set(te) and len(tr) > 3 * len(te) > 0
    assert prose_sentences("train") == tr
    assert prose_sentences("train", seed=1) != tr
    with pytest.raises(ValueError, match="split must be"): prose_sentences("valid")


def test_spam_messages_labels_kinds_and_determinism():
    texts, y, kinds = spam_messages(300, seed=3)
    assert len(texts) == 300 and y.shape == kinds.shape == (300,)
    assert set(kinds.tolist()) == {0, 1, 2} and len(KIND_NAMES) == 3 and CLASS_NAMES == ("ham", "spam")
    np.testing.assert_array_equal(y, kinds == 2)
    assert spam_messages(300, seed=3)[0] == texts and spam_messages(300, seed=4)[0] != texts
    train_pool, test_pool = set(prose_sentences("train")), set(prose_sentences("test"))
    test_texts, _, test_kinds = spam_messages(200, "test", seed=3)
    for t, k in zip(test_texts, test_kinds):  # plain prose in the test set comes from the test pool only
        if k == 0: assert all(s in test_pool and s not in train_pool for s in t.split(". "))
    for t, k in zip(texts, kinds):  # a negation in every offer message, in one of its two clauses
        if k > 0: assert sum(w in ("not", "never") for w in tokenize(t)) >= 1
    with pytest.raises(ValueError, match="n must be"): spam_messages(0)
    with pytest.raises(ValueError, match="split must be"): spam_messages(5, split="dev")


def test_word_vocab_and_encode_texts():
    vocab = word_vocab(["a b b", "b c c", "a"], min_count=2)
    assert vocab == {"<pad>": 0, "<unk>": 1, "b": 2, "a": 3, "c": 4}
    ids, mask = encode_texts(["b a", "c b z a"], vocab)
    np.testing.assert_array_equal(ids, [[2, 3, 0, 0], [4, 2, 1, 3]])
    np.testing.assert_array_equal(mask, [[1, 1, 0, 0], [1, 1, 1, 1]])
    assert ids.dtype == np.int32
    assert encode_texts(["b"], vocab, max_len=6)[0].shape == (1, 6)
    with pytest.raises(ValueError, match="max_len"): encode_texts(["a b c"], vocab, max_len=2)
    with pytest.raises(ValueError, match=r"texts\[1\] must hold at least one word"): encode_texts(["a", "42 !"], vocab)
    with pytest.raises(ValueError, match="texts must be"): encode_texts("a b", vocab)
    with pytest.raises(ValueError, match="vocab must be"): encode_texts(["a"], {"a": 0})
    with pytest.raises(ValueError, match="min_count"): word_vocab(["a"], min_count=0)
    with pytest.raises(ValueError, match="texts must be"): word_vocab([])
    with pytest.raises(ValueError, match="text must be a str"): tokenize(3)


# --- metrics --------------------------------------------------------------------------------------------------

def test_metrics_hand_computed_three_classes():
    m = classification_metrics([0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 0, 0], 3)
    np.testing.assert_array_equal(m["confusion"], [[1, 1, 0], [1, 2, 0], [1, 0, 0]])
    assert m["accuracy"] == pytest.approx(0.5)
    np.testing.assert_allclose(m["precision"], [1 / 3, 2 / 3, 0])
    np.testing.assert_allclose(m["recall"], [1 / 2, 2 / 3, 0])
    np.testing.assert_allclose(m["f1"], [0.4, 2 / 3, 0])
    assert m["macro_f1"] == pytest.approx((0.4 + 2 / 3) / 3)


def test_metrics_binary_spam_case():
    # 4 spam: 3 caught; 6 ham: 1 flagged. tp=3, fp=1, fn=1, tn=5
    y_true = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    y_pred = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0])
    m = classification_metrics(y_true, y_pred, 2)
    np.testing.assert_array_equal(m["confusion"], [[5, 1], [1, 3]])
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["precision"][1] == pytest.approx(3 / 4) and m["recall"][1] == pytest.approx(3 / 4)
    assert m["precision"][0] == pytest.approx(5 / 6) and m["recall"][0] == pytest.approx(5 / 6)
    perfect = classification_metrics(y_true, y_true, 2)
    assert perfect["accuracy"] == 1.0 and perfect["macro_f1"] == 1.0
    assert perfect["confusion"].sum() == 10


def test_metrics_match_brute_force_counts():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    m = classification_metrics(y_true, y_pred, 4)
    for c in range(4):
        tp = np.sum((y_true == c) & (y_pred == c))
        assert m["precision"][c] == pytest.approx(tp / np.sum(y_pred == c))
        assert m["recall"][c] == pytest.approx(tp / np.sum(y_true == c))
        for d in range(4): assert m["confusion"][c, d] == np.sum((y_true == c) & (y_pred == d))
    assert m["accuracy"] == pytest.approx(np.mean(y_true == y_pred))


@pytest.mark.parametrize("y_true, y_pred, n, match", [
    ([0, 1], [0, 2], 2, "y_pred must hold class ids in 0..1"),
    ([-1, 1], [0, 1], 2, "y_true must hold class ids"),
    ([0, 1, 1], [0, 1], 2, "same length"),
    ([0.0, 1.0], [0, 1], 2, "integer class ids"),
    ([], [], 2, "non-empty 1-d"),
    ([[0, 1]], [[0, 1]], 2, "non-empty 1-d"),
    ([0, 1], [0, 1], 1, "n_classes must be an integer >= 2"),
    ([0, 1], [0, 1], 2.0, "n_classes must be an integer"),
])
def test_metrics_errors(y_true, y_pred, n, match):
    with pytest.raises(ValueError, match=match): classification_metrics(y_true, y_pred, n)


def test_plot_confusion():
    import matplotlib
    matplotlib.use("Agg")
    ax = plot_confusion(np.array([[5, 1], [1, 3]]), CLASS_NAMES, title="t")
    assert [t.get_text() for t in ax.texts] == ["5", "1", "1", "3"]
    with pytest.raises(ValueError, match="cm must be square"): plot_confusion(np.ones((2, 3)), CLASS_NAMES)


# --- the bag of words -----------------------------------------------------------------------------------------

def test_bag_of_words_features_ignore_order_count_and_padding():
    bow = BagOfWords(5)
    X = bow.features(np.array([[2, 3, 3, 0], [3, 2, 0, 0], [4, 0, 0, 0]]))
    np.testing.assert_array_equal(X, [[0, 0, 1, 1, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]])
    np.testing.assert_array_equal(bow.predict_proba(np.array([[2, 3], [3, 2]]))[0],
                                  bow.predict_proba(np.array([[3, 2], [2, 3]]))[0])


def test_bag_of_words_gradient_and_fit():
    rng = np.random.default_rng(1)
    ids, y = rng.integers(0, 7, (6, 5)), rng.integers(0, 3, 6)
    bow = BagOfWords(7, 3, l2=0.05)
    bow.W, bow.b = rng.normal(size=(7, 3)), rng.normal(size=3)
    X, P = bow.features(ids), bow.predict_proba(ids)
    dW = X.T @ (P - np.eye(3)[y]) / 6 + 0.05 * bow.W
    num = np.zeros_like(bow.W)
    for idx in np.ndindex(*bow.W.shape):
        for s in (1, -1):
            bow.W[idx] += s * 1e-6
            num[idx] += s * bow.loss(ids, y) / 2e-6
            bow.W[idx] -= s * 1e-6
    np.testing.assert_allclose(num, dW, rtol=1e-6, atol=1e-9)
    W0 = bow.W.copy()
    bow.fit(ids, y, steps=1, lr=0.1)
    np.testing.assert_allclose(bow.W, W0 - 0.1 * dW, atol=1e-12)


def test_bag_of_words_learns_a_vocabulary_rule_but_not_order():
    # class = whether word 2 occurs: separable by a bag of words
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 10, (200, 6))
    has = rng.random(200) < 0.5
    ids[has, rng.integers(0, 6, has.sum())] = 2
    bow = BagOfWords(10)
    losses = bow.fit(ids, has.astype(int), steps=300, lr=1.0)
    assert losses[-1] < losses[0] / 3 and (bow.predict(ids) == has).mean() == 1.0
    # class = whether 2 comes before 3: invisible to it
    order = np.array([[2, 3], [3, 2]] * 50)
    y = np.array([1, 0] * 50)
    bow = BagOfWords(4)
    bow.fit(order, y, steps=100)
    np.testing.assert_allclose(bow.predict_proba(order), 0.5, atol=1e-9)


def test_bag_of_words_errors():
    with pytest.raises(ValueError, match="vocab_size"): BagOfWords(1)
    with pytest.raises(ValueError, match="n_classes"): BagOfWords(5, 1)
    with pytest.raises(ValueError, match="l2"): BagOfWords(5, l2=-1)
    bow = BagOfWords(5)
    with pytest.raises(ValueError, match="ids must lie in 0..4"): bow.predict(np.array([[5]]))
    with pytest.raises(ValueError, match="2-d integer"): bow.predict(np.array([1, 2]))
    with pytest.raises(ValueError, match="2-d integer"): bow.predict(np.array([[1.0]]))
    with pytest.raises(ValueError, match="same number of rows"): bow.fit(np.array([[1], [2]]), [0])
    with pytest.raises(ValueError, match="class ids in 0..1"): bow.fit(np.array([[1]]), [2])
    with pytest.raises(ValueError, match="steps"): bow.fit(np.array([[1]]), [0], steps=0)


# --- the recurrent classifier ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, bidirectional", [("gru", True), ("lstm", False), ("rnn", True)])
def test_rnn_classifier_shapes(kind, bidirectional):
    keras.utils.set_random_seed(0)
    model = rnn_classifier(20, n_classes=3, kind=kind, units=4, embedding_dim=5, bidirectional=bidirectional)
    ids = np.random.default_rng(0).integers(1, 20, (7, 9)).astype(np.int32)
    p = predict_proba(model, ids, batch_size=3)
    assert p.shape == (7, 3) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(p, predict_proba(model, ids), atol=1e-6)
    assert model.layers[0].mask_zero
    rnn = model.layers[1].forward_layer if bidirectional else model.layers[1]
    assert type(rnn).__name__ == {"rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}[kind]
    units_out = model.layers[-1].kernel.shape[0]
    assert units_out == (8 if bidirectional else 4)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_masking_padding_length_does_not_change_predictions(kind):
    keras.utils.set_random_seed(1)
    model = rnn_classifier(30, kind=kind, units=8, embedding_dim=6)
    model.layers[0].embeddings.assign(model.layers[0].embeddings * 5)  # make padding, if seen, matter
    rng = np.random.default_rng(2)
    seqs = [rng.integers(1, 30, n) for n in (1, 3, 8, 12)]
    short, _ = pad_sequences(seqs, max_len=12, dtype=np.int32)
    long = np.pad(short, ((0, 0), (0, 25)))
    alone = np.concatenate([predict_proba(model, s[None].astype(np.int32)) for s in seqs])
    np.testing.assert_allclose(predict_proba(model, short), predict_proba(model, long), atol=1e-5)
    np.testing.assert_allclose(predict_proba(model, short), alone, atol=1e-5)  # no padding at all
    twin = rnn_classifier(30, kind=kind, units=8, embedding_dim=6, masked=False)
    twin.set_weights(model.get_weights())
    # so the check above is not vacuous
    assert np.abs(predict_proba(twin, short) - predict_proba(twin, long)).max() > 1e-3


def test_rnn_classifier_learns_order_a_bag_of_words_cannot():
    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(0)
    n = 400  # class 1 iff token 2 comes before token 3, both present once among fillers
    ids = rng.integers(4, 12, (n, 6)).astype(np.int32)
    y = rng.integers(0, 2, n)
    for i in range(n):
        a, b = sorted(rng.choice(6, 2, replace=False))
        ids[i, a], ids[i, b] = (2, 3) if y[i] else (3, 2)
    model = rnn_classifier(12, units=8, embedding_dim=8)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    with quiet_stderr(): model.fit(ids, y, batch_size=32, epochs=15, verbose=0)
    acc = (predict_proba(model, ids).argmax(1) == y).mean()
    bow = BagOfWords(12)
    bow.fit(ids, y)
    assert acc > 0.9 and (bow.predict(ids) == y).mean() < 0.65


def test_rnn_classifier_and_predict_errors():
    with pytest.raises(ValueError, match="kind must be"): rnn_classifier(10, kind="Transformer")
    with pytest.raises(ValueError, match="vocab_size"): rnn_classifier(1)
    with pytest.raises(ValueError, match="n_classes"): rnn_classifier(10, n_classes=1)
    with pytest.raises(ValueError, match="units"): rnn_classifier(10, units=0)
    with pytest.raises(ValueError, match="embedding_dim"): rnn_classifier(10, embedding_dim=-2)
    model = rnn_classifier(10, units=2, embedding_dim=2)
    with pytest.raises(ValueError, match="2-d integer array"): predict_proba(model, np.array([1, 2]))
    with pytest.raises(ValueError, match="2-d integer array"): predict_proba(model, np.ones((2, 3)))
    with pytest.raises(ValueError, match="batch_size"): predict_proba(model, np.ones((2, 3), int), batch_size=0)
