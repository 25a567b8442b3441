("Tagging (`rnn_tutorial.apps.tagging`): the character labeller against `tokenize`, the id map and windows, per-class "
 "F1 by hand and by brute force, the per-character baseline, and the taggers' shapes, masking and errors.")
import io
import keyword
import sys
import sysconfig
import tokenize
from pathlib import Path

import numpy as np
import pytest

from rnn_tutorial.apps.tagging import (CLASSES, SHORT, VOCAB_SIZE, char_baseline, char_ids, char_tagger,
                                       char_token_classes,
                                       per_class_f1, tag_windows)
from rnn_tutorial.tf_setup import configure_tensorflow, import_tensorflow

tf, keras = import_tensorflow()
configure_tensorflow()


def tags(source): return "".join(SHORT[c] for c in char_token_classes(source))


# ---- the labeller

@pytest.mark.parametrize("source, expected", [
    ("if id: pass\n", "kk.nno.kkkk."),                                   # keywords and a name that starts like one
    ("x = 'a' \"b\"\n", "n.o.sss.sss."),                                # both quotes
    ("x = rb'\\d' + u'é'\n", "n.o.ssssss.o.ssss."),                      # prefixes belong to the string
    ('s = """a\n# not a comment\nb"""\n', "n.o." + "s" * 25 + "."),     # a multi-line string spans lines
    ("y = f'{x!r:>{w}}' # c\n", "n.o." + "s" * 13 + ".###."),           # an f-string is one string, whatever the Python
    ("y = f\"{'a' + f'{b}'}\"\n", "n.o." + "s" * 17 + "."),            # nested f-strings
    ("n = 1_000 + 0x1F + 1.5e-3j + 7\n", "n.o.00000.o.0000.o.0000000.o.0."),
    ("# only a comment", "################"),                            # no trailing newline
    ("def f(a, *b):\n\treturn a  # t\n", "kkk.nono.onoo.." + "kkkkkk.n..###."),
    ("é = 1\n", "n.o.0."),                                               # columns count characters, not bytes
    ("x = 1 + \\\n    2\n", "n.o.0.o.......0."),                          # a line continuation is other
    ("x = 1\r\ny = 2\r\n", "n.o.0..n.o.0.."),                            # Windows line endings
    ("match = case = type = 1\n", "nnnnn.o.nnnn.o.nnnn.o.0."),           # soft keywords are names
    ("async def f(): await g()\n", "kkkkk.kkk.nooo.kkkkk.noo."),
])
def test_char_token_classes_by_hand(source, expected):
    assert tags(source) == expected
    assert len(char_token_classes(source)) == len(source)


def _joined_by_tokenize(source):
    "The text of each class's tokens, concatenated in order, as `tokenize` gives them."
    out = {c: [] for c in range(len(CLASSES))}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        c = {tokenize.NUMBER: 3, tokenize.STRING: 4, tokenize.COMMENT: 5, tokenize.OP: 6}.get(tok.type)
        if tok.type == tokenize.NAME: c = 2 if keyword.iskeyword(tok.string) else 1
        if c is not None: out[c].append(tok.string)
    return {c: "".join(v) for c, v in out.items() if c}


@pytest.mark.skipif(sys.version_info >= (3, 12),
                    reason="from 3.12 tokenize splits f-strings into parts; we keep them whole")
@pytest.mark.parametrize("name", ["contextlib.py", "textwrap.py", "string.py"])
def test_char_token_classes_agrees_with_tokenize_on_stdlib(name):
    source = (Path(sysconfig.get_paths()["stdlib"]) / name).read_text(encoding="utf-8")
    labels, chars = char_token_classes(source), np.array(list(source))
    for c, text in _joined_by_tokenize(source).items():
        assert "".join(chars[labels == c]) == text, CLASSES[c]
    assert set("".join(chars[labels == 0])) <= set(" \t\n\\\x0c")  # the rest is whitespace and continuations


@pytest.mark.parametrize("source, message", [
    ("", "source must contain code"),
    (" \n\t\n", "source must contain code"),
    ("x = (1,", "source must be code that Python.s tokenizer accepts"),
    ('x = "abc', "source must be code that Python.s tokenizer accepts"),
    ('x = """abc\n', "source must be code that Python.s tokenizer accepts"),
    ("x = $", "source must be code that Python.s tokenizer accepts, got unexpected '$'"),
    ("if x:\n    y\n  z\n", "source must be code that Python.s tokenizer accepts"),
])
def test_char_token_classes_errors(source, message):
    with pytest.raises(ValueError, match=message.replace("$", r"\$")): char_token_classes(source)


