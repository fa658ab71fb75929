"""Progress of long loops: the library reports it, the command line draws it.

Library code never prints. A loop that can take minutes (the final training's
batches, an evaluation's batches) takes an optional *progress factory*: any
callable ``factory(*, total, desc, initial=0, unit="batch")`` that returns a bar
with ``update(n)``, ``set_postfix_str(text)`` and ``close()``: ``tqdm.tqdm`` (or a
``functools.partial`` of it) is one. ``None`` shows nothing (NNI trials: their
logs stay free of bars). ``nni-robust train`` and ``evaluate`` pass a ``tqdm``
factory on a terminal, or with ``--progress``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, TypeVar

__all__ = ["ProgressFactory", "open_bar", "track"]

#: ``factory(*, total, desc, initial=0, unit="batch") -> bar`` (``update``, ``set_postfix_str``, ``close``).
ProgressFactory = Callable[..., Any]

T = TypeVar("T")


def open_bar(progress: ProgressFactory | None, *, total: int | None, desc: str, initial: int = 0,
             unit: str = "batch") -> Any:
    """A bar from ``progress`` (None when ``progress`` is None)."""
    if progress is None:
        return None
    return progress(total=total, desc=desc, initial=initial, unit=unit)


def track(iterable: Iterable[T], progress: ProgressFactory | None, *, desc: str, total: int | None = None,
          unit: str = "batch") -> Iterator[T]:
    """Yield the items of ``iterable``, advancing a bar of ``progress`` by one per item (closed at the end).

    ``total`` defaults to ``len(iterable)`` when it has one.
    """
    if progress is None:
        yield from iterable
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    bar = open_bar(progress, total=total, desc=desc, unit=unit)
    try:
        for item in iterable:
            yield item
            bar.update(1)
    finally:
        bar.close()
