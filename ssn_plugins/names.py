"""Nearest-name hints for a misspelt name: the one rule both adapters' "did you mean" errors follow."""
import argparse
import difflib
from typing import Callable, List, Sequence


def close_names(name: str, known: Sequence[str], n: int = 2) -> List[str]:
    """The names in ``known`` that differ from ``name`` only in case, else its ``n`` closest ones."""
    same = [k for k in known if k.lower() == name.lower()]
    return same or difflib.get_close_matches(name, list(known), n=n)


def did_you_mean(name: str, known: Sequence[str]) -> str:
    """``"; did you mean 'SN' or 'SSN'?"`` for a misspelt ``name``, or ``""`` when nothing is close."""
    close = close_names(name, known)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def choice_argument(known: Sequence[str], what: str) -> Callable[[str], str]:
    """An argparse ``type`` that accepts one of ``known`` and refuses anything else with the nearest names.

    (argparse's own ``choices`` lists every name without saying which one was meant.)
    """
    def parse(text: str) -> str:
        if text in known:
            return text
        raise argparse.ArgumentTypeError(f"no {what} {text!r}{did_you_mean(text, known)} (choose from "
                                         f"{', '.join(known)})")
    parse.__name__ = what  # argparse names the type in some messages
    return parse
