"""The streaming runtime: samples in, per-stream recurrent state, forecasts out.

`Runtime` keeps every stream's state as rows of one array (`edge_lstm.state.StateTable`) and
advances it one engine step per sample. Two modes:

- `continuous`: one state row per stream, carried forever (true streaming).
- `exact`: W staggered rows per stream (W = the bundle's window), all advanced in one batched
  call. At the stream's n-th sample (0-based, counted since its last (re)start) row n mod W is
  zeroed before stepping; after stepping, row (n+1) mod W has seen exactly the last W samples
  from zero state, so its output is the window model's forecast, at one call per sample.
  Until W samples have arrived the forecast comes from a shorter history: `warming_up`.

`push_many` steps every stream that has a sample with ONE engine call (gather the streams'
rows, step, scatter back); a stream's later samples in the same call go to later rounds, so
each stream is stepped in order. All per-stream bookkeeping is vectorised over state-table
columns; the only per-sample Python is reading the samples and building the results.

Forecasts for H > 1 steps roll the model forward on a copy of the state, feeding each
forecast back as the next sample (so targets must be the features). In exact mode the
roll-out continues the staggered-row scheme, so step k is the window model's forecast on
the last W-k+1 samples plus the k-1 forecasts: what a user iterating the window model by
hand gets.

Quality: each forecast's first step is kept in a per-stream ring next to the samples; when
the next sample arrives it is the actual value for it. `quality(stream)` scores the last
`quality_window` such pairs (MAE, RMSE), skipping warm-up forecasts and pairs split by a reset.

Time: a sample whose timestamp is not newer than its stream's last is dropped (`Dropped`,
counted); a sample after more than `max_gap` seconds restarts its stream (gap_policy "reset")
or carries on ("carry"), counted either way. `ts=None` means arrival order, unchecked.

Counting: `Forecast.seq` counts a stream's accepted samples (it survives resets and gaps, so a
subscriber can spot lost messages); `warming_up` says fewer than W samples were stepped since
the stream's last (re)start, in either mode (a continuous-mode state that young is cold too).

A Runtime is not thread-safe: one thread pushes (the daemon's inference thread).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.backends.registry import bound, open_backend
from edge_lstm.errors import BundleError, ConfigError, SampleError
from edge_lstm.state import Column, StateTable

MODES = ("exact", "continuous")
GAP_POLICIES = ("reset", "carry")
#: Values outside float32's range would become inf on the way into the engine.
_F32_MAX = float(np.finfo(np.float32).max)
_INF = math.inf
_NAN = math.nan
_COUNTS_DIFFER = "its feature/target counts differ from this model's (nothing to re-prime from)"
_time = time.time
_MAX_STREAM_ID = 256
# push_many's vectorised checks take these as they are; anything else is judged one by one.
_VALUE_TYPES = {list, tuple, np.ndarray}
_TS_TYPES = {float, int, type(None), np.float64, np.float32, np.int64, np.int32}


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of one stream: a value per feature, in sensor units."""

    stream: str
    values: Sequence[float] | np.ndarray
    ts: float | None = None  # seconds (epoch); None: arrival order, no timestamp checks


@dataclass(frozen=True, slots=True)
class Forecast:
    """The forecast made after a stream's sample (`values[H, O]`, sensor units)."""

    stream: str
    ts: float | None
    seq: int
    values: np.ndarray
    warming_up: bool
    horizon: int

    def to_list(self) -> list[list[float]]:
        """`values` as nested Python floats (for JSON)."""
        return self.values.tolist()


@dataclass(frozen=True, slots=True)
class Dropped:
    """A sample that was not stepped because its timestamp was not newer than the stream's last."""

    stream: str
    ts: float | None
    reason: str  # "duplicate" | "out-of-order"
    #: The stream's clock: the newest timestamp it has stepped (for the report; not compared).
    last_ts: float | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Quality:
    """Rolling forecast quality of one stream over its last scored one-step forecasts."""

    n: int
    mae: float
    rmse: float


@dataclass
class StateExport:
    """Everything a warm restart needs, as numpy arrays and plain values (no pickle needed).

    `recent_*` hold each stream's last samples oldest first (`recent_n` of them are valid);
    `recent_y` the one-step forecast made after each (NaN where none was scored).
    """

    streams: list[str]
    states: np.ndarray  # [N, rows, S] float32
    seq: np.ndarray  # [N] int64
    since: np.ndarray  # [N] int64: samples stepped since the stream's last (re)start
    last_ts: np.ndarray  # [N] float64, NaN = none yet
    recent_x: np.ndarray  # [N, K, F] float32
    recent_ts: np.ndarray  # [N, K] float64
    recent_y: np.ndarray  # [N, K, O] float32
    recent_n: np.ndarray  # [N] int64
    mode: str
    window: int
    state_size: int
    bundle_sha: str
    counters: dict[str, int] = field(default_factory=dict)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat `name -> array` for `np.savez` (strings become unicode arrays, not objects)."""
        out = {
            "streams": np.array(self.streams, dtype=str) if self.streams else np.zeros(0, "U1"),
            "mode": np.array(self.mode),
            "window": np.array(self.window, np.int64),
            "state_size": np.array(self.state_size, np.int64),
            "bundle_sha": np.array(self.bundle_sha),
            "counter_names": np.array(list(self.counters), dtype=str) if self.counters else np.zeros(0, "U1"),
            "counter_values": np.array(list(self.counters.values()), np.int64),
        }
        for name in ("states", "seq", "since", "last_ts", "recent_x", "recent_ts", "recent_y", "recent_n"):
            out[name] = getattr(self, name)
        return out

    @classmethod
    def from_arrays(cls, arrays: Any) -> "StateExport":
        """Inverse of `to_arrays` (accepts the mapping `np.load(..., allow_pickle=False)` gives)."""
        try:
            names = [str(s) for s in arrays["counter_names"].tolist()]
            return cls(
                streams=[str(s) for s in arrays["streams"].tolist()],
                states=np.asarray(arrays["states"], np.float32),
                seq=np.asarray(arrays["seq"], np.int64),
                since=np.asarray(arrays["since"], np.int64),
                last_ts=np.asarray(arrays["last_ts"], np.float64),
                recent_x=np.asarray(arrays["recent_x"], np.float32),
                recent_ts=np.asarray(arrays["recent_ts"], np.float64),
                recent_y=np.asarray(arrays["recent_y"], np.float32),
                recent_n=np.asarray(arrays["recent_n"], np.int64),
                mode=str(arrays["mode"]),
                window=int(arrays["window"]),
                state_size=int(arrays["state_size"]),
                bundle_sha=str(arrays["bundle_sha"]),
                counters=dict(zip(names, (int(v) for v in arrays["counter_values"].tolist()))),
            )
        except KeyError as exc:
            raise BundleError(f"state snapshot lacks {exc}; it was not written by export_state") from None


class _ForecastDraft:
    """Forecast's slot layout without the frozen guard: filled, then re-classed (see below)."""

    __slots__ = ("stream", "ts", "seq", "values", "warming_up", "horizon")


