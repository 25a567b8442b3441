("Tests of rnn_tutorial.apps.speech: synthesis, features, the data set and its cache, the CTC loss and decoders, the "
 "model.")
import math

import numpy as np
import pytest

from rnn_tutorial.apps import speech
from rnn_tutorial.apps.speech import (
    ACCENTS, BLANK, FRAME_LENGTH, FRAME_STEP, N_FEATURES, N_MELS, SAMPLE_RATE, STACK, ESpeakError, SpokenDigits,
    MIN_SAMPLES, acoustic_model, add_noise, ctc_brute_force, ctc_collapse, ctc_greedy_decode, ctc_log_likelihood,
                                      ctc_log_probs,
    ctc_prefix_beam_search, digit_error_rate, digits_text, edit_distance, log_mel, spoken_digits, synthesize,
    train_ctc, transcribe, utterance_features, voice_families, voice_split, voice_variants)
from rnn_tutorial.tf_setup import configure_tensorflow, import_tensorflow

tf, keras = import_tensorflow()
configure_tensorflow()


# --- synthesis -----------------------------------------------------------------------------------------------------

def test_digits_text():
    assert digits_text("3140") == "three one four zero"
    for bad in ["", "12a", "1 2", "-1", "٣", 12, None]:
        with pytest.raises(ValueError, match="digits must be a non-empty string of the characters 0-9"):
            digits_text(bad)


def test_synthesize_lengths_and_determinism():
    one = synthesize("7")
    assert one.dtype == np.int16 and one.ndim == 1
    assert 0.15 < len(one) / SAMPLE_RATE < 1.0
    assert np.abs(one).max() > 1000  # not silence
    eight = synthesize("12345678")
    assert 4 * len(one) < len(eight) < 12 * len(one)  # eight words, with short pauses
    assert len(synthesize("7", words_per_minute=300)) < len(one) < len(synthesize("7", words_per_minute=100))
    np.testing.assert_array_equal(synthesize("7"), one)  # a fresh engine per utterance: the same samples
    a = synthesize("42", "en-gb-scotland", "whisper", 150, 30)  # a breathy voice: its noise is seeded too
    synthesize("99", "en-us", "croak")
    np.testing.assert_array_equal(synthesize("42", "en-gb-scotland", "whisper", 150, 30), a)


def test_synthesize_every_accent_speaks():
    lengths = [len(synthesize("5", accent)) for accent in ACCENTS]
    assert min(lengths) > 0.15 * SAMPLE_RATE


@pytest.mark.parametrize("kwargs, message", [
    (dict(digits=""), "digits must be a non-empty string"),
    (dict(digits="1x"), "characters 0-9"),
    (dict(digits="1", accent="fr"), "accent must be one of"),
    (dict(digits="1", variant="nobody"), "variant must be None or one of"),
    (dict(digits="1", words_per_minute=50), "words_per_minute must be an integer >= 80"),
    (dict(digits="1", words_per_minute=500), "words_per_minute must be an integer in 80..450"),
    (dict(digits="1", words_per_minute=175.5), "words_per_minute must be an integer"),
    (dict(digits="1", pitch=-1), "pitch must be an integer >= 0"),
    (dict(digits="1", pitch=101), "pitch must be an integer in 0..100"),
])
def test_synthesize_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthesize(**kwargs)


def test_missing_library_says_how_to_install(monkeypatch):
    import espeakng_loader
    monkeypatch.setattr(speech, "_ESPEAK", None)
    monkeypatch.setattr(espeakng_loader, "get_library_path", lambda: "/nonexistent/libespeak-ng.so")
    with pytest.raises(ESpeakError, match="pip install espeakng-loader"):
        synthesize("1")


def test_voice_variants_and_split():
    v = voice_variants()
    assert len(v) > 50 and {"m1", "f3", "croak", "whisper"} <= set(v) and list(v) == sorted(v)
    families = voice_families()
    assert sorted(x for f in families.values() for x in f) == list(v)
    assert families["robosoft"] == ["robosoft"] + [f"robosoft{i}" for i in range(2, 9)]
    assert families["andy"] == ["Andy", "AnxiousAndy"] and families["whisper"] == ["whisper", "whisperf"]
    assert families["m"] == [f"m{i}" for i in range(1, 9)] and "max" not in families["m"]
    train, test = voice_split()
    assert not set(train) & set(test) and set(train) | set(test) == set(v)
    family_of = {x: f for f, xs in families.items() for x in xs}
    assert not {family_of[x] for x in train} & {family_of[x] for x in test}
    largest = max(map(len, families.values()))
    assert round(0.25 * len(v)) <= len(test) < round(0.25 * len(v)) + largest
    assert voice_split() == (train, test) and voice_split(seed=1) != (train, test)
    for bad in [0, 1, 1.5, -0.1, "a"]:
        with pytest.raises(ValueError, match="test_fraction"):
            voice_split(bad)


