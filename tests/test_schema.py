"""Typed config schemas (ppp/schema.py): every key of every shipped group option is declared once in its
section's schema, every key a YAML must hold is there, and the defaults of keys a YAML may omit agree
with `ppp.identity.NEUTRAL_DEFAULTS`."""

import dataclasses
from typing import Any, Optional

import pytest
from omegaconf import OmegaConf

from ppp.config import CONF_DIR, compose_config
from ppp.errors import ConfigError
from ppp.identity import NEUTRAL_DEFAULTS
from ppp.methods import METHODS
from ppp.schema import default, fields, has_default, integer, parse, read, schema, setting
from ppp.tune import TuneSettings, search_overrides
from ppp.validation import RunSettings, section_schema

GROUPS = ("method", "evaluator", "dataset", "backbone")
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]
SEARCHES = sorted(p.stem for p in (CONF_DIR / "hparams_search").glob("*.yaml"))


def keys_match(of, section, path):
    """Every key of `section` is a field of `of` and every field without a default is a key, nested too."""
    declared = fields(of)
    assert set(section) <= set(declared), f"{path}: keys without a schema field: {set(section) - set(declared)}"
    required = {name for name, f in declared.items() if not has_default(f)}
    assert required <= set(section), f"{path}: schema fields no YAML holds: {required - set(section)}"
    for name, f in declared.items():
        nested = f.metadata.get("schema")
        if nested is not None and section.get(name) is not None:
            keys_match(nested, section[name], f"{path}.{name}")


@pytest.mark.parametrize("group, name", OPTIONS)
def test_every_yaml_key_has_a_schema_field_and_every_required_field_a_yaml_key(group, name):
    cfg = compose_config([f"{group}={name}"])
    section = OmegaConf.to_container(cfg[group], resolve=True)
    keys_match(section_schema(cfg, group), section, group)
    run = {k: v for k, v in OmegaConf.to_container(cfg).items() if k not in GROUPS}
    keys_match(RunSettings, run, "config")


@pytest.mark.parametrize("name", SEARCHES)
def test_every_tune_key_has_a_schema_field(name):
    cfg = compose_config(search_overrides([f"hparams_search={name}"]))
    keys_match(TuneSettings, OmegaConf.to_container(cfg.tune, resolve=True), "tune")


def test_schema_defaults_agree_with_the_neutral_defaults():
    """A key added after caches existed is left out of keys while it holds its neutral value; the value
    a section that omits the key gets (the schema default) must be that value."""
    cfg = compose_config([])  # every neutral key's section: digit_scenes, clip_tiny, ppp, retrieval
    for path, neutral in NEUTRAL_DEFAULTS.items():
        section, *rest = path.split(".")
        if not rest:  # a run key (forget_set): RunSettings holds its default
            of, rest = RunSettings, [section]
        else:
            of = section_schema(cfg, section)
        for name in rest[:-1]:
            of = fields(of)[name].metadata["schema"]
        value = default(of, rest[-1])
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        assert value == neutral, f"{path}: schema default {value!r}, NEUTRAL_DEFAULTS {neutral!r}"


def test_registries_return_schemas_and_name_the_valid_ones():
    assert fields(METHODS.schema("ppp"))["k"].metadata["check"] is not None
    with pytest.raises(ConfigError, match="unknown method 'nonsense'; valid choices: .*original"):
        METHODS.schema("nonsense")


def test_a_null_is_a_value_exactly_where_the_resolved_type_admits_none():
    @schema
    class Typed:
        optional: Optional[int] = setting(default=None)  # noqa: UP045 - the spelling under test
        union: int | None = setting(default=None)
        anything: Any = setting(default=None)
        table: dict[str, Any] = setting(default=None)

    assert parse(Typed, {"optional": None, "union": None, "anything": None}, "x") == Typed()
    # `Any` inside a dict does not make the dict itself optional
    with pytest.raises(ConfigError, match=r"^x.table has no value \(null\)"):
        parse(Typed, {"table": None}, "x")


def test_unknown_and_missing_keys_are_one_line_errors():
    @schema
    class Small:
        n: int = setting(integer(1))
        m: int = setting(integer(0), default=3)
        o: int | None = setting(integer(0, optional=True), default=None)

    assert parse(Small, {"n": 2}, "x") == Small(n=2, m=3)
    assert parse(Small, {"n": 2, "o": None}, "x").o is None  # a type that admits None takes a null
    assert read(Small, {"other": 1}).m == 3  # a typed view: unknown keys ignored, defaults filled in
    for section, message in (
        ({"n": 2, "nn": 1}, "x: unknown key(s) nn; valid keys: n, m"),
        ({}, "x.n is missing"),
        ({"n": 0}, "x.n must be >= 1, got 0"),
        ({"n": None}, "x.n has no value (null): give one on the command line (x.n=...)"),  # a gap, not a value
    ):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
            parse(Small, section, "x")
        assert "\n" not in str(err.value)
    cfg = compose_config(["+method.alph=1"])
    from ppp.experiment import validate

    with pytest.raises(ConfigError, match="method: unknown key\\(s\\) alph"):
        validate(cfg)