# push_many builds one Forecast per stream, and a frozen dataclass's __init__ (one
# object.__setattr__ per field) costs ~0.7 us: a third of the whole per-stream budget. A
# draft with the identical slot layout is filled with plain attribute stores and then
# re-classed to Forecast (~0.25 us), which CPython allows between classes whose layouts match.
# Checked once here; where it is refused, the slots are filled through their descriptors.
_new_object = object.__new__


def _draft_works() -> bool:
    try:
        probe = _new_object(_ForecastDraft)
        probe.stream, probe.ts, probe.seq, probe.values, probe.warming_up, probe.horizon = "s", None, 1, None, False, 1
        probe.__class__ = Forecast
        return probe == Forecast("s", None, 1, None, False, 1)
    except TypeError:
        return False


_FAST_FORECAST = _draft_works()
_F_SET = tuple(getattr(Forecast, f).__set__ for f in ("stream", "ts", "seq", "values", "warming_up", "horizon"))


def _forecast(stream, ts, seq, values, warming_up, horizon, _new=_new_object, _d=_ForecastDraft, _cls=Forecast):
    """A Forecast, built the fast way (see above)."""
    if _FAST_FORECAST:
        f = _new(_d)
        f.stream = stream
        f.ts = ts
        f.seq = seq
        f.values = values
        f.warming_up = warming_up
        f.horizon = horizon
        f.__class__ = _cls
        return f
    f = _new(_cls)
    for setter, value in zip(_F_SET, (stream, ts, seq, values, warming_up, horizon)):
        setter(f, value)
    return f


def _forecasts(
    streams, tss, seqs, values, warmings, horizon, _new=_new_object, _d=_ForecastDraft, _cls=Forecast
) -> list:
    """Forecasts for aligned lists, with `_forecast`'s construction inlined in the loop."""
    if not _FAST_FORECAST:
        return [_forecast(*a, horizon) for a in zip(streams, tss, seqs, values, warmings)]
    # `values` may be the [B, H, O] array itself: iterating it yields each stream's [H, O] view
    out = []
    append = out.append
    for stream, ts, seq, v, w in zip(streams, tss, seqs, values, warmings):
        f = _new(_d)
        f.stream = stream
        f.ts = ts
        f.seq = seq
        f.values = v
        f.warming_up = w
        f.horizon = horizon
        f.__class__ = _cls
        append(f)
    return out


