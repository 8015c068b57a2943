"""The streaming runtime on hand-built stacks with random weights (the NumPy float64 reference
is the oracle; the runtime runs a float32 engine).

Exact mode against the window model on every sliding window, continuous mode against state
carried by hand, many interleaved streams against each stream alone, horizon roll-outs
against iterating by hand, and the per-stream handling of bad values, duplicates and gaps.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from edge_lstm.errors import BundleError, ConfigError, SampleError
from edge_lstm.forecaster import Dropped, Forecast, Quality, Runtime, Sample, StateExport
from edge_lstm_export.emit_numpy import reference
from edge_lstm_export.stack import Dense, Recurrent, Stack

TOL = 1e-5


def random_stack(
    kind: str = "lstm",
    units: tuple[int, ...] = (8, 6),
    features: int = 1,
    outputs: int = 1,
    window: int | None = 6,
    seed: int = 0,
    reset_after: bool = True,
) -> Stack:
    """A recurrent stack with random weights (canonical layout), big enough to be non-trivial."""
    rng = np.random.default_rng(seed)
    gates = 4 if kind == "lstm" else 3
    layers, width = [], features
    for k, u in enumerate(units):
        layers.append(
            Recurrent(
                kind,
                u,
                rng.normal(0, 0.5, (width, gates * u)),
                rng.normal(0, 0.5, (u, gates * u)),
                rng.normal(0, 0.2, gates * u),
                rng.normal(0, 0.2, gates * u) if kind == "gru" else None,
                reset_after=reset_after,
                name=f"{kind}{k}",
            )
        )
        width = u
    head = (Dense(rng.normal(0, 0.5, (width, outputs)), rng.normal(0, 0.1, outputs), name="dense"),)
    return Stack(tuple(layers), head, window=window)


def names(n: int, prefix: str = "f") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def make_runtime(stack: Stack, features: list[str] | None = None, targets: list[str] | None = None, **kw) -> Runtime:
    """A Runtime on the float32 NumPy engine of `stack`."""
    features = features or names(stack.features)
    if targets is None:
        targets = features if stack.outputs == stack.features else names(stack.outputs, "t")
    return Runtime(reference(stack, np.float32), features=features, targets=targets, window=stack.window, **kw)


def series(n: int, features: int = 1, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (n, features)).astype(np.float32)


# -- exact mode ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind,reset_after,features,window",
    [("lstm", True, 1, 6), ("gru", True, 1, 6), ("gru", False, 2, 6), ("lstm", True, 3, 6), ("lstm", True, 2, 1),
     ("gru", True, 1, 2)],
)
def test_exact_mode_equals_the_window_model_on_every_sliding_window(kind, reset_after, features, window):
    """W = 1 too: the lag-1 recipe's model sees one sample from zero state, never a carried one."""
    stack = random_stack(kind, features=features, outputs=features, reset_after=reset_after, window=window)
    oracle = reference(stack)  # float64
    rt = make_runtime(stack, mode="exact")
    xs = series(40, features)
    got = [rt.push("s", x, ts=float(i)) for i, x in enumerate(xs)]
    w = stack.window
    windows = np.stack([xs[i - w + 1 : i + 1] for i in range(w - 1, len(xs))]).astype(np.float64)
    want = oracle.run_window(windows)
    have = np.stack([f.values[0] for f in got[w - 1 :]])
    assert np.abs(have - want).max() <= TOL
    assert [f.warming_up for f in got] == [True] * (w - 1) + [False] * (len(xs) - w + 1)
    assert [f.seq for f in got] == list(range(1, len(xs) + 1))
    # during warm-up the forecast is the window model on the shorter history seen so far
    for n in range(w - 1):
        short = oracle.run_window(xs[None, : n + 1].astype(np.float64))[0]
        assert np.abs(got[n].values[0] - short).max() <= TOL


@pytest.mark.parametrize("window", [5, 1])
def test_exact_mode_through_push_many_rounds_equals_push(window):
    stack = random_stack(window=window)
    xs = series(23)
    one = make_runtime(stack)
    want = [one.push("s", x) for x in xs]
    many = make_runtime(stack)
    got = many.push_many([Sample("s", x) for x in xs])  # 23 rounds of one stream
    assert all(isinstance(f, Forecast) for f in got)
    assert np.allclose([f.values for f in got], [f.values for f in want], atol=0, rtol=0)
    assert np.array_equal(one.state_of("s"), many.state_of("s"))


