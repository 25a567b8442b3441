("Forecasting (`rnn_tutorial.apps.forecasting`): least squares recovers known AR coefficients, metrics, shapes, "
 "every bad-input error, the seeded Mackey-Glass generator, AR order selection, and a short version of the chapter's "
 "GRU win on Mackey-Glass.")
import numpy as np
import pytest

from rnn_tutorial.apps.forecasting import (LinearAR, TimeLimit, fit_linear_ar, forecast_metrics, forecast_rnn,
                                           mackey_glass, predict_linear_ar, return_windows, select_ar_order)
from rnn_tutorial.data import load_series, persistence_forecast, split_series, windows
from rnn_tutorial.tf_setup import configure_tensorflow, import_tensorflow, quiet_stderr

tf, keras = import_tensorflow()
configure_tensorflow()


def ar_series(coefs, intercept, n, seed, noise=0.1):
    "x_t = intercept + sum_k coefs[k] * x_{t-1-k} + noise, seeded"
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    for t in range(len(coefs), n):
        x[t] = intercept + sum(c * x[t - 1 - k] for k, c in enumerate(coefs)) + rng.normal(scale=noise)
    return x


@pytest.mark.parametrize("coefs,intercept,seed", [((0.6, -0.3), 0.5, 0), ((0.2, 0.1, 0.4), -1.0, 1), ((0.9,), 0.0, 2)])
def test_least_squares_recovers_ar_coefficients(coefs, intercept, seed):
    x = ar_series(coefs, intercept, 20_000, seed)
    X, y = windows(x, len(coefs), 1)
    model = fit_linear_ar(X, y)
    assert isinstance(model, LinearAR) and isinstance(model.intercept, float)
    np.testing.assert_allclose(model.coef, coefs[::-1], atol=0.02)  # the first column is the oldest step
    np.testing.assert_allclose(model.intercept, intercept, atol=0.03)
    resid = y - predict_linear_ar(model, X)
    np.testing.assert_allclose(resid.std(), 0.1, rtol=0.03)  # what is left is the noise


def test_exact_fit_and_normal_equations():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 4))
    w, b = np.array([1.0, -2.0, 0.5, 3.0]), 0.25
    m = fit_linear_ar(X, X @ w + b)
    np.testing.assert_allclose(m.coef, w, atol=1e-10)
    np.testing.assert_allclose(m.intercept, b, atol=1e-10)
    y = rng.normal(size=50)  # noisy: the residual is orthogonal to the columns and to the constant
    m = fit_linear_ar(X, y)
    r = y - predict_linear_ar(m, X)
    np.testing.assert_allclose(np.c_[X, np.ones(50)].T @ r, 0, atol=1e-10)


def test_several_outputs_fit_column_by_column():
    rng = np.random.default_rng(4)
    X, Y = rng.normal(size=(40, 3)), rng.normal(size=(40, 2))
    m = fit_linear_ar(X, Y)
    assert m.coef.shape == (3, 2) and m.intercept.shape == (2,)
    assert predict_linear_ar(m, X).shape == (40, 2)
    for k in range(2):
        mk = fit_linear_ar(X, Y[:, k])
        np.testing.assert_allclose(m.coef[:, k], mk.coef, atol=1e-12)
        np.testing.assert_allclose(m.intercept[k], mk.intercept, atol=1e-12)