def test_char_token_classes_type():
    with pytest.raises(ValueError, match="source must be a str"): char_token_classes(b"x = 1")
    with pytest.raises(ValueError, match="source must be a str"): char_token_classes(None)


# ---- ids and windows

def test_char_ids():
    ids = char_ids(" ~a\n\tz€")
    assert ids.dtype == np.int32 and ids.tolist() == [2, 96, ord("a") - 30, 97, 98, ord("z") - 30, 1]
    everything = char_ids("".join(map(chr, range(0, 300))))
    assert everything.min() >= 1 and everything.max() < VOCAB_SIZE
    assert len(set(char_ids("".join(map(chr, range(32, 127))) + "\n\t").tolist())) == 97  # all distinct
    with pytest.raises(ValueError, match="text must be a str"): char_ids(["a"])


def test_tag_windows_shapes_and_padding():
    docs = [np.arange(1, 8), np.arange(1, 3), np.arange(1, 5)]
    X, Y = tag_windows(docs, [d % 7 for d in docs], 4)
    assert X.shape == Y.shape == (4, 4) and X.dtype == Y.dtype == np.int32
    assert X.tolist() == [[1, 2, 3, 4], [5, 6, 7, 0], [1, 2, 0, 0], [1, 2, 3, 4]]
    assert (Y[X == 0] == 0).all() and (X > 0).sum() == 13


@pytest.mark.parametrize("ids, labels, length, message", [
    ([], [], 3, "non-empty lists of the same length"),
    ([np.ones(3)], [np.ones(3), np.ones(3)], 3, "non-empty lists of the same length"),
    ([np.ones(3)], [np.ones(2)], 3, r"ids\[0\] and labels\[0\] must be"),
    ([np.ones((2, 2))], [np.ones((2, 2))], 3, "1-D arrays"),
    ([np.ones(0)], [np.ones(0)], 3, "non-empty 1-D"),
    ([np.ones(3)], [np.ones(3)], 0, "length must be an integer >= 1"),
    ([np.ones(3)], [np.ones(3)], 2.0, "length must be an integer >= 1"),
])
def test_tag_windows_errors(ids, labels, length, message):
    with pytest.raises(ValueError, match=message): tag_windows(ids, labels, length)


# ---- per-class F1

