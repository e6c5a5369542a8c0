"""Typed config schemas: each config section is a frozen dataclass declared beside the code that owns it.

A schema field carries its type (the annotation), its constraint (a check built by `integer`, `number`,
`one_of`, ... below, given to `setting`) and, only for a key a YAML file may leave out, its default.
Every other default lives once in the YAML under `ppp/conf`. `parse` turns a config section into its
dataclass, raising a one-line `ConfigError` that names the key path, the bad value and the valid range;
an unknown key in a section is an error (docs/decisions.md, "Typed config schemas"). Shared blocks (the
Fisher estimate, the projection, the prompt templates, a training recipe) are dataclasses that a
method's schema inherits (a flat block, mounted with `@_here_`) or holds as a nested field (`block`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from omegaconf import OmegaConf

from ppp.errors import ConfigError, choose

Check = Callable[[str, Any], None]
MISSING = dataclasses.MISSING

# A typed schema: `@schema class X: key: int = setting(integer(1))`. Keyword-only, so that a schema that
# inherits a block may declare required fields after the block's defaulted ones.
schema = dataclasses.dataclass(frozen=True, kw_only=True)


class _Absent:
    """The value of a required field a partial section does not hold (`read`, `parse(complete=False)`)."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT: Any = _Absent()


# ---------------------------------------------------------------- checks


def _number(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path} must be a number, got '{value}'") from None
    return float(value)


def integer(low: int | None = None, optional: bool = False) -> Check:
    def check(path, value):
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(
                f"{path} must be an integer{'' if low is None else f' >= {low}'}"
                f"{' or null' if optional else ''}, got '{value}'"
            )
        if low is not None and value < low:
            raise ConfigError(f"{path} must be >= {low}, got {value}")

    return check


def number(low: float = -math.inf, high: float = math.inf, low_open: bool = False, optional: bool = False) -> Check:
    def check(path, value):
        if value is None and optional:
            return
        x = _number(path, value)
        if math.isnan(x) or x < low or x > high or (low_open and x == low):
            bound = f"{'(' if low_open else '['}{low:g}, {high:g}]"
            raise ConfigError(f"{path} must lie in {bound}, got {value}")

    return check


def one_of(*choices: Any, optional: bool = False) -> Check:
    def check(path, value):
        if value is None and optional:
            return
        if value not in choices:
            raise ConfigError(f"{path} must be one of {', '.join(map(str, choices))}; got '{value}'")

    return check


def boolean() -> Check:
    return one_of(True, False)


def choice(*choices: str) -> Check:
    """One of `choices`, reported as `unknown PATH 'value'; valid choices: ...` (sorted)."""

    def check(path, value):
        choose(path, value, choices)

    return check


def subset_of(*choices: str) -> Check:
    def check(path, value):
        unknown = [v for v in (value or []) if v not in choices]
        if unknown:
            raise ConfigError(f"{path}: unknown value(s) {', '.join(map(str, unknown))}; valid: {', '.join(choices)}")

    return check


def distinct_subset_of(*choices: str, optional: bool = False) -> Check:
    def check(path, value):
        if value is None and optional:
            return
        if not isinstance(value, list) or not value:
            raise ConfigError(
                f"{path} must be a non-empty list of {', '.join(choices)}{' or null' if optional else ''}; "
                f"got '{value}'"
            )
        subset_of(*choices)(path, value)
        if len(set(value)) != len(value):
            raise ConfigError(f"{path} names a value twice: {value}")

    return check


def distinct_integers(low: int) -> Check:
    """A non-empty list of distinct integers, each >= `low` (e.g. the k of k-shot relearning)."""

    def check(path, value):
        if (
            not isinstance(value, list)
            or not value
            or any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in value)
        ):
            raise ConfigError(f"{path} must be a non-empty list of integers >= {low}; got '{value}'")
        if len(set(value)) != len(value):
            raise ConfigError(f"{path} names a value twice: {value}")

    return check


def prompt_template(*slots: str) -> Check:
    """A prompt template (or a list of them) that holds exactly one `{}` slot besides the named `slots`."""

    def check(path, value):
        for template in value if isinstance(value, list) else [value]:
            try:
                ok = (
                    isinstance(template, str)
                    and template.count("{}") == 1
                    and template.format("x", **{s: "y" for s in slots}) is not None
                )
            except (IndexError, KeyError, ValueError):
                ok = False
            if not ok or any("{" + s + "}" not in template for s in slots):
                wanted = " and ".join(["one {} slot", *(f"a {{{s}}} slot" for s in slots)])
                raise ConfigError(f"{path}: the prompt template '{template}' must hold {wanted} and no other braces")
        if isinstance(value, list) and not value:
            raise ConfigError(f"{path} must list at least one prompt template")

    return check


