"""Turning failures into sentences a person can act on."""

from __future__ import annotations


def user_facing_message(exc: BaseException) -> str:
    """One readable sentence for an error, without a traceback.

    Errors of the project's own (contract, leakage, too little data) already carry a
    full sentence; for anything else the exception's type and message are shown.
    """
    text = str(exc).strip()
    if isinstance(exc, FileNotFoundError) and getattr(exc, "filename", None):
        return f"File or folder not found: {exc.filename}."
    if isinstance(exc, (ValueError, LookupError, RuntimeError, OSError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
