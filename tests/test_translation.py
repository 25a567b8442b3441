("Translation (`rnn_tutorial.apps.translation`): beam search against brute force, greedy, the date pairs, padding and "
 "masks, the seq2seq model's shapes and decoding, and bad input.")
import datetime
import itertools
import re

import numpy as np
import pytest

from rnn_tutorial.apps.generation import beam_search  # the chapter reuses chapter 7's beam search
from rnn_tutorial.apps.translation import (DATE_FORMATS, CASES, SOURCE_VOCAB, TARGET_VOCAB, LuongAttention, Seq2Seq,
                                           Translator, date_pairs, encode_pairs, exact_match, greedy_search,
                                           human_date, train_seq2seq)
from rnn_tutorial.data import Vocab
from rnn_tutorial.tf_setup import configure_tensorflow, import_tensorflow, quiet_stderr

tf, keras = import_tensorflow()
configure_tensorflow()


def tiny_decoder(V=3, H=4, seed=0, end_id=None):
    "A random tanh-RNN decoder as a `step` function; its distribution depends on the whole prefix"
    r = np.random.default_rng(seed)
    E, W, U = r.normal(size=(V, H)), r.normal(size=(H, H)), 2 * r.normal(size=(H, V))
    def step(h, toks):
        h = np.tanh(np.asarray(h) @ W + E[np.asarray(toks)])
        z = h @ U
        return z - np.logaddexp.reduce(z, axis=1, keepdims=True), h
    return step


def all_sequences(step, h0, prefix, length, V, end_id=None):
    "Every complete sequence (ended by `end_id`, or of full length) with its log-probability, by enumeration"
    out = {}
    for seq in itertools.product(range(V), repeat=length):
        if end_id is not None and end_id in seq: seq = seq[:seq.index(end_id) + 1]
        if seq in out: continue
        h = h0
        for tok in prefix[:-1]: _, h = step(h, np.array([tok]))
        tok, score = prefix[-1], 0.0
        for s in seq:
            lp, h = step(h, np.array([tok]))
            score += lp[0, s]
            tok = s
        out[seq] = score
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("end_id", [None, 1])
def test_beam_search_exhaustive_is_brute_force(seed, end_id):
    V, L = 3, 4
    step, h0 = tiny_decoder(V, seed=seed), np.zeros((1, 4))
    scores = all_sequences(step, h0, [0, 2], L, V, end_id)
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    found = beam_search(step, h0, [0, 2], beam_width=V ** L, length=L, end_id=end_id)
    # the best sequence and its score, and the whole ranking of the top ones
    assert tuple(found[0][0]) == ranked[0][0]
    np.testing.assert_allclose(found[0][1], ranked[0][1], rtol=0, atol=1e-12)
    k = 5
    np.testing.assert_allclose([s for _, s in found[:k]], [s for _, s in ranked[:k]], atol=1e-12)
    # scores are the sequences' own
    for ids, sc in found: np.testing.assert_allclose(sc, scores[tuple(ids)], atol=1e-12)
    # any beam: scores sorted, no more than beam_width results, each a real sequence with its true score
    for w in (1, 2, 3, 7):
        res = beam_search(step, h0, [0, 2], beam_width=w, length=L, end_id=end_id)
        assert 1 <= len(res) <= w
        assert all(a[1] >= b[1] for a, b in zip(res, res[1:]))
        for ids, sc in res: np.testing.assert_allclose(sc, scores[tuple(ids)], atol=1e-12)
        assert res[0][1] <= ranked[0][1] + 1e-12


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("end_id", [None, 2])
def test_beam_width_one_is_greedy(seed, end_id):
    step, h0 = tiny_decoder(5, seed=seed), np.zeros((1, 4))
    g_ids, g_score = greedy_search(step, h0, [1], length=6, end_id=end_id)
    (b_ids, b_score), = beam_search(step, h0, [1], beam_width=1, length=6, end_id=end_id)
    np.testing.assert_array_equal(b_ids, g_ids)
    np.testing.assert_allclose(b_score, g_score, atol=1e-12)
    if end_id is not None and end_id in g_ids: assert g_ids[-1] == end_id and list(g_ids).count(end_id) == 1


