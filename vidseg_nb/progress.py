"""One progress source for a segmentation: UNet samples done of those planned, per stage, with an ETA.

The UNet work is what takes the time, so that is what is counted: the backbone reports every UNet
forward (:func:`advance`, from ``Backbone.unet_eps``: 2 rows per frame and step, the CFG pair), each stage
announces the samples it plans before it starts (:func:`stage`, from ``features.reference_run`` and
``modulation.modulate``), and the pipeline says which frames the current batch holds (:func:`batch`).
Nothing is reported unless a :class:`Tracker` is active (:func:`track`, a context variable, so each
thread of the demo has its own); readers get a :class:`Snapshot` at every change:

* the CLI, :func:`tqdm_listener`: a bar in UNet samples per stage (``vidseg segment``);
* the demo, ``demo.handlers``: ``gr.Progress`` with :meth:`Snapshot.fraction` and :meth:`Snapshot.line`.

Both read the same numbers, so the CLI bar and the demo move together inside a batch rather than at its
end. No torch, no Gradio here.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Snapshot:
    """Where the current stage stands: ``done`` of ``planned`` UNet samples after ``elapsed`` seconds."""

    stage: str
    done: int
    planned: int
    elapsed: float
    frames: tuple[int, int] | None = None  # the batch's frames [a, b) of the clip, when told
    n_frames: int | None = None  # the clip's frame count, when told

    @property
    def fraction(self) -> float:
        """Done / planned of this stage, in [0, 1]."""
        return min(1.0, self.done / self.planned) if self.planned > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left in this stage at its rate so far (None before the first sample)."""
        if self.done <= 0 or self.elapsed <= 0:
            return None
        return max(0.0, (self.planned - self.done) * self.elapsed / self.done)

    def line(self) -> str:
        """``frames 0-13 of 16 · stage 3, modulation: 1200/3000 UNet samples · about 40 s left``."""
        parts = []
        if self.frames is not None:
            a, b = self.frames
            parts.append(f"frames {a}-{b - 1}" + (f" of {self.n_frames}" if self.n_frames else ""))
        parts.append(f"{self.stage}: {self.done}/{self.planned} UNet samples")
        eta = self.eta
        if eta is not None and self.done < self.planned:
            parts.append(f"about {_seconds(eta)} left")
        return " · ".join(parts)


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


Listener = Callable[[Snapshot], None]


class Tracker:
    """Counts UNet samples per stage and tells ``listener`` a :class:`Snapshot` at every change."""

    def __init__(self, listener: Listener, clock: Callable[[], float] = time.perf_counter) -> None:
        self.listener, self.clock = listener, clock
        self.name = ""
        self.done = self.planned = 0
        self.started = clock()
        self.frames: tuple[int, int] | None = None
        self.n_frames: int | None = None
        self.total_done = 0  # every sample counted while tracking (tests compare with the backbone)

    def snapshot(self) -> Snapshot:
        return Snapshot(
            self.name, self.done, self.planned, self.clock() - self.started, self.frames, self.n_frames
        )

    def batch(self, a: int, b: int, n_frames: int | None = None) -> None:
        self.frames = (int(a), int(b))
        if n_frames is not None:
            self.n_frames = int(n_frames)

    def stage(self, name: str, planned: int) -> None:
        self.name, self.done, self.planned, self.started = name, 0, int(planned), self.clock()
        self.listener(self.snapshot())

    def advance(self, samples: int) -> None:
        self.done += int(samples)
        self.total_done += int(samples)
        self.listener(self.snapshot())


_CURRENT: contextvars.ContextVar[Tracker | None] = contextvars.ContextVar("vidseg_progress", default=None)


@contextlib.contextmanager
def track(listener: Listener, clock: Callable[[], float] = time.perf_counter) -> Iterator[Tracker]:
    """Report the UNet work of the code inside to ``listener`` (in this thread / context)."""
    tracker = Tracker(listener, clock)
    token = _CURRENT.set(tracker)
    try:
        yield tracker
    finally:
        _CURRENT.reset(token)


def current() -> Tracker | None:
    return _CURRENT.get()


def advance(samples: int) -> None:
    """``samples`` UNet rows went through (``Backbone.unet_eps``); a no-op unless tracking."""
    t = _CURRENT.get()
    if t is not None:
        t.advance(samples)


def stage(name: str, planned: int) -> None:
    """A stage starts and plans ``planned`` UNet samples; a no-op unless tracking."""
    t = _CURRENT.get()
    if t is not None:
        t.stage(name, planned)


def batch(a: int, b: int, n_frames: int | None = None) -> None:
    """The frames [a, b) are the batch now being segmented; a no-op unless tracking."""
    t = _CURRENT.get()
    if t is not None:
        t.batch(a, b, n_frames)


def tqdm_listener(**tqdm_kw: object) -> Listener:
    """A CLI reader: one tqdm bar in UNet samples, reset at each stage (its description: the stage and
    the batch's frames), made at the first report (nothing is drawn when nothing runs, e.g. a bad
    flag). Close it with ``listener.close()``."""
    from tqdm.auto import tqdm

    bars: list[Any] = []
    key: list[tuple] = [()]

    def listen(s: Snapshot) -> None:
        if not bars:
            bars.append(tqdm(total=0, unit="sample", leave=False, dynamic_ncols=True, **tqdm_kw))
        bar = bars[0]
        k = (s.stage, s.frames, s.planned)
        if k != key[0] or s.done < bar.n:
            key[0] = k
            where = f"frames {s.frames[0]}-{s.frames[1] - 1} " if s.frames else ""
            bar.set_description(f"{where}{s.stage}", refresh=False)
            bar.reset(total=s.planned)
        bar.update(s.done - bar.n)

    listen.close = lambda: bars and bars[0].close()  # type: ignore[attr-defined]
    return listen