# --- features ------------------------------------------------------------------------------------------------------

def test_log_mel_shapes():
    x = np.random.default_rng(0).standard_normal(5000).astype(np.float32)
    frames = 1 + (5000 - FRAME_LENGTH) // FRAME_STEP
    assert log_mel(x).shape == (frames, N_MELS)
    assert log_mel(np.stack([x, x])).shape == (2, frames, N_MELS)
    assert log_mel(x, n_mels=20).shape == (frames, 20)
    with pytest.raises(ValueError, match="waves must have shape"):
        log_mel(x[:FRAME_LENGTH - 1])
    with pytest.raises(ValueError, match="waves must have shape"):
        log_mel(x.reshape(1, 1, -1))


def test_log_mel_puts_a_tone_in_the_right_band():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    low, high = (log_mel(np.sin(2 * np.pi * f * t)).mean(0).argmax() for f in (300.0, 3000.0))
    assert low < high
    mel = lambda f: 1127 * math.log(1 + f / 700)
    expected = lambda f: (mel(f) - mel(60.0)) / (mel(7600.0) - mel(60.0)) * (N_MELS + 1) - 1
    assert abs(low - expected(300.0)) <= 1.5 and abs(high - expected(3000.0)) <= 1.5


def test_utterance_features():
    waves = [synthesize("1"), synthesize("234"), synthesize("5678")]
    feats = utterance_features(waves, batch_size=2)
    assert [f.shape for f in feats] == [((1 + (len(w) - FRAME_LENGTH) // FRAME_STEP) // STACK, N_FEATURES)
                                        for w in waves]
    np.testing.assert_allclose(utterance_features([waves[1]])[0], feats[1], atol=1e-4)
    np.testing.assert_allclose(utterance_features([waves[1].astype(np.float32) / 32768])[0], feats[1], atol=1e-4)
    frames = feats[2].reshape(-1, N_MELS)
    assert np.abs(frames.mean(0)).max() < 0.1 and np.abs(frames.std(0) - 1).max() < 0.1
    assert not np.any(np.all(np.concatenate(feats) == 0, axis=1))  # no real step looks like padding
    with pytest.raises(ValueError, match="waves must hold at least one waveform"):
        utterance_features([])
    with pytest.raises(ValueError, match=r"waves\[1\] must be one channel"):
        utterance_features([waves[0], np.ones(MIN_SAMPLES - 1)])
    assert utterance_features([waves[0][:MIN_SAMPLES]])[0].shape == (1, N_FEATURES)  # the shortest: one step
    with pytest.raises(ValueError, match=r"waves\[0\] must be finite and not silent"):
        utterance_features([np.zeros(5000, np.int16)])


def test_add_noise_snr():
    wave = synthesize("31")
    rng = np.random.default_rng(0)
    for snr in [0.0, 10.0, 30.0]:
        noisy = add_noise(wave, snr, rng)
        clean = wave.astype(np.float32) / 32768
        signal, noise = np.mean(clean.astype(np.float64) ** 2), np.mean((noisy - clean).astype(np.float64) ** 2)
        measured = 10 * np.log10(signal / noise)
        assert abs(measured - snr) < 0.2


def test_add_noise_refuses_bad_arguments():
    wave, rng = synthesize("3"), np.random.default_rng(0)
    for snr in (math.nan, math.inf, -math.inf, -31.0, "10", True, None):
        with pytest.raises(ValueError, match="snr_db must be a finite number >= -30"):
            add_noise(wave, snr, rng)
    for bad in (np.zeros((2, 3), np.float32), np.zeros(0, np.float32), np.zeros(5, np.int32), np.array(["a"])):
        with pytest.raises(ValueError, match="wave must be a non-empty 1-D int16 or float array"):
            add_noise(bad, 10.0, rng)
    with pytest.raises(ValueError, match="wave must be finite"):
        add_noise(np.array([0.1, np.nan], np.float32), 10.0, rng)
    with pytest.raises(ValueError, match="rng must be a numpy.random.Generator, got int"):
        add_noise(wave, 10.0, 0)
    assert np.isfinite(add_noise(wave, -30.0, rng)).all()


# --- the data set --------------------------------------------------------------------------------------------------

def test_spoken_digits_is_seeded_and_cached(tmp_path):
    train, test = voice_split()
    data = spoken_digits(12, test, seed=3, snr_db=(5.0, 20.0), max_digits=3, cache_dir=tmp_path)
    assert isinstance(data, SpokenDigits) and len(data) == 12
    assert all(1 <= len(d) <= 3 and d.isdigit() for d in data.digits)
    assert all(v.split("+")[0] in ACCENTS and v.split("+")[1] in test for v in data.voices)
    assert np.all((data.snr_db >= 5) & (data.snr_db <= 20))
    assert all(f.dtype == np.float16 and f.shape[1] == N_FEATURES for f in data.features)
    files = list((tmp_path / "speech").glob("spoken-digits-*.npz"))
    assert len(files) == 1
    with pytest.MonkeyPatch.context() as mp:  # the second time nothing is synthesised
        mp.setattr(speech, "synthesize", lambda *a, **k: pytest.fail("synthesised again instead of reading the cache"))
        again = spoken_digits(12, test, seed=3, snr_db=(5.0, 20.0), max_digits=3, cache_dir=tmp_path)
    assert again.digits == data.digits and again.voices == data.voices
    for a, b in zip(again.features, data.features): np.testing.assert_array_equal(a, b)
    good = files[0].read_bytes()
    for damaged in [b"damaged", good[:len(good) // 2], good[:-40]]:  # a damaged cache is made again
        files[0].write_bytes(damaged)
        remade = spoken_digits(12, test, seed=3, snr_db=(5.0, 20.0), max_digits=3, cache_dir=tmp_path)
        for a, b in zip(remade.features, data.features): np.testing.assert_array_equal(a, b)
    from rnn_tutorial.persist import read_npz, write_npz  # a readable cache whose arrays do not fit: made again
    arrays, meta = read_npz(files[0], speech.SPEECH_CACHE_FORMAT)
    for change in ({"lengths": arrays["lengths"][:-1]}, {"lengths": arrays["lengths"] + 1},
                   {"features": arrays["features"][:, :-1]}, {"digits": arrays["digits"][:-1]},
                   {"features": np.full_like(arrays["features"], np.nan)}, {"extra": np.zeros(1)}):
        write_npz(files[0], {**arrays, **change}, meta)
        remade = spoken_digits(12, test, seed=3, snr_db=(5.0, 20.0), max_digits=3, cache_dir=tmp_path)
        assert remade.digits == data.digits
        for a, b in zip(remade.features, data.features): np.testing.assert_array_equal(a, b)
    clean = spoken_digits(12, test, seed=3, max_digits=3, cache_dir=tmp_path)
    assert clean.digits == data.digits and np.all(np.isinf(clean.snr_db))  # noise never changes what is said
    assert len(list((tmp_path / "speech").glob("*.npz"))) == 2
    assert spoken_digits(12, test, seed=4, max_digits=3, cache_dir=tmp_path).digits != data.digits


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=0), "n must be an integer >= 1"),
    (dict(variants=()), "variants must be a non-empty sequence"),
    (dict(variants="m1"), "variants must be a non-empty sequence"),
    (dict(variants=("m1", "nobody")), "variants must be a non-empty sequence"),
    (dict(snr_db=(20.0, 5.0)), "snr_db must be None"),
    (dict(snr_db=(5.0,)), "snr_db must be None"),
    (dict(snr_db=-40.0), "snr_db must be a finite number >= -30"),
    (dict(snr_db=float("nan")), "snr_db must be a finite number"),
    (dict(max_digits=0), "max_digits must be an integer >= 1"),
])
def test_spoken_digits_bad_input(kwargs, message, tmp_path):
    args = dict(n=2, variants=("m1",), cache_dir=tmp_path) | kwargs
    with pytest.raises(ValueError, match=message):
        spoken_digits(**args)
    assert not (tmp_path / "speech").exists()


