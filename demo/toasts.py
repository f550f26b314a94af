"""One toast per failed event: :func:`user_errors`, shared by ``demo/app.py`` and ``demo/follow.py``."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from demo import handlers as H

log = logging.getLogger("vidseg_nb.demo")


def user_errors(what: str) -> Callable:
    """Turn every failure of the event ``what`` ("Segment", "Upload", ...) into one readable ``gr.Error``
    whose title says what failed (never a bare traceback; :func:`demo.handlers.error_toast`)."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as e:  # noqa: BLE001 - every error becomes one toast
                message, title, known = H.error_toast(e, what)
                if not known:
                    log.exception("demo event %s failed", getattr(fn, "__name__", fn))
                # Gradio 6 groups toasts by type under the bare word "Error": the title leads the message
                raise gr.Error(
                    f"<strong>{title}</strong><br>{message}", title=title, print_exception=False
                ) from e

        return wrapper

    return wrap