# ---------------------------------------------------------------- declaring fields


def setting(check: Check | None = None, default: Any = MISSING) -> Any:
    """A schema field with its constraint; `default` only for a key a YAML file may leave out."""
    metadata = {"check": check}
    if isinstance(default, (list, dict)):
        return dataclasses.field(
            default_factory=lambda: OmegaConf.to_container(OmegaConf.create(default)), metadata=metadata
        )
    return dataclasses.field(default=default, metadata=metadata)


def block(of: type, default: Any = MISSING) -> Any:
    """A nested section (e.g. `evaluator.mia_settings`) parsed with its own schema `of`."""
    return dataclasses.field(default=default, metadata={"schema": of})


def mapping(optional: bool = False) -> Check:
    """A free-form mapping (e.g. a method's per-task overrides of the backbone's training recipe)."""

    def check(path, value):
        if value is None and optional:
            return
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path} must be a mapping{' or null' if optional else ''}, got '{value}'")

    return check


def fields(of: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(of)}


def has_default(f: dataclasses.Field) -> bool:
    return f.default is not MISSING or f.default_factory is not MISSING


@functools.cache
def _type_hints(of: type) -> dict[str, Any]:
    return typing.get_type_hints(of)


def accepts_null(of: type, name: str) -> bool:
    """Whether the declared type of `of.name` admits None (`X | None`, `Optional[X]` or `Any`), so that a null in a
    YAML is a value, not a gap. Read from the resolved type, not its text: `dict[str, Any]` does not admit None."""
    hint = _type_hints(of)[name]
    if hint is Any:
        return True
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def default(of: type, name: str) -> Any:
    """The schema default of `of.name` (for a key a YAML may omit)."""
    f = fields(of)[name]
    if not has_default(f):
        raise KeyError(f"{of.__name__}.{name} has no default: its YAML holds it")
    return f.default if f.default is not MISSING else f.default_factory()


# ---------------------------------------------------------------- parsing


def _plain(section: Any) -> dict:
    if section is None:
        return {}
    if OmegaConf.is_config(section):
        return OmegaConf.to_container(section, resolve=True)
    return {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in section.items()}


def reject_unknown(of: type, values: Mapping, path: str) -> None:
    """A one-line ConfigError naming the keys of `values` that `of` does not declare, and the valid keys."""
    declared = fields(of)
    unknown = [k for k in values if k not in declared]
    if unknown:
        where = f"{path}: unknown key(s)" if path else "unknown config key(s)"
        raise ConfigError(f"{where} {', '.join(map(str, unknown))}; valid keys: {', '.join(declared)}")


def parse(of: type, section: Any, path: str, complete: bool = True, check: bool = True):
    """The section as an `of` instance, every value checked (`check`).

    `complete`: an unknown key or a missing required key is a ConfigError (what a run validates). Without
    it (a partial section, e.g. one a test or a direct caller builds), unknown keys are ignored and a
    missing required field holds `ABSENT`."""
    values, declared = _plain(section), fields(of)
    if complete:
        reject_unknown(of, values, path)
    kwargs = {}
    for name, f in declared.items():
        key = f"{path}.{name}" if path else name
        if name not in values:
            if not has_default(f):
                if complete:
                    raise ConfigError(f"{key} is missing: {of.__name__} needs it")
                kwargs[name] = ABSENT
            continue
        value = values[name]
        if value is None and check and not accepts_null(of, name):
            where = " or in ppp/conf/method_defaults/<method>_<dataset>.yaml" if key.startswith("method.") else ""
            raise ConfigError(f"{key} has no value (null): give one on the command line ({key}=...){where}")
        nested = f.metadata.get("schema")
        if nested is not None and value is not None:
            value = parse(nested, value, key, complete, check)
        elif check and f.metadata.get("check") is not None:
            f.metadata["check"](key, value)
        kwargs[name] = value
    instance = of(**kwargs)
    if check and hasattr(instance, "check") and ABSENT not in kwargs.values():
        instance.check(path)  # the section's own cross-key checks
    return instance


def read(of: type, section: Any):
    """A typed view of a (possibly partial) section that a run has validated already: values as given,
    schema defaults for the keys it leaves out, no checks."""
    return parse(of, section, "", complete=False, check=False)


__all__ = [
    "ABSENT",
    "Check",
    "ClassVar",
    "block",
    "boolean",
    "choice",
    "default",
    "distinct_integers",
    "distinct_subset_of",
    "fields",
    "has_default",
    "integer",
    "mapping",
    "number",
    "one_of",
    "parse",
    "prompt_template",
    "read",
    "reject_unknown",
    "schema",
    "setting",
    "subset_of",
]