def test_window_of_one_never_carries_state():
    """W = 1 (the lag-1 recipe): every forecast is the model on that one sample from zero state,
    through push, push_many and a horizon roll-out (each step fed only the forecast before it)."""
    stack = random_stack(features=2, outputs=2, window=1)
    oracle = reference(stack)
    xs = series(9, 2)
    rt = make_runtime(stack, horizon=3)
    pushed = [rt.push("a", x) for x in xs]
    many = [f for x in xs for f in rt.push_many([Sample("b", x), Sample("c", -x)])]
    for x, f, fb, fc in zip(xs, pushed, many[0::2], many[1::2]):
        step = x[None, None, :].astype(np.float64)
        for k in range(3):
            want = oracle.run_window(step)
            for got in (f, fb):
                assert np.abs(got.values[k] - want[0]).max() <= TOL
            step = want[:, None, :]
        assert np.abs(fc.values[0] - oracle.run_window(-x[None, None, :].astype(np.float64))[0]).max() <= TOL


def test_push_many_keeps_the_same_books_as_push():
    stack = random_stack(window=3)
    xs = series(12)
    one, many = make_runtime(stack, quality_window=4), make_runtime(stack, quality_window=4)
    for i, x in enumerate(xs):
        one.push("a", x, ts=float(i))
        one.push("b", -x, ts=float(i))
        many.push_many([Sample("a", x, float(i)), Sample("b", -x, float(i))])
    for s in ("a", "b"):
        assert many.recent(s) == one.recent(s) and len(many.recent(s)) == 3
        assert many.quality(s) == one.quality(s) and many.quality(s).n == 4
    assert many.counters() == one.counters()


# -- continuous mode -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_continuous_mode_equals_state_carried_by_hand(kind):
    stack = random_stack(kind, window=None)
    oracle = reference(stack)
    rt = make_runtime(stack, mode="continuous")
    xs = series(50)
    state = np.zeros((1, stack.state_size))
    for i, x in enumerate(xs):
        y, state = oracle.step(x[None].astype(np.float64), state)
        f = rt.push("s", x, ts=float(i))
        assert np.abs(f.values[0] - y[0]).max() <= TOL
        assert not f.warming_up  # no window: nothing to warm up to
    assert np.abs(rt.state_of("s")[0] - state[0]).max() <= TOL


def test_exact_mode_needs_a_window():
    with pytest.raises(ConfigError, match="window"):
        make_runtime(random_stack(window=None), mode="exact")


# -- many streams ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["continuous", "exact"])
def test_1000_interleaved_streams_through_push_many_equal_each_stream_alone(mode):
    stack = random_stack(units=(6,), window=4)
    rng = np.random.default_rng(7)
    streams = [f"sensor-{i}" for i in range(1000)]
    per_stream = {s: series(int(rng.integers(1, 9)), seed=i) for i, s in enumerate(streams)}
    # interleave: a random order of all samples that keeps each stream's own order
    order = np.concatenate([[i] * len(per_stream[s]) for i, s in enumerate(streams)])
    rng.shuffle(order)
    taken = dict.fromkeys(streams, 0)
    samples = []
    for i in order.tolist():
        s = streams[i]
        samples.append(Sample(s, per_stream[s][taken[s]], ts=float(taken[s])))
        taken[s] += 1
    rt = make_runtime(stack, mode=mode)
    got: list = []
    for start in range(0, len(samples), 1500):  # several calls, several rounds each
        got += rt.push_many(samples[start : start + 1500])
    alone = make_runtime(stack, mode=mode)
    want = {s: [alone.push(s, x, ts=float(k)) for k, x in enumerate(per_stream[s])] for s in streams}
    seen = dict.fromkeys(streams, 0)
    for sample, f in zip(samples, got):
        w = want[sample.stream][seen[sample.stream]]
        seen[sample.stream] += 1
        assert isinstance(f, Forecast) and f.stream == sample.stream and f.seq == w.seq
        assert f.warming_up == w.warming_up and f.ts == sample.ts
        np.testing.assert_allclose(f.values, w.values, atol=1e-6)
    for s in streams:
        np.testing.assert_allclose(rt.state_of(s), alone.state_of(s), atol=1e-6)
    assert rt.counters()["forecasts"] == len(samples) and sorted(rt.streams()) == sorted(streams)