def test_linear_ar_errors():
    with pytest.raises(ValueError, match="X must be a non-empty numeric array of shape"): fit_linear_ar(np.ones(5),
        np.ones(5))
    with pytest.raises(ValueError, match="X must be a non-empty numeric array"):
        fit_linear_ar(np.ones((0, 2)), np.ones(0))
    with pytest.raises(ValueError, match="X must be finite"): fit_linear_ar([[1.0, np.nan]] * 5, np.ones(5))
    with pytest.raises(ValueError, match="y must be finite"): fit_linear_ar(np.ones((5, 2)), [1, 2, np.inf, 4, 5])
    with pytest.raises(ValueError, match=r"y must have shape \(5,\)"): fit_linear_ar(np.ones((5, 2)), np.ones(4))
    with pytest.raises(ValueError, match="X must have at least 3 windows"): fit_linear_ar(np.ones((2, 2)), np.ones(2))
    m = fit_linear_ar(np.random.default_rng(0).normal(size=(10, 2)), np.ones(10))
    with pytest.raises(ValueError, match="X must have 2 columns"): predict_linear_ar(m, np.ones((3, 4)))
    with pytest.raises(ValueError, match="X must be finite"): predict_linear_ar(m, [[1.0, np.inf]])


def test_forecast_metrics():
    assert forecast_metrics([1.0, 2.0, 3.0], [2.0, 2.0, 1.0]) == {"mse": 5 / 3, "mae": 1.0, "n": 3}
    rng = np.random.default_rng(5)
    t, p = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    m = forecast_metrics(t, p)
    assert m["n"] == 21
    np.testing.assert_allclose(m["mse"], ((t - p) ** 2).mean())
    np.testing.assert_allclose(m["mae"], np.abs(t - p).mean())
    assert forecast_metrics(t, t) == {"mse": 0.0, "mae": 0.0, "n": 21}
    with pytest.raises(ValueError, match="same shape"): forecast_metrics([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least one value"): forecast_metrics([], [])
    with pytest.raises(ValueError, match="y_true must be finite"): forecast_metrics([np.nan, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="y_pred must be finite"): forecast_metrics([1.0, 1.0], [1.0, -np.inf])


def test_return_windows_shapes_and_values():
    _, prices = load_series()
    R, Y, last = return_windows(prices, 30, (1, 5, 20))
    m = len(prices) - 30 - 20 + 1
    assert R.shape == (m, 29) and Y.shape == (m, 3) and last.shape == (m,)
    X, y = windows(prices, 30, 5)
    np.testing.assert_allclose(last, X[:m, -1])
    np.testing.assert_allclose(last * np.exp(Y[:, 1]), y[:m], rtol=1e-12)  # the targets rebuild the true prices
    np.testing.assert_allclose(R, np.diff(np.log(X[:m]), axis=1))
    R1, Y1, _ = return_windows(prices, 30, 1)  # a bare int horizon
    assert Y1.shape == (len(prices) - 30, 1)


def test_return_windows_errors():
    # window longer than the series
    with pytest.raises(ValueError, match="needs at least 25"): return_windows(np.ones(20), 20, (5,))
    with pytest.raises(ValueError, match="horizons must be an integer >= 1"): return_windows(np.ones(20), 5, (1, 0))
    with pytest.raises(ValueError, match="horizons must be an integer >= 1"): return_windows(np.ones(20), 5, -1)
    with pytest.raises(ValueError, match="at least one horizon"): return_windows(np.ones(20), 5, ())
    with pytest.raises(ValueError, match="input_len must be an integer >= 2"): return_windows(np.ones(20), 1)
    with pytest.raises(ValueError, match="non-finite value at step 3"): return_windows([1.0, 2, 3, np.nan, 5, 6], 2)
    with pytest.raises(ValueError, match="prices must be positive"): return_windows([1.0, 2, 0, 4, 5], 2)
    with pytest.raises(ValueError, match=r"prices must have shape \(time,\)"): return_windows(np.ones((6, 2)), 2)


def test_window_errors_the_chapter_relies_on():
    with pytest.raises(ValueError, match="too short"): windows(np.ones(10), 11, 1)
    with pytest.raises(ValueError, match="horizon must be an integer >= 1"): windows(np.ones(10), 3, 0)


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_forecast_rnn_shapes(cell):
    model = forecast_rnn(12, outputs=3, units=5, cell=cell)
    assert model.input_shape == (None, 12, 1) and model.output_shape == (None, 3)
    assert type(model.layers[0]).__name__ == {"rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}[cell]
    x = np.random.default_rng(0).normal(size=(4, 12, 1)).astype("float32")
    assert model(x).shape == (4, 3)
    free = forecast_rnn(None, features=2)
    assert free(np.zeros((2, 7, 2), "float32")).shape == (2, 1) and free(np.zeros((2, 3, 2), "float32")).shape == (2, 1)


def test_forecast_rnn_errors():
    with pytest.raises(ValueError, match="cell must be one of 'rnn', 'lstm', 'gru', got 'simple'"): forecast_rnn(5,
        cell="simple")
    with pytest.raises(ValueError, match="units must be an integer >= 1"): forecast_rnn(5, units=0)
    with pytest.raises(ValueError, match="outputs must be an integer >= 1"): forecast_rnn(5, outputs=1.5)
    with pytest.raises(ValueError, match="input_len must be an integer >= 1"): forecast_rnn(0)


def test_gru_learns_an_ar_process_and_time_limit_stops():
    "A GRU fit on a strongly autocorrelated AR(1) beats persistence and the mean, as least squares does"
    keras.utils.set_random_seed(0)
    x = ar_series((0.5,), 0.0, 3000, seed=6, noise=1.0)
    X, y = windows(x, 5, 1)
    Xf, yf, Xt, yt = X[:2500], y[:2500], X[2500:], y[2500:]
    model = forecast_rnn(5, units=8)
    model.compile(keras.optimizers.Adam(1e-2), loss="mse")
    with quiet_stderr():
        model.fit(Xf[..., None], yf, epochs=8, batch_size=64, verbose=0)
        pred = model.predict(Xt[..., None], verbose=0)[:, 0]
    rnn_mse = forecast_metrics(yt, pred)["mse"]
    lin_mse = forecast_metrics(yt, predict_linear_ar(fit_linear_ar(Xf, yf), Xt))["mse"]
    persist = forecast_metrics(yt, Xt[:, -1])["mse"]  # about 1.33 for phi = 0.5; the ideal is the noise, 1
    assert lin_mse < 1.1 and rnn_mse < 1.15 and persist > 1.2, (rnn_mse, lin_mse, persist)

    limit = TimeLimit(0)
    with quiet_stderr():
        h = model.fit(Xf[..., None], yf, epochs=50, verbose=0, callbacks=[limit])
    assert limit.stopped_early and len(h.history["loss"]) == 1
    with pytest.raises(ValueError, match="seconds must be a finite number >= 0.0"): TimeLimit(-1)


def test_persistence_by_hand():
    X, y = windows(np.array([1.0, 2, 4, 8, 16]), 2, 2)  # windows [1, 2] and [2, 4]; targets 8 and 16
    np.testing.assert_array_equal(persistence_forecast(X), [2.0, 4.0])
    assert forecast_metrics(y, persistence_forecast(X)) == {"mse": (36 + 144) / 2, "mae": 9.0, "n": 2}


def test_mackey_glass_is_seeded_and_deterministic():
    a = mackey_glass(300, noise=0.02, seed=3)
    assert a.shape == (300,) and a.dtype == np.float64
    np.testing.assert_array_equal(a, mackey_glass(300, noise=0.02, seed=3))  # bit for bit
    assert np.abs(a - mackey_glass(300, noise=0.02, seed=4)).max() > 0.3  # another seed, another trajectory
    clean = mackey_glass(300, seed=3)
    assert 0.2 < clean.min() and clean.max() < 1.5 and clean.std() > 0.15  # an oscillation in the attractor's range
    np.testing.assert_allclose((a - clean).std(), 0.02, rtol=0.2)  # the noise sits on the same trajectory
    np.testing.assert_array_equal(mackey_glass(100, seed=3), clean[:100])  # a shorter series is a prefix


def test_mackey_glass_follows_the_euler_step():
    "Sampled at every Euler step, the series obeys x[k+1] = x[k] + dt (0.2 x[k-lag] / (1 + x[k-lag]^10) - 0.1 x[k])"
    dt, tau = 0.1, 17.0
    x = mackey_glass(1000, tau=tau, sample_every=dt, dt=dt, burn_in=0.0, seed=5)
    lag = round(tau / dt)
    d = x[:-lag - 1]
    np.testing.assert_allclose(x[lag + 1:] - x[lag:-1], dt * (0.2 * d / (1 + d ** 10) - 0.1 * x[lag:-1]),
                               rtol=1e-9, atol=1e-13)


def test_mackey_glass_errors():
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"): mackey_glass(0)
    with pytest.raises(ValueError, match="tau must be a finite number > 0.0"): mackey_glass(10, tau=0)
    with pytest.raises(ValueError, match="sample_every must be a finite number > 0.0"): mackey_glass(10,
        sample_every=float("nan"))
    with pytest.raises(ValueError, match="noise must be a finite number >= 0.0"): mackey_glass(10, noise=-0.1)
    with pytest.raises(ValueError, match="burn_in must be a finite number >= 0.0"): mackey_glass(10, burn_in=-1.0)
    with pytest.raises(ValueError, match="dt must be at most"): mackey_glass(10, dt=20.0)


def test_select_ar_order_by_hand():
    rng = np.random.default_rng(7)
    Xf, Xv = rng.normal(size=(40, 4)), rng.normal(size=(20, 4))
    w = np.array([0.0, 0.0, 1.0, -2.0])  # only the last two steps matter
    yf, yv = Xf @ w + 0.01 * rng.normal(size=40), Xv @ w + 0.01 * rng.normal(size=20)
    model, order, mse = select_ar_order(Xf, yf, Xv, yv)
    assert mse.shape == (4,)
    for p in range(1, 5):  # each order fit on the last p steps and scored on the validation windows
        m = fit_linear_ar(Xf[:, -p:], yf)
        np.testing.assert_allclose(mse[p - 1], np.mean((predict_linear_ar(m, Xv[:, -p:]) - yv) ** 2), rtol=1e-12)
    assert order == int(np.argmin(mse)) + 1 and len(model.coef) == order >= 2
    assert mse[0] > 100 * mse[1]  # order 1 misses the step before last
    np.testing.assert_allclose(model.coef[-2:], [1.0, -2.0], atol=0.02)
    with pytest.raises(ValueError, match="X_val must have 4 columns like X_fit, got 3"):
        select_ar_order(Xf, yf, Xv[:, 1:], yv)
    with pytest.raises(ValueError, match="X_fit must be a non-empty numeric array"): select_ar_order(yf, yf, Xv, yv)


def test_gru_beats_persistence_and_linear_ar_on_mackey_glass():
    "A short version of chapter 11's result: on a chaotic series the GRU's MSE is under 0.7 of the best baseline"
    keras.utils.set_random_seed(0)
    s = mackey_glass(800, noise=0.02)
    train, test = split_series(s, 0.2)
    fit, val = split_series(train, 0.2)
    mu, sd = fit.mean(), fit.std()
    (Xf, yf), (Xv, yv), (Xt, yt) = (windows((p - mu) / sd, 30, 5) for p in (fit, val, test))
    lin, order, _ = select_ar_order(Xf, yf, Xv, yv)
    lin_mse = forecast_metrics(yt, predict_linear_ar(lin, Xt[:, -order:]))["mse"]
    per_mse = forecast_metrics(yt, persistence_forecast(Xt))["mse"]
    model = forecast_rnn(20, units=8)
    model.compile(keras.optimizers.Adam(1e-2), loss="mse")
    with quiet_stderr():
        model.fit(Xf[:, -20:, None], yf, epochs=5, batch_size=32, verbose=0)
        gru_mse = forecast_metrics(yt, model.predict(Xt[:, -20:, None], verbose=0)[:, 0])["mse"]
    assert lin_mse < per_mse and gru_mse <= 0.7 * min(lin_mse, per_mse), (gru_mse, lin_mse, per_mse)
