"""Optional packages: a missing one becomes a one-line error naming the kner extra that installs it."""
from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata

_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9_.-]+).*;.*extra\s*==\s*['\"]([\w-]+)['\"]")


class MissingExtraError(ImportError):
    """An optional package is not installed; the message says which extra brings it."""


def extra_for(module: str) -> str | None:
    """The extra of kner's installed metadata that lists the distribution of top-level ``module``
    (``torch`` -> ``deep``), so the mapping lives only in pyproject.toml; None if no extra does."""
    try:
        requires = metadata.requires("kner") or []
    except metadata.PackageNotFoundError:
        return None
    for requirement in requires:
        match = _REQUIREMENT.match(requirement)
        if match and match.group(1).lower().replace("-", "_") == module.lower():
            return match.group(2)
    return None


@contextmanager
def needs_extra(what: str) -> Iterator[None]:
    """Turn a missing optional package inside the block into :class:`MissingExtraError` about
    ``what``; any other missing module (a bug, not an install choice) passes through unchanged."""
    try:
        yield
    except ModuleNotFoundError as exc:
        extra = extra_for((exc.name or "").partition(".")[0])
        if extra is None:
            raise
        raise MissingExtraError(f"{what} needs the {extra} extra: pip install 'kner[{extra}]'") from exc