# -- horizon ---------------------------------------------------------------------------------
def test_continuous_horizon_rolls_out_on_a_copy_of_the_state():
    stack = random_stack(window=None)
    oracle = reference(stack)
    xs = series(12)
    rt = make_runtime(stack, mode="continuous", horizon=4)
    plain = make_runtime(stack, mode="continuous")
    state = np.zeros((1, stack.state_size))
    for i, x in enumerate(xs):
        f = rt.push("s", x)
        plain.push("s", x)
        y, state = oracle.step(x[None].astype(np.float64), state)
        want, s2 = [y[0]], state.copy()
        for _ in range(3):
            y2, s2 = oracle.step(want[-1][None], s2)
            want.append(y2[0])
        assert f.values.shape == (4, 1) and f.horizon == 4
        assert np.abs(f.values - np.array(want)).max() <= TOL
        # the live state is the one-step state: the roll-out never touched it
        np.testing.assert_array_equal(rt.state_of("s"), plain.state_of("s"))


def test_exact_horizon_equals_iterating_the_window_model_by_hand():
    stack = random_stack(features=2, outputs=2, window=5)
    oracle = reference(stack)
    xs = series(16, features=2)
    rt = make_runtime(stack, mode="exact", horizon=7)  # longer than the window
    plain = make_runtime(stack, mode="exact")
    got = [rt.push_many([Sample("a", x), Sample("b", x[::-1].copy())])[0] for x in xs]
    for x in xs:
        plain.push("a", x)
    w = stack.window
    for n in range(w - 1, len(xs)):
        hist = [row.astype(np.float64) for row in xs[: n + 1]]
        want = []
        for _ in range(7):
            y = oracle.run_window(np.array(hist[-w:])[None])[0]
            want.append(y)
            hist.append(y)
        assert np.abs(got[n].values - np.array(want)).max() <= TOL, n
    np.testing.assert_array_equal(rt.state_of("a"), plain.state_of("a"))


def test_horizon_feeds_back_targets_in_feature_order():
    stack = random_stack(features=2, outputs=2, window=None)
    oracle = reference(stack)
    rt = make_runtime(stack, features=["a", "b"], targets=["b", "a"], mode="continuous", horizon=2)
    x = np.array([0.3, -0.2], np.float32)
    f = rt.push("s", x)
    y, state = oracle.step(x[None].astype(np.float64), np.zeros((1, stack.state_size)))
    y2, _ = oracle.step(y[:, [1, 0]], state)  # y is (b, a); the next sample is (a, b)
    assert np.abs(f.values - np.stack([y[0], y2[0]])).max() <= TOL


def test_horizon_needs_targets_that_are_the_features():
    stack = random_stack(features=2, outputs=1)
    with pytest.raises(ConfigError, match="horizon 3"):
        make_runtime(stack, targets=["t0"], horizon=3)
    make_runtime(stack, targets=["t0"], horizon=1)  # fine without a roll-out


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "values,match",
    [
        ([float("nan")], "NaN"),
        ([float("inf")], "NaN, infinite"),
        ([1e39], "float32"),
        ([1.0, 2.0], "expected 1 value"),
        ([], "expected 1 value"),
        (["abc"], "not numbers"),
        (None, "not numbers"),
    ],
)
def test_bad_values_raise_and_touch_no_state(values, match):
    rt = make_runtime(random_stack(), mode="exact")
    for i, x in enumerate(series(8)):
        rt.push("a", x, ts=float(i))
        rt.push("b", -x, ts=float(i))
    before = rt.export_state()
    with pytest.raises(SampleError, match=match) as err:
        rt.push("a", values, ts=100.0)
    assert err.value.stream == "a"
    after = rt.export_state()
    np.testing.assert_array_equal(before.states, after.states)
    np.testing.assert_array_equal(before.seq, after.seq)
    np.testing.assert_array_equal(before.last_ts, after.last_ts)
    assert rt.counters()["rejected"] == 1
    # a bad first sample does not even create the stream
    with pytest.raises(SampleError):
        rt.push("c", values)
    assert "c" not in rt.streams()


@pytest.mark.parametrize(
    "stream,ts,match",
    [("", None, "1 to 256"), ("a/+/b", None, "wildcard"), (7, None, "string"), ("ok", float("nan"), "timestamp"), ("ok", "noon", "timestamp")],
)
def test_bad_stream_ids_and_timestamps_raise(stream, ts, match):
    rt = make_runtime(random_stack())
    with pytest.raises(SampleError, match=match):
        rt.push(stream, [1.0], ts=ts)
    assert rt.streams() == []