def test_beam_search_nested_state_and_end():
    "States may be tuples/dicts of arrays; a sequence that ends early stops there"
    V = 4
    inner = tiny_decoder(V, seed=3)
    def step(state, toks):
        lp, h = inner(state["h"], toks)
        return lp, {"h": h, "copy": (h * 2, [h])}
    h0 = np.zeros((1, 4))
    res = beam_search(step, {"h": h0, "copy": (h0, [h0])}, [0], beam_width=3, length=5, end_id=0)
    plain = beam_search(inner, h0, [0], beam_width=3, length=5, end_id=0)
    for (a, sa), (b, sb) in zip(res, plain):
        np.testing.assert_array_equal(a, b)
        assert sa == sb
    for ids, _ in res: assert 0 not in ids[:-1] and len(ids) <= 5


def test_search_errors():
    step, h0 = tiny_decoder(), np.zeros((1, 4))
    for kw, msg in [(dict(beam_width=0), "beam_width"), (dict(beam_width=2.0), "beam_width"),
                    (dict(length=0), "length"),
                    (dict(prefix_ids=[]), "prefix_ids"), (dict(prefix_ids=[0.5]), "prefix_ids"),
                    (dict(prefix_ids=[[0]]), "prefix_ids"), (dict(end_id=-1), "end_id")]:
        args = dict(prefix_ids=[0], beam_width=2, length=3) | kw
        with pytest.raises(ValueError, match=msg): beam_search(step, h0, **args)
    with pytest.raises(ValueError, match="length"): greedy_search(step, h0, [0], length=0)
    with pytest.raises(ValueError, match="prefix_ids"): greedy_search(step, h0, [], length=2)
    with pytest.raises(ValueError, match="end_id"): greedy_search(step, h0, [0], length=2, end_id=-1)
    bad = lambda h, t: (np.zeros((len(t) + 1, 3)), h)
    with pytest.raises(ValueError, match="of shape"): beam_search(bad, h0, [0], 2, 3)
    with pytest.raises(ValueError, match="of shape"): greedy_search(bad, h0, [0], 3)


def test_human_dates_and_pairs():
    d = datetime.date(2021, 3, 3)
    assert [human_date(d, f) for f in DATE_FORMATS] == ["3 March 2021", "March 3, 2021", "03/03/21",
                                                        "Wednesday 3 Mar 2021",
                                                       "2021-3-3", "Wed, Mar 3, 2021", "03.03.2021", "3 Mar 21"]
    assert human_date(d, "d Month yyyy", "upper") == "3 MARCH 2021"
    train, test = date_pairs(300, 200, seed=1)
    assert len(train) == 300 and len(test) == 200
    assert not {t for _, t in train} & {t for _, t in test}  # split by date
    assert date_pairs(300, 200, seed=1) == (train, test) and date_pairs(300, 200, seed=2) != (train, test)
    for src, tgt in train + test:
        date = datetime.date.fromisoformat(tgt)
        assert any(human_date(date, f, c) == src for f in DATE_FORMATS for c in CASES)
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", tgt)
        SOURCE_VOCAB.encode(src)  # every generated character is in the vocabulary


def test_date_errors():
    d = datetime.date(2021, 3, 3)
    with pytest.raises(ValueError, match="fmt"): human_date(d, "mm/dd/yy")
    with pytest.raises(ValueError, match="case"): human_date(d, "dd/mm/yy", "title")
    with pytest.raises(ValueError, match="date must be a datetime.date"): human_date("2021-03-03", "dd/mm/yy")
    with pytest.raises(ValueError, match="between"): human_date(datetime.date(2050, 1, 1), "dd/mm/yy")
    with pytest.raises(ValueError, match="n_train"): date_pairs(0, 5)
    with pytest.raises(ValueError, match="n_test"): date_pairs(5, -1)
    with pytest.raises(ValueError, match="test_frac"): date_pairs(5, 5, test_frac=1.0)


def test_encode_pairs_padding_and_masks():
    pairs = [("3 Mar 21", "2021-03-03"), ("Wednesday 3 Mar 2021", "2021-03-03")]
    d = encode_pairs(pairs)
    assert d["source"].shape == d["source_mask"].shape == (2, 20)
    assert d["decoder_in"].shape == d["decoder_out"].shape == d["target_mask"].shape == (2, 11)
    np.testing.assert_array_equal(d["source_mask"].sum(1), [8, 20])
    np.testing.assert_array_equal(d["source_mask"], d["source"] != 0)
    assert SOURCE_VOCAB.decode(d["source"][0][:8]) == "3 Mar 21"
    np.testing.assert_array_equal(d["decoder_in"][:, 1:], d["decoder_out"][:, :-1])
    assert TARGET_VOCAB.decode(d["decoder_in"][0]) == "\x022021-03-03"
    assert TARGET_VOCAB.decode(d["decoder_out"][0]) == "2021-03-03\x03"
    assert encode_pairs(pairs, src_len=25)["source"].shape == (2, 25)
    with pytest.raises(ValueError, match="pairs"): encode_pairs([])
    with pytest.raises(ValueError, match=r"pairs\[0\]"): encode_pairs([("3 Mar 21",)])
    with pytest.raises(ValueError, match="not in the vocabulary"): encode_pairs([("3 März 21", "2021-03-03")])
    with pytest.raises(ValueError, match="src_vocab"): encode_pairs(pairs, src_vocab=Vocab("abc"))
    with pytest.raises(ValueError, match="tgt_vocab"): encode_pairs(pairs, tgt_vocab=Vocab("\x000123456789-"))
    with pytest.raises(ValueError, match="max_len"): encode_pairs(pairs, src_len=5)


