"""Command-line plumbing shared by every platekit CLI: numbers checked for range, and errors on one line."""
from __future__ import annotations

import argparse
import math


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2) instead of the usage block and a second line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def number(kind=int, low=None, high=None, low_open=False, high_open=False):
    """An argparse `type` for an int or float in [low, high] (low excluded with `low_open`, high with `high_open`):
    NaN, infinity and out-of-range values are refused with the valid range in the message."""
    bounds = (f"{'>' if low_open else '>='} {low:g}" if low is not None else "",
              f"{'<' if high_open else '<='} {high:g}" if high is not None else "")
    wanted = f"{'a whole number' if kind is int else 'a number'}" + (
        f" {' and '.join(b for b in bounds if b)}" if any(bounds) else "")

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"wants {wanted}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"wants {wanted}, got {text!r}")
        if (low is not None and (value < low or (low_open and value == low))) or (
                high is not None and (value > high or (high_open and value == high))):
            raise argparse.ArgumentTypeError(f"wants {wanted}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


PORT = number(int, 1, 65535)  # 0 (any free port) is not offered: Gradio then fails to reach its own server


def read_text(path, what: str, error: type[Exception] | None = None) -> str:
    """A user's text file (UTF-8, a BOM allowed), or `error` (default ClassifyError) naming it: never a
    UnicodeDecodeError."""
    if error is None:
        from classify import ClassifyError as error
    try:
        data = open(path, "rb").read()
    except OSError as err:
        raise error(f"cannot read {what} {path}: {err.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise error(f"{what} {path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None