def test_push_many_reports_bad_samples_in_place_and_steps_the_others():
    stack = random_stack(window=3)
    rt = make_runtime(stack)
    ref = make_runtime(stack)
    for i, x in enumerate(series(4)):
        rt.push_many([Sample("a", x, float(i)), Sample("b", x, float(i))])
        ref.push("a", x, float(i))
    before_b = rt.state_of("b")
    out = rt.push_many(
        [
            Sample("a", [0.5], 10.0),
            Sample("b", [float("nan")], 10.0),
            Sample("new", [1.0, 2.0], 1.0),
            Sample("x+y", [1.0]),
            Sample("b", [0.1], float("inf")),
        ]
    )
    assert isinstance(out[0], Forecast)
    assert [type(o) for o in out[1:]] == [SampleError] * 4
    assert "NaN" in str(out[1]) and "expected 1 value" in str(out[2]) and "wildcard" in str(out[3])
    assert "timestamp" in str(out[4])
    np.testing.assert_array_equal(rt.state_of("b"), before_b)
    assert sorted(rt.streams()) == ["a", "b"]
    np.testing.assert_allclose(out[0].values, ref.push("a", [0.5], 10.0).values, atol=1e-6)
    assert rt.counters()["rejected"] == 4


@pytest.mark.parametrize(
    "values,ts",
    [("1", None), ([1.0], "12.5"), ([1.0], True and float("-inf")), (np.array([[1.0, 2.0]]), None), ([[1.0]], 3.0)],
)
def test_push_and_push_many_judge_samples_alike(values, ts):
    rt = make_runtime(random_stack())
    try:
        want = rt.push("s", values, ts)
    except SampleError as exc:
        want = exc
    rt2 = make_runtime(random_stack())
    got = rt2.push_many([Sample("ok", [0.5]), Sample("s", values, ts), Sample("ok2", [0.5])])[1]
    assert type(got) is type(want)
    if isinstance(want, SampleError):
        assert str(got) == str(want) and rt2.streams() == ["ok", "ok2"]
    else:
        np.testing.assert_array_equal(got.values, want.values)


# -- time ------------------------------------------------------------------------------------
def test_duplicates_and_out_of_order_are_dropped_counted_and_leave_state_alone():
    rt = make_runtime(random_stack())
    rt.push("a", [0.1], ts=10.0)
    rt.push("a", [0.2], ts=11.0)
    rt.push("b", [0.3], ts=5.0)
    state = rt.state_of("a")
    dup = rt.push("a", [0.9], ts=11.0)
    late = rt.push("a", [0.9], ts=10.5)
    assert dup == Dropped("a", 11.0, "duplicate") and late == Dropped("a", 10.5, "out-of-order")
    np.testing.assert_array_equal(rt.state_of("a"), state)
    # per stream: b's clock is its own
    assert isinstance(rt.push("b", [0.3], ts=6.0), Forecast)
    out = rt.push_many([Sample("a", [1.0], 11.0), Sample("b", [1.0], 2.0), Sample("a", [1.0], 12.0)])
    assert out[0] == Dropped("a", 11.0, "duplicate") and out[1] == Dropped("b", 2.0, "out-of-order")
    assert isinstance(out[2], Forecast) and out[2].seq == 3
    c = rt.counters()
    assert (c["duplicates"], c["out_of_order"], c["forecasts"]) == (2, 2, 5)


def test_samples_without_timestamps_are_taken_in_arrival_order():
    rt = make_runtime(random_stack())
    a = rt.push("a", [0.1])
    b = rt.push("a", [0.1])
    assert isinstance(b, Forecast) and (a.seq, b.seq) == (1, 2) and b.ts is None