def test_per_class_f1_by_hand():
    # truth 0 0 1 1 2, prediction 0 1 1 1 0: class 0 TP1 FP1 FN1 -> 1/2; class 1 TP2 FP1 -> 4/5; class 2 FN1 -> 0
    f1 = per_class_f1([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 4)
    np.testing.assert_allclose(f1[:3], [0.5, 0.8, 0.0])
    assert np.isnan(f1[3])
    # masking the last position removes class 2's only case and the false 0: class 0 TP1 FP0 FN1 -> 2/3
    np.testing.assert_allclose(per_class_f1([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3, mask=[1, 1, 1, 1, 0])[:2],
                               [2 / 3, 0.8])
    assert np.isnan(per_class_f1([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3, mask=[1, 1, 1, 1, 0])[2])
    np.testing.assert_array_equal(per_class_f1([[0, 1], [2, 2]], [[0, 1], [2, 2]], 3), [1, 1, 1])


def test_per_class_f1_matches_brute_force():
    rng = np.random.default_rng(1)
    t, p, m = rng.integers(0, 5, (6, 30)), rng.integers(0, 5, (6, 30)), rng.random((6, 30)) < 0.7
    got = per_class_f1(t, p, 5, m)
    for c in range(5):
        tp = sum(1 for a, b, k in zip(t.flat, p.flat, m.flat) if k and a == c and b == c)
        fp = sum(1 for a, b, k in zip(t.flat, p.flat, m.flat) if k and a != c and b == c)
        fn = sum(1 for a, b, k in zip(t.flat, p.flat, m.flat) if k and a == c and b != c)
        prec, rec = tp / (tp + fp), tp / (tp + fn)
        assert got[c] == pytest.approx(2 * prec * rec / (prec + rec))


@pytest.mark.parametrize("args, kwargs, message", [
    (([0, 1], [0], 2), {}, "same shape"),
    (([0, 2], [0, 1], 2), {}, r"y_true must hold integer class ids in 0..1"),
    (([0, 1], [0, -1], 2), {}, r"y_pred must hold integer class ids"),
    (([0.0, 1.0], [0, 1], 2), {}, r"y_true must hold integer class ids"),
    (([0, 1], [0, 1], 0), {}, "n_classes must be an integer >= 1"),
    (([0, 1], [0, 1], 2), {"mask": [True]}, "mask must have the shape"),
])
def test_per_class_f1_errors(args, kwargs, message):
    with pytest.raises(ValueError, match=message): per_class_f1(*args, **kwargs)


# ---- the baseline

def test_char_baseline():
    X = np.array([[2, 2, 3, 0], [3, 4, 4, 0]])
    Y = np.array([[1, 1, 2, 6], [2, 3, 3, 6]])  # padding's labels are ignored
    table = char_baseline(X, Y, 6)
    # unseen ids 0, 1, 5: the most frequent class overall (a tie 1/2/3: lowest)
    assert table.tolist() == [1, 1, 1, 2, 3, 1]
    with pytest.raises(ValueError, match="same shape"): char_baseline(X, Y[:, :2], 6)
    with pytest.raises(ValueError, match=r"X must hold ids in 0..3"): char_baseline(X, Y, 4)
    with pytest.raises(ValueError, match="at least one non-padding id"):
        char_baseline(np.zeros((1, 3), int), np.zeros((1, 3), int))
    with pytest.raises(ValueError, match="vocab_size must be"): char_baseline(X, Y, 0)


# ---- the taggers

@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_tagger_shapes_and_masking(kind, bidirectional):
    keras.utils.set_random_seed(0)
    model = char_tagger(5, vocab_size=20, bidirectional=bidirectional, units=6, embedding_dim=4, kind=kind)
    short, long = np.array([3, 4, 5]), np.array([7, 8, 9, 10, 11, 12, 13])
    batch = np.zeros((2, 7), np.int32)
    batch[0, :3], batch[1] = short, long
    out = model.predict(batch, verbose=0)
    assert out.shape == (2, 7, 5)
    np.testing.assert_allclose(out.sum(-1), 1, rtol=1e-5)
    alone = model.predict(short[None].astype(np.int32), verbose=0)
    assert alone.shape == (1, 3, 5)
    np.testing.assert_allclose(alone[0], out[0, :3], atol=1e-5)  # padding does not change the real positions
    padded_more = np.zeros((1, 12), np.int32)
    padded_more[0, :3] = short
    np.testing.assert_allclose(model.predict(padded_more, verbose=0)[0, :3], alone[0], atol=1e-5)


def test_bidirectional_reads_ahead_and_left_to_right_does_not():
    "Changing a later id changes earlier outputs only when the tagger reads both ways."
    keras.utils.set_random_seed(0)
    x = np.array([[3, 4, 5, 6]], np.int32)
    y = x.copy()
    y[0, 3] = 9
    for bidirectional, changes in ((False, False), (True, True)):
        model = char_tagger(3, vocab_size=10, bidirectional=bidirectional, units=4, embedding_dim=3)
        a, b = model.predict(x, verbose=0)[0, :3], model.predict(y, verbose=0)[0, :3]
        assert (not np.allclose(a, b, atol=1e-7)) == changes


def test_tagger_parameters():
    # embedding V*E, GRU 3*(E*H + H*H + 2H) (reset_after), dense (H or 2H)*C + C
    V, E, H, C = 99, 16, 32, 7
    gru = 3 * (E * H + H * H + 2 * H)
    assert char_tagger(C, units=H, bidirectional=False).count_params() == V * E + gru + H * C + C
    assert char_tagger(C, units=H, bidirectional=True).count_params() == V * E + 2 * gru + 2 * H * C + C


@pytest.mark.parametrize("kwargs, message", [
    ({"n_classes": 1}, "n_classes must be an integer >= 2"),
    ({"n_classes": 3.0}, "n_classes must be an integer >= 2"),
    ({"n_classes": 3, "vocab_size": 1}, "vocab_size must be an integer >= 2"),
    ({"n_classes": 3, "units": 0}, "units must be an integer >= 1"),
    ({"n_classes": 3, "units": True}, "units must be an integer >= 1"),
    ({"n_classes": 3, "embedding_dim": -1}, "embedding_dim must be an integer >= 1"),
    ({"n_classes": 3, "kind": "Transformer"}, "kind must be one of 'rnn', 'lstm', 'gru', got 'Transformer'"),
])
def test_tagger_errors(kwargs, message):
    with pytest.raises(ValueError, match=message): char_tagger(**kwargs)