# --- CTC -----------------------------------------------------------------------------------------------------------

def random_log_probs(rng, T, K):
    return np.log(rng.dirichlet(np.ones(K), size=T))


def test_collapse():
    assert ctc_collapse([1, 1, 0, 2, 2, 0]) == (1, 2)
    assert ctc_collapse([1, 1, 0, 1]) == (1, 1)
    assert ctc_collapse([1, 1, 1]) == (1,)
    assert ctc_collapse([]) == () and ctc_collapse([0, 0, 0]) == ()
    assert ctc_collapse([2, 0, 2], blank=2) == (0,)


@pytest.mark.parametrize("seed", range(8))
def test_forward_algorithm_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    T, K = int(rng.integers(1, 7)), int(rng.integers(2, 5))
    lp = random_log_probs(rng, T, K)
    exact = ctc_brute_force(lp)
    assert math.isclose(sum(math.exp(v) for v in exact.values()), 1.0, rel_tol=1e-12)
    for y, v in exact.items():
        assert math.isclose(ctc_log_likelihood(lp, y), v, rel_tol=1e-10, abs_tol=1e-12)
    assert ctc_log_likelihood(lp, [1] * (T + 1)) == -math.inf  # longer than the input


def test_forward_algorithm_matches_tensorflow():
    rng = np.random.default_rng(0)
    T, K = 30, 6
    lp = random_log_probs(rng, T, K).astype(np.float32)
    labels = [[1, 2, 3], [4, 4, 4, 4], [5], [1, 2, 1, 2, 1, 2, 1, 2]]
    y = np.zeros((len(labels), 8), np.int32)
    for i, l in enumerate(labels): y[i, :len(l)] = l
    loss = tf.nn.ctc_loss(y, np.repeat(lp[None], len(labels), 0), [len(l) for l in labels], [T] * len(labels),
                          logits_time_major=False, blank_index=BLANK).numpy()
    np.testing.assert_allclose(loss, [-ctc_log_likelihood(lp, l) for l in labels], rtol=1e-5)