@pytest.mark.parametrize("mode", ["exact", "continuous"])
def test_a_gap_resets_the_stream_or_carries_on(mode):
    stack = random_stack(window=4)
    xs = series(10)
    resetting = make_runtime(stack, mode=mode, max_gap=60.0)
    carrying = make_runtime(stack, mode=mode, max_gap=60.0, gap_policy="carry")
    unlimited = make_runtime(stack, mode=mode)
    fresh = make_runtime(stack, mode=mode)
    for rt in (resetting, carrying, unlimited):
        for i, x in enumerate(xs[:6]):
            rt.push("a", x, ts=float(i))
            rt.push("other", x, ts=float(i))
    other = resetting.state_of("other")
    after_gap = 6.0 + 1000.0
    r = resetting.push("a", xs[6], ts=after_gap)
    c = carrying.push("a", xs[6], ts=after_gap)
    u = unlimited.push("a", xs[6], ts=after_gap)
    f = fresh.push("a", xs[6], ts=0.0)
    np.testing.assert_allclose(r.values, f.values, atol=1e-6)  # as if the stream had just started
    assert r.warming_up and r.seq == 7
    np.testing.assert_array_equal(c.values, u.values)
    assert not np.allclose(c.values, r.values)
    assert resetting.counters()["gaps"] == 1 and carrying.counters()["gaps"] == 1 and unlimited.counters()["gaps"] == 0
    np.testing.assert_array_equal(resetting.state_of("other"), other)
    # the same through push_many: only the stream with the gap restarts
    rt = make_runtime(stack, mode=mode, max_gap=60.0)
    for i, x in enumerate(xs[:6]):
        rt.push_many([Sample("a", x, float(i)), Sample("other", x, float(i))])
    out = rt.push_many([Sample("a", xs[6], after_gap), Sample("other", xs[6], 6.0)])
    np.testing.assert_allclose(out[0].values, f.values, atol=1e-6)
    np.testing.assert_allclose(out[1].values, u.values, atol=1e-6)
    assert rt.counters()["gaps"] == 1


@pytest.mark.parametrize("kwargs,match", [
    ({"mode": "fast"}, "mode"), ({"gap_policy": "skip"}, "gap_policy"), ({"max_gap": 0}, "max_gap"),
    ({"horizon": 0}, "horizon"), ({"idle_timeout": -1}, "idle_timeout"), ({"quality_window": 0}, "quality_window"),
])
def test_bad_options_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_runtime(random_stack(), **kwargs)


# -- streams: reset, expiry, priming, recent ------------------------------------------------
def test_reset_restarts_one_stream():
    stack = random_stack(window=4)
    rt = make_runtime(stack)
    fresh = make_runtime(stack)
    for x in series(6):
        rt.push("a", x)
        rt.push("b", x)
    b = rt.state_of("b")
    rt.reset("a")
    rt.reset("never-seen")  # no-op
    assert not rt.state_of("a").any()
    np.testing.assert_array_equal(rt.state_of("b"), b)
    f = rt.push("a", [0.7])
    np.testing.assert_allclose(f.values, fresh.push("a", [0.7]).values, atol=1e-6)
    assert f.warming_up and f.seq == 7
    assert rt.recent("a") == [(None, [pytest.approx(0.7)])]


def test_idle_streams_expire_and_come_back_cold():
    rt = make_runtime(random_stack(), idle_timeout=30.0)
    rt.push("a", [0.1])
    rt.push("b", [0.2])
    rt._last_seen[rt._slot_of["a"]] -= 100.0  # a went quiet 100 s ago
    assert rt.expire() == ["a"]
    assert rt.streams() == ["b"] and rt.counters()["expired"] == 1
    assert rt.push("a", [0.1]).seq == 1  # a new stream, from zero
    assert make_runtime(random_stack()).expire(now=1e12) == []  # no idle_timeout: nothing expires


def test_recent_holds_the_last_window_of_samples():
    rt = make_runtime(random_stack(window=3))
    for i in range(5):
        rt.push("a", [float(i)], ts=100.0 + i)
    assert rt.recent("a") == [(102.0, [2.0]), (103.0, [3.0]), (104.0, [4.0])]
    assert rt.recent("nope") == []


def test_priming_warms_a_stream_exactly():
    stack = random_stack(window=5)
    oracle = reference(stack)
    xs = series(9)
    rt = make_runtime(stack, mode="exact")
    rt.push("a", [3.0])
    rt.prime("a", xs[:8].tolist())
    f = rt.push("a", xs[8])
    want = oracle.run_window(xs[None, 4:9].astype(np.float64))[0]
    assert not f.warming_up and f.seq == 2
    assert np.abs(f.values[0] - want).max() <= TOL
    before = rt.export_state()
    with pytest.raises(SampleError, match="priming sample 1"):
        rt.prime("a", [[1.0], [float("nan")]])
    np.testing.assert_array_equal(rt.export_state().states, before.states)
    rt.prime("new", [])  # priming with nothing creates a cold stream
    assert "new" in rt.streams() and rt.push("new", [0.0]).warming_up


