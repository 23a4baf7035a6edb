"""A configuration name nobody knows, answered with the names it could have meant (difflib's close matches, as
ultralytics' check_dict_alignment answers a misspelt argument): serve_config.yaml's `user_config` keys
(pipeline.core.settings), its application `args` and their runtime names (deployments.placement.AppArgs). A typo
is refused with its fix, never dropped.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def hint(name: str, known: Iterable[str]) -> str:
    """The known names close to `name` ("did you mean 'crop_margin'?"), else all of them ("known: [...]")."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known)
    return f"did you mean {' or '.join(map(repr, close))}?" if close else f"known: {known}"


def unknown_keys(owner: str, noun: str, given: Iterable[str], known: Iterable[str]) -> str | None:
    """What to answer when `given` holds keys `known` lacks, a sentence per key ("RecognizerSettings has no setting
    'crop_margn'; did you mean 'crop_margin'?"); None when every key is known."""
    known = set(known)
    unknown = sorted(set(given) - known)
    return " ".join(f"{owner} has no {noun} {key!r}; {hint(key, known)}" for key in unknown) or None