class Runtime:
    """Per-stream streaming forecasts from a bundle's step model (see the module docstring)."""

    def __init__(
        self,
        engine: Any,
        *,
        features: Sequence[str],
        targets: Sequence[str],
        window: int | None,
        state_size: int | None = None,
        bundle: Any = None,
        mode: str = "exact",
        horizon: int = 1,
        max_gap: float | None = None,
        gap_policy: str = "reset",
        idle_timeout: float | None = None,
        quality_window: int = 100,
        bundle_sha: str = "",
    ) -> None:
        """Wrap an engine with `step(x, state)`; `Runtime.open(bundle)` is the usual way in."""
        self.bundle = bundle
        self.features = list(features)
        self.targets = list(targets)
        self.window = None if window is None else int(window)
        self.mode = mode
        self.horizon = horizon
        self.max_gap = max_gap
        self.gap_policy = gap_policy
        self.idle_timeout = idle_timeout
        self.quality_window = quality_window
        self.bundle_sha = bundle_sha or getattr(bundle, "sha256", "")
        size = state_size if state_size is not None else getattr(engine, "state_size", None)
        if size is None:
            raise ConfigError("state_size is unknown: pass it, or open the runtime from a bundle")
        self.state_size = int(size)
        self._validate_options(engine)
        self._nf, self._no = len(self.features), len(self.targets)
        self._set_engine(engine)
        self._derive_layout()
        self._table = self._new_table()
        self._backend_request = ("auto", None, 1)
        self._c = dict.fromkeys(
            ("samples", "forecasts", "duplicates", "out_of_order", "rejected", "gaps", "expired"), 0
        )

    def __repr__(self) -> str:
        name = self.bundle.name if self.bundle is not None else "engine"
        return (
            f"Runtime({name!r}, backend={self.backend_name} {self.precision}, mode={self.mode}, "
            f"window={self.window}, horizon={self.horizon}, streams={len(self._table)})"
        )

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        bundle: Any,
        *,
        backend: str = "auto",
        precision: str | None = None,
        mode: str = "exact",
        horizon: int = 1,
        max_gap: float | None = None,
        gap_policy: str = "reset",
        idle_timeout: float | None = None,
        threads: int = 1,
        quality_window: int = 100,
    ) -> "Runtime":
        """Open a bundle (a `Bundle` or its directory) on `backend` ("auto", "onnx", "litert", "numpy")."""
        bundle = _as_bundle(bundle)
        engine = open_backend(bundle, backend, precision, threads)
        rt = cls(
            engine,
            features=bundle.features,
            targets=bundle.targets,
            window=bundle.window,
            state_size=bundle.state_size,
            bundle=bundle,
            mode=mode,
            horizon=horizon,
            max_gap=max_gap,
            gap_policy=gap_policy,
            idle_timeout=idle_timeout,
            quality_window=quality_window,
        )
        rt._backend_request = (backend, precision, threads)
        return rt

    def _validate_options(self, engine: Any) -> None:
        where = f"bundle {self.bundle.path}" if self.bundle is not None else "the model"
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r} is unknown; choose 'exact' or 'continuous'")
        if self.mode == "exact" and not (self.window and self.window >= 1):
            raise ConfigError(
                f"{where} records no training window, which exact mode needs; use mode='continuous' "
                "or re-export with --window"
            )
        if not isinstance(self.horizon, int) or self.horizon < 1:
            raise ConfigError(f"horizon must be an integer >= 1, got {self.horizon!r}")
        if self.horizon > 1 and (len(self.targets) != len(self.features) or set(self.targets) != set(self.features)):
            raise ConfigError(
                f"horizon {self.horizon} needs each forecast fed back as the next sample, but {where} "
                f"forecasts {self.targets} from features {self.features}; use horizon=1 or a model whose "
                "targets are its features"
            )
        if self.max_gap is not None and not (isinstance(self.max_gap, (int, float)) and self.max_gap > 0):
            raise ConfigError(f"max_gap must be a number of seconds > 0 or None, got {self.max_gap!r}")
        if self.gap_policy not in GAP_POLICIES:
            raise ConfigError(f"gap_policy {self.gap_policy!r} is unknown; choose 'reset' or 'carry'")
        if self.idle_timeout is not None and not (
            isinstance(self.idle_timeout, (int, float)) and self.idle_timeout > 0
        ):
            raise ConfigError(f"idle_timeout must be a number of seconds > 0 or None, got {self.idle_timeout!r}")
        if not isinstance(self.quality_window, int) or self.quality_window < 1:
            raise ConfigError(f"quality_window must be an integer >= 1, got {self.quality_window!r}")
        for attr, names, what in (("features", self.features, "features"), ("outputs", self.targets, "targets")):
            have = getattr(engine, attr, None)
            if have is not None and int(have) != len(names):
                raise ConfigError(f"{where}: the engine takes {have} {what}, the names list {len(names)}: {names}")

    def _set_engine(self, engine: Any) -> None:
        self.engine = engine
        self._engine = bound(engine, len(self.features), self.state_size)
        if not hasattr(self._engine, "generation"):
            raise ConfigError(f"engine {engine!r}: buffers()/run() without a generation counter")
        self._one = None  # (generation, x, state) buffers of a single-stream step
        # An engine whose run() hands back fresh arrays (LiteRT's get_tensor copies) lets push
        # keep y as the forecast instead of copying it again (~0.25 us of a ~9 us push).
        self._fresh_out = bool(getattr(self._engine, "returns_copies", False))
        self.backend_name = getattr(engine, "name", type(engine).__name__)
        self.precision = getattr(engine, "precision", "fp32")

    def _derive_layout(self) -> None:
        """Sizes that follow from the model and the options."""
        self._rows = self.window if self.mode == "exact" else 1
        # Exact mode zeroes one row before every step, also when W = 1 (one row, zeroed each
        # time: the window model on the last sample alone); continuous mode never does.
        self._zero_rows = self.mode == "exact"
        # recent(): W samples re-prime a stream exactly; without a window, a stateful model
        # gets the last (up to) 32.
        self._recent_len = self.window or min(self.quality_window, 32)
        self._ring = max(self._recent_len, self.quality_window + 1)
        self._tidx = [self.features.index(t) for t in self.targets] if set(self.targets) <= set(self.features) else None
        # The roll-out feeds forecast[:, perm] back as the next sample's features.
        self._perm = [self.targets.index(f) for f in self.features] if self.horizon > 1 else None

    def _new_table(self, capacity: int = 16) -> StateTable:
        k, f, o = self._ring, self._nf, self._no
        columns = {
            "seq": Column((), np.int64, 0),
            "since": Column((), np.int64, 0),
            "ring_n": Column((), np.int64, 0),
            "last_ts": Column((), np.float64, np.nan),
            "ring_x": Column((k, f), np.float32, np.nan),
            "ring_ts": Column((k,), np.float64, np.nan),
            "ring_y": Column((k, o), np.float32, np.nan),
        }
        table = StateTable(self.state_size, self._rows, capacity=capacity, columns=columns)
        self._bind_columns(table)
        return table

    def _bind_columns(self, table: StateTable) -> None:
        """Cache the table's arrays as attributes (the hot paths read them every sample)."""
        self._table = table
        self._slot_of = table.slot_of
        c = table.cols
        self._seq, self._since, self._ring_n, self._last_ts = c["seq"], c["since"], c["ring_n"], c["last_ts"]
        self._ring_x, self._ring_ts, self._ring_y = c["ring_x"], c["ring_ts"], c["ring_y"]
        self._last_seen = c["last_seen"]

    def _add_stream(self, stream: str, now: float) -> int:
        cap = self._table.capacity
        slot = self._table.add(stream, now)
        if self._table.capacity != cap:
            self._bind_columns(self._table)
        return slot

    # -- one sample ------------------------------------------------------------------------
    def push(self, stream: str, values: Any, ts: float | None = None) -> Forecast | Dropped:
        """Step `stream` with one sample; raise SampleError (touching no state) if it is invalid.

        This is the latency path (one sensor, one sample): it is written for speed, with the
        one-feature/one-target case on scalars; `push_many` is the throughput path.
        """
        c = self._c
        c["samples"] += 1
        try:
            if len(values) != self._nf:
                raise TypeError
            for v in values:
                if not (-_F32_MAX <= v <= _F32_MAX):
                    raise TypeError
        except (TypeError, ValueError):
            values, problem = self._values_problem(values)
            if problem is not None:
                raise self._reject(stream, problem) from None
        if ts is not None:
            try:
                ok = -_INF < ts < _INF
            except TypeError:
                ok = False
            if not ok:
                raise self._reject(stream, _ts_problem(ts))
        now = _time()
        slot = self._slot_of.get(stream)
        if slot is None:
            problem = _stream_problem(stream)
            if problem is not None:
                raise self._reject(stream, problem)
            slot = self._add_stream(stream, now)
        elif ts is not None:
            last = self._last_ts[slot]
            if ts <= last:
                if ts == last:
                    c["duplicates"] += 1
                    return Dropped(stream, ts, "duplicate", float(last))
                c["out_of_order"] += 1
                return Dropped(stream, ts, "out-of-order", float(last))
            if self.max_gap is not None and ts - last > self.max_gap:
                self._gap(slot)
        # .item() gives the Python int directly: ~40 ns less than int(column[slot]), x3 below
        since = self._since.item(slot)
        rows = self._rows
        engine = self._engine
        one = self._one
        if one is None or one[0] != engine.generation:
            one = self._one = (engine.generation, *engine.buffers(rows))
        xb, sb = one[1], one[2]
        scalar = self._nf == 1
        if scalar:
            x0 = values[0]
            if rows == 1:
                xb[0, 0] = x0
            else:
                xb.fill(x0)
        else:
            xb[...] = values
        data = self._table.data
        sb[...] = data[slot]
        if self._zero_rows:
            sb[since % rows] = 0.0
        y, so = engine.run(rows)
        data[slot] = so
        if self.horizon == 1:
            # [1, O]: the forecast row (a copy, unless the engine's y is already a fresh array)
            if rows == 1:
                out = y if self._fresh_out else y.copy()
            else:
                r = (since + 1) % rows
                out = y[r : r + 1] if self._fresh_out else y[r : r + 1].copy()
        else:
            r = (since + 1) % rows
            out = self._rollout(np.array([since], np.int64), y[r : r + 1].copy(), so.copy())[0]
            self._one = None  # the roll-out may have asked for other buffers
        window = self.window
        warming = window is not None and since + 1 < window
        # bookkeeping: ring entry, counters, timestamps
        n = self._ring_n.item(slot)
        p = n % self._ring
        if scalar:
            self._ring_x[slot, p, 0] = x0
        else:
            self._ring_x[slot, p] = values
        self._ring_ts[slot, p] = _NAN if ts is None else ts
        if self._tidx is not None:
            if warming:
                self._ring_y[slot, p] = _NAN
            elif self._no == 1:
                self._ring_y[slot, p, 0] = out[0, 0]
            else:
                self._ring_y[slot, p] = out[0]
        self._ring_n[slot] = n + 1
        self._since[slot] = since + 1
        seq = self._seq.item(slot) + 1
        self._seq[slot] = seq
        if ts is not None:
            self._last_ts[slot] = ts
        self._last_seen[slot] = now
        if _FAST_FORECAST:
            f = _new_object(_ForecastDraft)
            f.stream = stream
            f.ts = ts
            f.seq = seq
            f.values = out
            f.warming_up = warming
            f.horizon = self.horizon
            f.__class__ = Forecast
            return f
        return _forecast(stream, ts, seq, out, warming, self.horizon)

    def _values_problem(self, values: Any) -> tuple[list[float] | None, str | None]:
        """`(floats, None)` for a valid sample's values, else `(None, what is wrong)`."""
        nf = self._nf
        try:
            if values is None or isinstance(values, (str, bytes)):
                raise TypeError
            vals = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            return None, f"values {values!r} are not numbers"
        if vals.size != nf:
            return None, f"expected {nf} value(s) ({', '.join(self.features)}), got {vals.size}: {values!r}"
        vals = vals.reshape(nf).tolist()
        bad = [f"{name}={v!r}" for name, v in zip(self.features, vals) if not (-_F32_MAX <= v <= _F32_MAX)]
        if bad:
            return None, f"NaN, infinite or out-of-float32-range value(s): {', '.join(bad)}"
        return vals, None

    def _reject(self, stream: Any, problem: str) -> SampleError:
        """Count a rejected sample and return the error that says why."""
        self._c["rejected"] += 1
        return SampleError(stream if isinstance(stream, str) else repr(stream), problem)

    def _gap(self, slots: Any) -> None:
        """Count a gap on `slots`; with gap_policy 'reset', restart them from zero state."""
        count = 1 if np.ndim(slots) == 0 else len(slots)
        self._c["gaps"] += count
        if self.gap_policy == "reset":
            self._restart(slots)

    def _restart(self, slots: Any) -> None:
        """Zero the state rows of `slots`, restart their warm-up, and unscore the forecast
        made before the restart (the next sample is not its actual)."""
        self._table.data[slots] = 0.0
        self._since[slots] = 0
        last = (self._ring_n[slots] - 1) % self._ring
        self._ring_y[slots, last] = np.nan

    # -- many samples, one engine call per round -------------------------------------------
    def push_many(self, samples: Sequence[Sample]) -> list[Forecast | Dropped | SampleError]:
        """Step many samples: results aligned with the input (SampleError objects, not raised).

        Round k holds each stream's k-th sample of this call; each round is one engine call.
        """
        n = len(samples)
        if n < 2:  # one sample: push's scalar path is cheaper than the vectorised one
            try:
                return [self.push(s.stream, s.values, s.ts) for s in samples]
            except SampleError as exc:
                return [exc]
        self._c["samples"] += n
        out: list = [None] * n
        streams = [s.stream for s in samples]
        try:
            distinct = len(set(streams)) == n
        except TypeError:  # an unhashable stream id: validate one by one
            distinct = False
        if distinct:
            self._round(samples, streams, None, out)
            return out
        rounds: list[list[int]] = []
        seen: dict = {}
        for i, stream in enumerate(streams):
            try:
                k = seen.get(stream, 0)
                seen[stream] = k + 1
            except TypeError:
                k = 0
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(i)
        for idx in rounds:
            self._round([samples[i] for i in idx], [streams[i] for i in idx], idx, out)
        return out

    def _round(self, samples: Sequence[Sample], streams: list, idx: list[int] | None, out: list) -> None:
        m = len(samples)
        nf = self._nf
        vals = [s.values for s in samples]
        tss = [s.ts for s in samples]
        bad = None
        # values -> x[m, F]; the fast path needs every sample to be a list/tuple/array of nf
        # numbers. (list.count over map(len/type) is ~30% cheaper than building sets of them.)
        try:
            if list(map(len, vals)).count(nf) != m:
                raise TypeError
            types = list(map(type, vals))
            if types.count(list) != m and not set(types) <= _VALUE_TYPES:
                raise TypeError
            x = np.fromiter(chain.from_iterable(vals), np.float32, count=m * nf).reshape(m, nf)
            with np.errstate(over="ignore", invalid="ignore"):
                finite = np.isfinite(x)
            if not finite.all():
                bad = ~finite.all(axis=1)
        except (TypeError, ValueError):
            x = np.zeros((m, nf), np.float32)
            bad = np.zeros(m, bool)
            for i, v in enumerate(vals):
                checked, problem = self._values_problem(v)
                if problem is None:
                    x[i] = checked
                else:
                    bad[i] = True
        # timestamps -> ts[m] (NaN for None), or None when no sample has one (arrival order:
        # nothing to check, compare or record; ~0.12 us/sample saved on that common case)
        nones = tss.count(None)
        if nones == m:
            ts = None
        elif set(map(type, tss)) <= _TS_TYPES:
            ts = np.array(tss, np.float64)
            ts_bad = ~np.isfinite(ts)
            if ts_bad.any():
                if nones:
                    ts_bad &= np.array([t is not None for t in tss])
                bad = ts_bad if bad is None else (bad | ts_bad)
        else:  # something else than numbers and None: judge each like push does
            ts = np.full(m, np.nan)
            ts_bad = np.zeros(m, bool)
            for i, t in enumerate(tss):
                if t is None:
                    continue
                if _ts_problem(t) is None:
                    ts[i] = float(t)
                else:
                    ts_bad[i] = True
            if ts_bad.any():
                bad = ts_bad if bad is None else (bad | ts_bad)
        # stream ids: known ones are valid; new ones are checked
        slot_of = self._slot_of
        try:
            slots_l = list(map(slot_of.get, streams))
        except TypeError:  # an unhashable stream id
            slots_l = [slot_of.get(s) if isinstance(s, str) else None for s in streams]
        new = None in slots_l
        if new:
            for i, slot in enumerate(slots_l):
                if slot is None and (bad is None or not bad[i]) and _stream_problem(streams[i]) is not None:
                    if bad is None:
                        bad = np.zeros(m, bool)
                    bad[i] = True
        if bad is not None and bad.any():
            for i in np.flatnonzero(bad).tolist():
                out[i if idx is None else idx[i]] = self._explain(streams[i], vals[i], tss[i])
            ok = ~bad
        else:
            ok = None
        now = _time()
        if new:
            cap = self._table.capacity
            for i, slot in enumerate(slots_l):
                if slot is None and (ok is None or ok[i]):
                    slots_l[i] = self._table.add(streams[i], now)
            if self._table.capacity != cap:
                self._bind_columns(self._table)
            if ok is not None:
                slots_l = [s if s is not None else -1 for s in slots_l]
        slots = np.fromiter(slots_l, np.int64, count=m)
        # duplicates / out-of-order / gaps (only samples with a timestamp can be any of these)
        acc = ok
        if ts is not None:
            last = self._last_ts[slots]
            dup = ts == last
            drop = dup | (ts < last)
            if ok is not None:
                drop &= ok
            if drop.any():
                nd = int(np.count_nonzero(dup & drop))
                self._c["duplicates"] += nd
                self._c["out_of_order"] += int(np.count_nonzero(drop)) - nd
                for i in np.flatnonzero(drop).tolist():
                    out[i if idx is None else idx[i]] = Dropped(
                        streams[i], tss[i], "duplicate" if dup[i] else "out-of-order", float(last[i])
                    )
                acc = ~drop if ok is None else (ok & ~drop)
        if acc is not None:
            take = np.flatnonzero(acc)
            if not len(take):
                return
            slots, x = slots[take], x[take]
            if ts is not None:
                ts, last = ts[take], last[take]
        else:
            take = None
        if ts is not None and self.max_gap is not None:
            gap = ts - last > self.max_gap
            if gap.any():
                self._gap(slots[gap])
        # step every accepted stream at once
        since = self._since[slots]
        values = self._advance(slots, x, since)
        since += 1
        # bookkeeping, vectorised
        pos = self._ring_n[slots] % self._ring
        self._ring_x[slots, pos] = x
        self._ring_ts[slots, pos] = _NAN if ts is None else ts
        if self.window is not None:
            warming = since < self.window
            warm = warming.any()
        else:
            warm = False
        if self._tidx is not None:
            first = values[:, 0]
            if warm:
                first = first.copy()
                first[warming] = np.nan
            self._ring_y[slots, pos] = first
        self._ring_n[slots] += 1
        self._since[slots] = since
        seq = self._seq[slots] + 1
        self._seq[slots] = seq
        if ts is not None:
            has_ts = ~np.isnan(ts)
            if has_ts.all():
                self._last_ts[slots] = ts
            else:
                self._last_ts[slots[has_ts]] = ts[has_ts]
        self._last_seen[slots] = now
        warmings = warming.tolist() if warm else repeat(False)
        if take is None:
            made = _forecasts(streams, tss, seq.tolist(), values, warmings, self.horizon)
            if idx is None:
                out[:] = made
                return
            where: Any = range(m)
        else:
            where = take.tolist()
            made = _forecasts(
                [streams[i] for i in where],
                [tss[i] for i in where],
                seq.tolist(),
                values,
                warmings,
                self.horizon,
            )
        for i, f in zip(where, made):
            out[i if idx is None else idx[i]] = f

    def _explain(self, stream: Any, values: Any, ts: Any) -> SampleError:
        """The SampleError for an invalid sample of push_many (counted as rejected)."""
        problem = _stream_problem(stream) or self._values_problem(values)[1]
        if problem is None and ts is not None:
            problem = _ts_problem(ts)
        return self._reject(stream, problem or "invalid sample")

    # -- the step itself -------------------------------------------------------------------
    def _advance(self, slots: np.ndarray, x: np.ndarray, since: np.ndarray, rollout: bool = True) -> np.ndarray:
        """Step the streams in `slots` with `x[B, F]` (`since`: their samples so far);
        return the forecasts `[B, H, O]` (a fresh array; `[B, 1, O]` without `rollout`)."""
        b, rows, nf = len(slots), self._rows, self._nf
        engine = self._engine
        data = self._table.data
        xb, sb = engine.buffers(b * rows)
        # Slots a..a+b-1 in order (streams seen in the order they were added: a fleet that
        # reports in a fixed order, a replay) are gathered and scattered as one block copy
        # instead of row-by-row fancy indexing (1,024 streams: ~0.15 ms less per call; in
        # exact mode W times that). Distinct slots spanning b values in order are exactly that.
        lo = int(slots[0]) if b else 0
        block = b > 1 and int(slots[-1]) - lo == b - 1 and bool((np.diff(slots) == 1).all())
        sb3 = sb.reshape(b, rows, self.state_size)
        if rows == 1:
            xb[...] = x
        else:
            xb.reshape(b, rows, nf)[...] = x[:, None, :]
        if block:
            sb3[...] = data[lo : lo + b]
        else:
            np.take(data, slots, axis=0, out=sb3)
        if self._zero_rows:
            sb3[np.arange(b), since % rows] = 0.0
        y, so = engine.run(b * rows)
        if block:
            data[lo : lo + b] = so.reshape(b, rows, self.state_size)
        else:
            data[slots] = so.reshape(b, rows, self.state_size)
        if rows == 1:
            first = y
        else:
            first = y.reshape(b, rows, self._no)[np.arange(b), (since + 1) % rows]
        if self.horizon == 1 or not rollout:
            return first.reshape(b, 1, self._no).copy()
        return self._rollout(since, first.copy(), so.copy())

    def _rollout(self, since: np.ndarray, first: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Forecasts `[B, H, O]`: `first` then H-1 steps fed back, on `state` (a copy, [B*rows, S])."""
        b, rows, nf, h = len(since), self._rows, self._nf, self.horizon
        engine = self._engine
        out = np.empty((b, h, self._no), np.float32)
        out[:, 0] = first
        prev = first
        ar = np.arange(b)
        for k in range(1, h):
            xb, sb = engine.buffers(b * rows)
            xb.reshape(b, rows, nf)[...] = prev[:, self._perm][:, None, :]
            sb[...] = state
            if self._zero_rows:
                sb.reshape(b, rows, self.state_size)[ar, (since + k) % rows] = 0.0
            y, so = engine.run(b * rows)
            state[...] = so
            prev = y if rows == 1 else y.reshape(b, rows, self._no)[ar, (since + k + 1) % rows]
            out[:, k] = prev
        return out

    # -- streams ---------------------------------------------------------------------------
    def reset(self, stream: str) -> bool:
        """Restart `stream` from zero state (its next forecasts warm up again) and clear its
        clock (any timestamp is accepted next). False, doing nothing, for an unknown stream."""
        slot = self._slot_of.get(stream)
        if slot is None:
            return False
        self._restart(slot)
        self._last_ts[slot] = _NAN
        return True

    def rewind_clocks(self, limit: float) -> list[str]:
        """Clear the clock of every stream whose last timestamp is beyond `limit` (their state
        is kept); return their ids. For a restart that finds streams a far-future timestamp
        would otherwise silence until the device's clock caught up."""
        table = self._table
        streams = table.streams()
        if not streams:
            return []
        slots = np.array([table.slot(s) for s in streams], np.int64)
        ahead = self._last_ts[slots] > limit
        self._last_ts[slots[ahead]] = _NAN
        return [streams[i] for i in np.flatnonzero(ahead).tolist()]

    def prime(self, stream: str, samples: Sequence[Sequence[float]]) -> None:
        """Restart `stream`, clear its clock, and warm it from `samples` (oldest first) without
        forecasting.

        Every sample is checked first: a bad one raises SampleError and nothing changes.
        The primed samples count towards warm-up (W of them end it) but not towards `seq`.
        In exact mode only the last W samples can reach any state row, so only they are
        stepped (a long history costs W steps, not one per sample).
        """
        problem = _stream_problem(stream)
        if problem is not None:
            raise SampleError(repr(stream), problem)
        checked = []
        for i, v in enumerate(samples):
            vals, problem = self._values_problem(v)
            if problem is not None:
                raise SampleError(stream, f"priming sample {i}: {problem}")
            checked.append(vals)
        if self.mode == "exact" and len(checked) > self._rows:
            checked = checked[-self._rows:]
        slot = self._slot_of.get(stream)
        if slot is None:
            slot = self._add_stream(stream, time.time())
        else:
            self._restart(slot)
            self._last_ts[slot] = _NAN
        if checked:
            self._prime_slots(np.array([slot], np.int64), [np.array(checked, np.float32)])

    def _prime_slots(self, slots: np.ndarray, series: list[np.ndarray]) -> None:
        """Step each slot through its own samples (`series[i]`: [T_i, F]), batched per time step."""
        lengths = np.array([len(s) for s in series], np.int64)
        for t in range(int(lengths.max(initial=0))):
            pick = np.flatnonzero(lengths > t)
            sl = slots[pick]
            x = np.stack([series[i][t] for i in pick.tolist()]).astype(np.float32)
            since = self._since[sl]
            self._advance(sl, x, since, rollout=False)
            pos = self._ring_n[sl] % self._ring
            self._ring_x[sl, pos] = x
            self._ring_ts[sl, pos] = np.nan
            self._ring_y[sl, pos] = np.nan
            self._ring_n[sl] += 1
            self._since[sl] = since + 1

    def recent(self, stream: str) -> list[tuple[float | None, list[float]]]:
        """The stream's last accepted (or primed) samples since its last restart, oldest first,
        at most W of them (enough to re-prime it exactly); empty for an unknown stream."""
        slot = self._slot_of.get(stream)
        if slot is None:
            return []
        n = int(self._ring_n[slot])
        m = min(int(self._since[slot]), self._recent_len, n, self._ring)
        pos = [(n - m + j) % self._ring for j in range(m)]
        ts = self._ring_ts[slot, pos].tolist()
        xs = self._ring_x[slot, pos].tolist()
        return [(None if math.isnan(t) else t, x) for t, x in zip(ts, xs)]

    def streams(self) -> list[str]:
        """Every stream the runtime holds state for."""
        return self._table.streams()

    def state_of(self, stream: str) -> np.ndarray:
        """A copy of the stream's state rows `[rows, S]` (rows = W in exact mode, else 1)."""
        slot = self._slot_of.get(stream)
        if slot is None:
            raise KeyError(f"stream {stream!r} is unknown (it never sent a sample, or expired)")
        return self._table.data[slot].copy()

    def expire(self, now: float | None = None) -> list[str]:
        """Drop streams idle for more than `idle_timeout` seconds; return their ids."""
        if self.idle_timeout is None:
            return []
        gone = self._table.expire(time.time() if now is None else now, self.idle_timeout)
        self._c["expired"] += len(gone)
        return gone

    def quality(self, stream: str) -> Quality:
        """Rolling MAE/RMSE of the stream's last `quality_window` scored one-step forecasts.

        n = 0 (and NaN errors) when nothing was scored yet, or when the targets are not among
        the features (then the actual values never arrive).
        """
        slot = self._slot_of.get(stream)
        if slot is None:
            raise KeyError(f"stream {stream!r} is unknown (it never sent a sample, or expired)")
        if self._tidx is None:
            return Quality(0, math.nan, math.nan)
        n, k = int(self._ring_n[slot]), self._ring
        first = max(0, n - k)
        if n - first < 2:
            return Quality(0, math.nan, math.nan)
        j = np.arange(first, n - 1)
        fc = self._ring_y[slot, j % k].astype(np.float64)
        actual = self._ring_x[slot, (j + 1) % k][:, self._tidx].astype(np.float64)
        keep = ~np.isnan(fc).any(axis=1)
        if not keep.any():
            return Quality(0, math.nan, math.nan)
        err = actual[keep] - fc[keep]
        return Quality(int(keep.sum()), float(np.abs(err).mean()), float(np.sqrt((err**2).mean())))

    def counters(self) -> dict[str, int]:
        """samples, forecasts, duplicates, out_of_order, rejected, gaps, expired (since open)."""
        c = dict(self._c)
        c["forecasts"] = c["samples"] - c["duplicates"] - c["out_of_order"] - c["rejected"]
        return c

    # -- snapshots and model swaps ---------------------------------------------------------
    def export_state(self) -> StateExport:
        """Everything needed for a warm restart (see StateExport)."""
        table = self._table
        streams = table.streams()
        slots = np.array([table.slot(s) for s in streams], np.int64)
        k = self._ring
        ring_n = self._ring_n[slots]
        m = np.minimum(ring_n, k)
        j = np.arange(k)
        pos = (ring_n[:, None] - m[:, None] + j[None, :]) % k
        valid = j[None, :] < m[:, None]
        rx = self._ring_x[slots[:, None], pos]
        rt = self._ring_ts[slots[:, None], pos]
        ry = self._ring_y[slots[:, None], pos]
        rx[~valid] = np.nan
        rt[~valid] = np.nan
        ry[~valid] = np.nan
        return StateExport(
            streams=streams,
            states=table.data[slots].copy(),
            seq=self._seq[slots].copy(),
            since=self._since[slots].copy(),
            last_ts=self._last_ts[slots].copy(),
            recent_x=rx,
            recent_ts=rt,
            recent_y=ry,
            recent_n=m,
            mode=self.mode,
            window=int(self.window or 0),
            state_size=self.state_size,
            bundle_sha=self.bundle_sha,
            counters=self.counters(),
        )

    def _layout_problem(self, snap: StateExport) -> str | None:
        if snap.state_size != self.state_size:
            return f"state size {snap.state_size} != this model's {self.state_size}"
        if snap.mode != self.mode:
            return f"mode {snap.mode!r} != this runtime's {self.mode!r}"
        if snap.states.shape[1:] != (self._rows, self.state_size):
            return f"state rows {snap.states.shape[1:]} != {(self._rows, self.state_size)}"
        if snap.recent_x.shape[2:] != (self._nf,) or snap.recent_y.shape[2:] != (self._no,):
            return _COUNTS_DIFFER
        if snap.bundle_sha and self.bundle_sha and snap.bundle_sha != self.bundle_sha:
            return f"it was taken with bundle {snap.bundle_sha[:12]}..., this is {self.bundle_sha[:12]}..."
        return None

    def import_state(self, snap: StateExport, *, reprime: bool = False) -> None:
        """Replace every stream's state with `snap`'s.

        Raises BundleError when the snapshot's layout (state size, mode/window, bundle) differs,
        unless `reprime`: then each stream is rebuilt by priming it from its recent samples.
        """
        problem = self._layout_problem(snap)
        if problem is not None and (not reprime or problem == _COUNTS_DIFFER):
            raise BundleError(
                f"state snapshot does not fit this runtime: {problem}; start cold, or pass reprime=True "
                "to rebuild the states from the snapshot's recent samples"
            )
        self._restore(snap, keep_states=problem is None)
        for name, value in snap.counters.items():
            if name in self._c:
                self._c[name] = int(value)

    def _restore(self, snap: StateExport, keep_states: bool) -> None:
        n = len(snap.streams)
        table = self._new_table(capacity=max(16, n))
        slots = table.add_many(snap.streams, time.time()) if n else np.zeros(0, np.int64)
        k = self._ring
        m = np.minimum(snap.recent_n, k) if n else np.zeros(0, np.int64)
        if n:
            self._seq[slots] = snap.seq
            self._last_ts[slots] = snap.last_ts
            kk = min(k, snap.recent_x.shape[1])
            for i, slot in enumerate(slots.tolist()):
                mi = int(min(m[i], kk))
                lo = int(snap.recent_n[i]) - mi
                self._ring_x[slot, :mi] = snap.recent_x[i, lo : lo + mi]
                self._ring_ts[slot, :mi] = snap.recent_ts[i, lo : lo + mi]
                self._ring_y[slot, :mi] = snap.recent_y[i, lo : lo + mi]
                self._ring_n[slot] = mi
            self._since[slots] = snap.since
        if keep_states:
            if n:
                table.data[slots] = snap.states
            return
        self._reprime(slots)

    def _reprime(self, slots: np.ndarray) -> None:
        """Rebuild the states of `slots` from zero by stepping their recent samples."""
        if not len(slots):
            return
        series = []
        for slot in slots.tolist():
            stream = self._table.stream_at(slot)
            series.append(np.array([x for _, x in self.recent(stream)], np.float32).reshape(-1, self._nf))
        recent_n = self._ring_n[slots].copy()
        keep_x = self._ring_x[slots].copy()
        keep_ts = self._ring_ts[slots].copy()
        keep_y = self._ring_y[slots].copy()
        self._table.data[slots] = 0.0
        self._since[slots] = 0
        self._prime_slots(slots, series)
        # priming rewrote the ring: put the real history (timestamps, scored forecasts) back
        self._ring_x[slots], self._ring_ts[slots], self._ring_y[slots] = keep_x, keep_ts, keep_y
        self._ring_n[slots] = recent_n

    def swap_bundle(self, bundle: Any, *, keep_state: bool | None = None) -> None:
        """Hot-swap the model, keeping every stream.

        `keep_state=None` keeps the states when the new bundle is the same model (same
        manifest hash, e.g. a reload or another backend) and otherwise rebuilds each stream
        by priming it from its recent samples (exact in exact mode once W are known).
        `True` keeps them whenever the layout allows; `False` always re-primes.
        Raises ConfigError (and keeps the old model) when the new bundle does not fit.
        """
        bundle = _as_bundle(bundle)
        backend, precision, threads = getattr(self, "_backend_request", ("auto", None, 1))
        engine = open_backend(bundle, backend, precision, threads)
        snap = self.export_state()
        old = (self.bundle, self.engine, self.features, self.targets, self.window, self.state_size, self.bundle_sha)
        try:
            self.bundle, self.bundle_sha = bundle, bundle.sha256
            self.features, self.targets, self.window = bundle.features, bundle.targets, bundle.window
            self.state_size = bundle.state_size
            self._validate_options(engine)
            if (len(self.features), len(self.targets)) != (self._nf, self._no):
                raise ConfigError(
                    f"bundle {bundle.path} reads {len(self.features)} feature(s) and forecasts "
                    f"{len(self.targets)}; the running one {self._nf} and {self._no}: restart instead"
                )
        except ConfigError:
            self.bundle, self.engine, self.features, self.targets, self.window, self.state_size, self.bundle_sha = old
            raise
        self._set_engine(engine)
        self._derive_layout()
        same = snap.bundle_sha == self.bundle_sha
        fits = snap.states.shape[1:] == (self._rows, self.state_size)
        keep = fits and (same if keep_state is None else keep_state)
        snap.bundle_sha = self.bundle_sha
        self._restore(snap, keep_states=keep)


def _stream_problem(stream: Any) -> str | None:
    """What is wrong with a stream id (None when it is fine)."""
    if not isinstance(stream, str):
        return f"a stream id must be a string, got {type(stream).__name__}"
    if not stream or len(stream) > _MAX_STREAM_ID:
        return f"a stream id must have 1 to {_MAX_STREAM_ID} characters, got {len(stream)}"
    if "+" in stream or "#" in stream or not stream.isprintable():
        return "a stream id must be printable and hold no MQTT wildcard ('+', '#')"
    return None


def _ts_problem(ts: Any) -> str | None:
    """What is wrong with a timestamp (None when it is a finite number)."""
    try:
        if -_INF < ts < _INF:
            return None
    except TypeError:
        pass
    return f"timestamp {ts!r} is not a finite number of seconds"


def _as_bundle(bundle: Any) -> Any:
    if hasattr(bundle, "manifest"):
        return bundle
    from edge_lstm.bundle import Bundle

    return Bundle.open(Path(bundle))
