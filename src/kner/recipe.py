"""Recipes: named settings per family, kept as TOML files in ``kner/recipes/``.

A recipe table per family holds that family's config fields plus the run keys below; values
given on the command line win over the recipe, which wins over the family's defaults. Strings
may name ``${KNER_MODELS}``, the folder of pretrained weights built offline.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path

RECIPE_DIR = Path(__file__).with_name("recipes")
RUN_KEYS = {"train_limit": int, "dev_limit": int}
"""Keys of a family table that are not config fields: the sentences of train and dev it uses."""
MODELS_ENV, MODELS_DEFAULT = "KNER_MODELS", "~/.cache/kner-models"


def names() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))


def _path(name: str) -> Path:
    path = Path(name)
    if path.suffix == ".toml" and path.is_file():
        return path
    if name not in names():
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(names())} or give a .toml file")
    return RECIPE_DIR / f"{name}.toml"


def load(name: str) -> dict:
    """The recipe ``name`` (a built-in name or a .toml path) as ``{"name", "description", "families"}``."""
    path = _path(name)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"recipe {path} is not valid TOML: {exc}") from exc
    description = raw.pop("description", "")
    bad = [k for k, v in raw.items() if not isinstance(v, dict)]
    if bad:
        raise ValueError(f"recipe {path}: {', '.join(bad)} must be [family] tables")
    return {"name": path.stem, "description": description, "families": raw}


def _expand(value: object) -> object:
    if isinstance(value, str) and f"${{{MODELS_ENV}}}" in value:
        root = os.environ.get(MODELS_ENV) or os.path.expanduser(MODELS_DEFAULT)
        return value.replace(f"${{{MODELS_ENV}}}", root)
    return value


def resolve(recipe: dict | None, family: str, config_cls: type, given: dict) -> tuple[dict, dict]:
    """``(config overrides, run keys)`` for ``family``: the recipe's table under ``given``.

    Unknown keys are refused with the valid names, so a typo never trains with a silent default.
    """
    table = dict((recipe or {}).get("families", {}).get(family, {}))
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(table) - fields - set(RUN_KEYS))
    if unknown:
        raise ValueError(f"recipe {recipe['name']!r}: {family} has no setting {', '.join(map(repr, unknown))}; "
                         f"valid names: {', '.join(sorted(fields | set(RUN_KEYS)))}")
    merged = {k: _expand(v) for k, v in table.items()} | {k: v for k, v in given.items() if v is not None}
    run = {k: merged.pop(k) for k in RUN_KEYS if k in merged}
    return merged, run