# -- quality ---------------------------------------------------------------------------------
def test_quality_scores_each_forecast_against_the_next_sample():
    stack = random_stack(window=None)
    rt = make_runtime(stack, mode="continuous", quality_window=10)
    assert rt.push("a", [0.0]).values.shape == (1, 1)
    assert rt.quality("a") == Quality(0, pytest.approx(float("nan"), nan_ok=True), pytest.approx(float("nan"), nan_ok=True))
    xs = series(30)
    forecasts = [rt.push("a", x).values[0, 0] for x in xs]
    err = xs[1:, 0].astype(np.float64) - np.array(forecasts[:-1], np.float64)
    last = err[-10:]
    q = rt.quality("a")
    assert q.n == 10
    assert q.mae == pytest.approx(np.abs(last).mean(), rel=1e-5)
    assert q.rmse == pytest.approx(np.sqrt((last**2).mean()), rel=1e-5)


def test_quality_skips_warm_up_forecasts_and_resets():
    stack = random_stack(window=4)
    rt = make_runtime(stack, mode="exact")
    xs = series(12)
    for x in xs[:4]:
        rt.push("a", x)
    assert rt.quality("a").n == 0  # forecasts 1-3 were warming up; #4 has no actual yet
    rt.push("a", xs[4])
    assert rt.quality("a").n == 1
    rt.reset("a")
    rt.push("a", xs[5])
    assert rt.quality("a").n == 1  # the forecast before the reset is not scored against xs[5]


def test_quality_is_unavailable_when_targets_are_not_features():
    stack = random_stack(features=2, outputs=1)
    rt = make_runtime(stack, targets=["t0"], mode="exact")
    for x in series(10, 2):
        rt.push("a", x)
    assert rt.quality("a").n == 0
    with pytest.raises(KeyError):
        rt.quality("nope")


# -- snapshots -------------------------------------------------------------------------------
def test_export_import_round_trip_through_npz():
    stack = random_stack(window=4)
    xs = series(20)
    rt = make_runtime(stack, mode="exact", quality_window=5)
    for i, x in enumerate(xs[:10]):
        rt.push_many([Sample("a", x, float(i)), Sample("b", -x, float(i))])
    snap = rt.export_state()
    buf = io.BytesIO()
    np.savez(buf, **snap.to_arrays())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as npz:
        loaded = StateExport.from_arrays(npz)
    assert loaded.streams == ["a", "b"] and loaded.mode == "exact" and loaded.counters == rt.counters()
    twin = make_runtime(stack, mode="exact", quality_window=5)
    twin.import_state(loaded)
    assert twin.counters() == rt.counters()
    for i, x in enumerate(xs[10:], start=10):
        one = rt.push_many([Sample("a", x, float(i)), Sample("b", -x, float(i))])
        two = twin.push_many([Sample("a", x, float(i)), Sample("b", -x, float(i))])
        for f, g in zip(one, two):
            np.testing.assert_array_equal(f.values, g.values)
            assert (f.seq, f.warming_up) == (g.seq, g.warming_up)
    assert twin.quality("a") == rt.quality("a") and twin.recent("b") == rt.recent("b")
    assert twin.push("a", [0.0], ts=5.0) == Dropped("a", 5.0, "out-of-order")  # last_ts came along


def test_import_refuses_another_layout_unless_asked_to_reprime():
    stack = random_stack(window=4)
    xs = series(8)
    cont = make_runtime(stack, mode="continuous")
    for x in xs:
        cont.push("a", x)
    snap = cont.export_state()
    exact = make_runtime(stack, mode="exact")
    with pytest.raises(BundleError, match="mode"):
        exact.import_state(snap)
    exact.import_state(snap, reprime=True)
    f = exact.push("a", [0.25])
    want = reference(stack).run_window(np.concatenate([xs[5:], [[0.25]]])[None].astype(np.float64))[0]
    assert not f.warming_up and f.seq == 9 and np.abs(f.values[0] - want).max() <= TOL


def test_a_snapshot_of_another_shape_is_refused_even_with_reprime():
    two = make_runtime(random_stack(features=2, outputs=2))
    two.push("a", [0.1, 0.2])
    one = make_runtime(random_stack())
    with pytest.raises(BundleError, match="feature/target counts"):
        one.import_state(two.export_state(), reprime=True)
    arrays = two.export_state().to_arrays()
    del arrays["since"]
    with pytest.raises(BundleError, match="lacks 'since'"):
        StateExport.from_arrays(arrays)