def test_attention_masks_padding():
    rng = np.random.default_rng(0)
    att = LuongAttention(6)
    q, k = rng.normal(size=(2, 3, 6)).astype("float32"), rng.normal(size=(2, 5, 6)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    ctx, w = att(q, k, mask)
    assert ctx.shape == (2, 3, 6) and w.shape == (2, 3, 5)
    np.testing.assert_allclose(w.numpy().sum(-1), 1, atol=1e-6)
    assert np.all(w.numpy()[0, :, 3:] == 0)
    np.testing.assert_allclose(ctx.numpy(), np.einsum("bts,bsu->btu", w.numpy(), k), atol=1e-5)
    # padding content does not matter
    k2 = k.copy()
    k2[0, 3:] = 100
    np.testing.assert_allclose(att(q, k2, mask)[0].numpy()[0], ctx.numpy()[0], atol=1e-5)


@pytest.mark.parametrize("attention", [False, True])
def test_seq2seq_shapes_masking_and_decoding(attention):
    keras.utils.set_random_seed(0)
    m = Seq2Seq(len(SOURCE_VOCAB), len(TARGET_VOCAB), units=8, embed_dim=4, attention=attention)
    pairs = [("3 Mar 21", "2021-03-03"), ("Wednesday 3 Mar 2021", "2021-03-03"), ("1999-12-31", "1999-12-31")]
    d = encode_pairs(pairs)
    logits = m((d["source"], d["decoder_in"]))
    assert logits.shape == (3, 11, len(TARGET_VOCAB))
    enc, mask, h = m.encode(d["source"])
    assert enc.shape == (3, 20, 8) and mask.shape == (3, 20) and h.shape == (3, 8)
    out, h2, w = m.decode(enc, mask, h, d["decoder_in"])
    np.testing.assert_allclose(out.numpy(), logits.numpy(), atol=1e-5)
    assert (w is None) == (not attention)
    if attention: assert w.shape == (3, 11, 20) and np.all(w.numpy()[0, :, 8:] == 0)
    # padding does not change a sequence's outputs
    alone = m((encode_pairs(pairs[:1])["source"], d["decoder_in"][:1]))
    np.testing.assert_allclose(alone.numpy(), logits.numpy()[:1], atol=1e-5)
    # one decoder step at a time gives the teacher-forced logits
    hs, steps = h, []
    for t in range(11):
        lg, hs, _ = m.decode(enc, mask, hs, d["decoder_in"][:, t:t + 1])
        steps.append(lg.numpy()[:, 0])
    np.testing.assert_allclose(np.stack(steps, 1), logits.numpy(), atol=1e-5)
    # the translator: greedy (batched) equals beam width 1, and strings come back without the end symbol
    tr = Translator(m)
    srcs = [s for s, _ in pairs]
    g = tr.greedy(srcs)
    assert g == tr.beam(srcs, beam_width=1)
    assert all(isinstance(s, str) and "\x03" not in s and len(s) <= 12 for s in g)
    assert len(tr.beam(srcs, beam_width=3)) == 3
    if attention: assert tr.attention(srcs[0], "2021-03-03").shape == (11, 8)
    else:
        with pytest.raises(ValueError, match="attention=True"): tr.attention(srcs[0], "2021-03-03")
    with pytest.raises(ValueError, match="sources"): tr.greedy("3 Mar 21")
    with pytest.raises(ValueError, match="beam_width"): tr.beam(srcs, beam_width=0)


def test_seq2seq_learns_and_errors():
    "A few seconds of training on the date task beats chance: the training loss falls"
    keras.utils.set_random_seed(0)
    train, _ = date_pairs(512, 1, seed=0)
    m = Seq2Seq(len(SOURCE_VOCAB), len(TARGET_VOCAB), units=16, embed_dim=8)
    with quiet_stderr(): hist = train_seq2seq(m, encode_pairs(train), epochs=3, batch_size=64, learning_rate=1e-2)
    assert len(hist["loss"]) == 3 and hist["loss"][-1] < hist["loss"][0] < np.log(len(TARGET_VOCAB)) + 0.5
    with pytest.raises(ValueError, match="model"): train_seq2seq("model", {})
    with pytest.raises(ValueError, match="data"): train_seq2seq(m, {"source": 1})
    with pytest.raises(ValueError, match="seconds"): train_seq2seq(m, encode_pairs(train), seconds=0)
    with pytest.raises(ValueError, match="src_vocab_size"): Seq2Seq(1, 5)
    with pytest.raises(ValueError, match="units"): Seq2Seq(5, 5, units=0)
    with pytest.raises(ValueError, match="attention"): Seq2Seq(5, 5, attention="yes")
    with pytest.raises(ValueError, match="model"): Translator("model")


def test_exact_match():
    assert exact_match(["a", "b", "c", "d"], ["a", "x", "c", "y"]) == 0.5
    with pytest.raises(ValueError, match="equal length"): exact_match(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="non-empty"): exact_match([], [])


def test_train_seq2seq_time_budget_stops_after_one_epoch():
    "`seconds` goes through forecasting.TimeLimit: a budget already spent stops training after the first epoch"
    keras.utils.set_random_seed(0)
    train, _ = date_pairs(64, 1, seed=0)
    m = Seq2Seq(len(SOURCE_VOCAB), len(TARGET_VOCAB), units=8, embed_dim=4)
    with quiet_stderr(): hist = train_seq2seq(m, encode_pairs(train), epochs=5, seconds=1e-9)
    assert len(hist["loss"]) == 1


def test_configs_rebuild_the_layers():
    "`get_config` holds the settings: `from_config` rebuilds the same Seq2Seq and LuongAttention"
    m = Seq2Seq(10, 5, units=8, embed_dim=4, attention=False)
    m2 = Seq2Seq.from_config(m.get_config())
    assert (m2.src_vocab_size, m2.tgt_vocab_size, m2.units, m2.embed_dim, m2.use_attention) == (10, 5, 8, 4, False)
    assert LuongAttention.from_config(LuongAttention(6).get_config()).units == 6


@pytest.mark.filterwarnings("ignore:Glyph")  # an untrained model writes its start and end symbols
def test_plot_attention_and_its_knob(capsys):
    "The heat-map is the attention on the model's own greedy output; the text box redraws it; a typo gets one line."
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rnn_tutorial.apps.translation import attention_knobs, plot_attention
    plt.close("all")  # figures other tests left open are not this test's
    keras.utils.set_random_seed(0)
    tr = Translator(Seq2Seq(len(SOURCE_VOCAB), len(TARGET_VOCAB), units=8, embed_dim=4, attention=True))
    out, w = plot_attention(tr, "3 Mar 2021")
    assert out == tr.greedy(["3 Mar 2021"])[0] and w.shape == (len(out) + 1, len("3 Mar 2021"))
    np.testing.assert_allclose(w, tr.attention("3 Mar 2021", out))
    assert plt.get_fignums() == []  # shown and closed
    fig, ax = plt.subplots()
    plot_attention(tr, "1999-12-31", ax)
    assert len(ax.images) == 1 and plt.get_fignums() == [fig.number]  # drawn on the given axes, not shown
    plt.close(fig)
    knob = attention_knobs(tr, "3 Mar 2021", options=["1 Jan 2000"])
    box = knob.children[0]
    assert box.value == "3 Mar 2021" and box.options == ("1 Jan 2000",) and not box.continuous_update
    assert knob.result[0] == out
    box.value = "1999-12-31"
    assert knob.result[0] == tr.greedy(["1999-12-31"])[0]
    capsys.readouterr()
    box.value = "3 Mar 2021!"  # "!" is not in the source vocabulary: a message, no traceback
    assert knob.result is None and "character '!'" in capsys.readouterr().out
    with pytest.raises(ValueError, match="attention=True"):
        plot_attention(Translator(Seq2Seq(len(SOURCE_VOCAB), len(TARGET_VOCAB), units=8, attention=False)), "1 May 21")
    with pytest.raises(ValueError, match="source"): attention_knobs(tr, None)