def test_forward_algorithm_is_stable_on_long_inputs():
    rng = np.random.default_rng(1)
    lp = random_log_probs(rng, 2000, 11)
    v = ctc_log_likelihood(lp, rng.integers(1, 11, 50))
    assert np.isfinite(v) and v < 0


@pytest.mark.parametrize("seed", range(6))
def test_decoders_against_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    lp = random_log_probs(rng, 6, 3)
    exact = ctc_brute_force(lp)
    full = ctc_prefix_beam_search(lp, beam_width=None)
    assert {y for y, _ in full} == {y for y, v in exact.items() if v > -np.inf}
    for y, v in full: assert math.isclose(v, exact[y], rel_tol=1e-9)
    assert [v for _, v in full] == sorted((v for _, v in full), reverse=True)
    best = max(exact, key=exact.get)
    assert ctc_prefix_beam_search(lp, beam_width=len(exact))[0][0] == best
    for width in (1, 2, 3):  # a pruned search keeps fewer paths: its scores are lower bounds of the exact ones
        for y, v in ctc_prefix_beam_search(lp, width): assert v <= exact[y] + 1e-12
    paths = {}
    for path in np.ndindex(*(3,) * 6):  # the greedy labelling is that of the single most probable path
        paths[path] = lp[np.arange(6), path].sum()
    assert ctc_greedy_decode(lp) == ctc_collapse(max(paths, key=paths.get))


def test_greedy_is_not_always_the_best_labelling():
    lp = np.log([[0.6, 0.4], [0.6, 0.4]])
    assert ctc_greedy_decode(lp) == ()
    assert ctc_prefix_beam_search(lp, 2)[0][0] == (1,)
    assert math.isclose(math.exp(ctc_prefix_beam_search(lp, 2)[0][1]), 0.64)


@pytest.mark.parametrize("fn", [ctc_greedy_decode, ctc_brute_force, ctc_prefix_beam_search,
                                lambda lp: ctc_log_likelihood(lp, [1])])
@pytest.mark.parametrize("bad", [np.zeros(3), np.zeros((0, 3)), np.zeros((2, 1)), np.full((2, 3), np.nan),
                                 np.full((2, 3), np.inf)])
def test_decoders_bad_input(fn, bad):
    with pytest.raises(ValueError, match="log_probs must be a"):
        fn(bad)


