"""A Ctrl-C that is never lost: a SIGINT handler that remembers the signal.

Python's own SIGINT handling fails a long-running process two ways. It raises
``KeyboardInterrupt`` wherever the main thread is, and where that is a finalizer (a
garbage-collected SQLAlchemy object, say) the exception is printed as "Exception ignored in"
and dropped. And a process started with SIGINT ignored (in the background by a shell without
job control) gets no handler at all. The workers, ``launch`` and the storage proxy each set
this one and act on the signal at a point of their choosing.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading


class Interrupt:
    """A SIGINT handler that remembers the signal, and raises ``KeyboardInterrupt`` only
    while :meth:`armed` (a trial's training), where Optuna fails the trial cleanly.

    A ``KeyboardInterrupt`` that a finalizer drops is kept off the output (no "Exception
    ignored in"); the signal is remembered, and the worker stops when the trial ends.
    """

    def __init__(self) -> None:
        self.seen = False
        self._armed = False
        self._previous = None
        self._hook = None

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            sys.unraisablehook = self._hook

    def _handle(self, signum, frame) -> None:
        self.seen = True
        if self._armed:
            self._armed = False  # one KeyboardInterrupt per trial; Optuna then tells FAIL
            raise KeyboardInterrupt

    def _unraisable(self, unraisable) -> None:
        # A KeyboardInterrupt a finalizer swallowed is remembered (``seen``) and honoured
        # when the trial ends; Python's "Exception ignored in" traceback is left out.
        if not issubclass(unraisable.exc_type, KeyboardInterrupt):
            self._hook(unraisable)

    @contextlib.contextmanager
    def armed(self):
        """Within it, SIGINT raises at once; a signal that came before it is raised on entry."""
        self.honour()
        self._armed = True
        try:
            yield
        finally:
            self._armed = False

    def honour(self) -> None:
        """Raise ``KeyboardInterrupt`` if a SIGINT came (held back, or perhaps swallowed)."""
        if self.seen:
            raise KeyboardInterrupt