def test_impossible_symbols_are_allowed():
    with np.errstate(divide="ignore"):
        lp = np.log([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # log 0 = -inf: certain steps
        assert ctc_greedy_decode(lp) == (1,)
        assert ctc_prefix_beam_search(lp, 2) == [((1,), 0.0)]
        assert ctc_log_likelihood(lp, [1]) == 0.0 and ctc_log_likelihood(lp, [1, 1]) == -math.inf


@pytest.mark.parametrize("fn", [ctc_greedy_decode, ctc_brute_force, ctc_prefix_beam_search,
                                lambda lp, blank: ctc_log_likelihood(lp, [1], blank)])
@pytest.mark.parametrize("blank", [-1, 3, 1.0, True])
def test_blank_must_be_a_symbol(fn, blank):
    with pytest.raises(ValueError, match=r"blank must be a symbol in \[0, 3\)"):
        fn(np.log(np.full((2, 3), 1 / 3)), blank=blank)


def test_ctc_other_errors():
    lp = np.log(np.full((3, 3), 1 / 3))
    with pytest.raises(ValueError, match="labels must be symbols"):
        ctc_log_likelihood(lp, [0])
    with pytest.raises(ValueError, match="labels must be symbols"):
        ctc_log_likelihood(lp, [3])
    with pytest.raises(ValueError, match=r"log_probs must have at most 2,000,000 paths to list, got 11\*\*20"):
        ctc_brute_force(np.log(np.full((20, 11), 1 / 11)))
    with pytest.raises(ValueError, match="beam_width"):
        ctc_prefix_beam_search(lp, 0)


def test_edit_distance_and_error_rate():
    assert edit_distance("314", "314") == 0
    assert edit_distance("314", "") == 3 and edit_distance("", "31") == 2
    assert edit_distance("314", "3145") == edit_distance("314", "14") == edit_distance("314", "324") == 1
    assert edit_distance("kitten", "sitting") == 3
    rng = np.random.default_rng(0)
    for _ in range(50):
        a, b = ("".join(map(str, rng.integers(0, 3, rng.integers(0, 6)))) for _ in range(2))
        assert edit_distance(a, b) == edit_distance(b, a) <= max(len(a), len(b))
        assert edit_distance(a, b) >= abs(len(a) - len(b))
    assert digit_error_rate(["12", "345"], ["12", "3"]) == pytest.approx(2 / 5)
    assert digit_error_rate(["1"], ["2222"]) == 4.0
    with pytest.raises(ValueError, match="equal length"):
        digit_error_rate(["1"], ["1", "2"])
    with pytest.raises(ValueError, match="equal length"):
        digit_error_rate([], [])
    with pytest.raises(ValueError, match="references must hold at least one digit"):
        digit_error_rate([""], ["1"])


# --- the model -----------------------------------------------------------------------------------------------------

def test_model_shapes_and_masking():
    model = acoustic_model(units=8)
    x = np.random.default_rng(0).standard_normal((2, 9, N_FEATURES)).astype(np.float32)
    assert model(x).shape == (2, 9, 11)
    padded = np.concatenate([x[:1], np.zeros((1, 4, N_FEATURES), np.float32)], axis=1)
    np.testing.assert_allclose(model(padded)[0, :9], model(x[:1])[0], atol=1e-5)  # padding does not leak backwards
    framewise = acoustic_model(units=8, recurrent=False)
    assert not any("gru" in l.name for l in framewise.layers)
    np.testing.assert_allclose(framewise(x[:, :4])[0], framewise(x)[0, :4], atol=1e-6)  # no context at all
    with pytest.raises(ValueError, match="units must be an integer"):
        acoustic_model(units=0)


def test_train_and_transcribe_tiny(tmp_path):
    train, _ = voice_split()
    data = spoken_digits(24, train, seed=5, max_digits=2, cache_dir=tmp_path)
    keras.utils.set_random_seed(0)
    model = acoustic_model(units=8, n_layers=1)
    history = train_ctc(model, data, epochs=2, batch_size=8)
    assert len(history) == 2 and all(np.isfinite(history)) and history[1] < history[0]
    lp = ctc_log_probs(model, data.features)
    assert [len(p) for p in lp] == [len(f) for f in data.features]
    np.testing.assert_allclose(np.exp(lp[0]).sum(1), 1, rtol=1e-5)
    for beam in (None, 4):
        text = transcribe(model, data.features, beam_width=beam)
        assert len(text) == len(data) and all(set(t) <= set("0123456789") for t in text)
    with pytest.raises(ValueError, match="model must be a keras.Model"):
        train_ctc("model", data)
    with pytest.raises(ValueError, match="data must be a SpokenDigits"):
        train_ctc(model, data.features)
    with pytest.raises(ValueError, match="epochs must be an integer"):
        train_ctc(model, data, epochs=0)
    with pytest.raises(ValueError, match="features must hold at least one utterance"):
        ctc_log_probs(model, [])
