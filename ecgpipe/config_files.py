"""Config files: presets, TOML files and their ``extends`` chains, read into the dict ``ecgpipe.config`` validates
(a JSON file too: what ``ecgpipe config NAME`` prints, or a run's saved config.json).

A file may start from another with ``extends = "<preset or path>"`` (a path relative to the file) and ``unset`` keys of
it; :func:`read_config` resolves the chain and keeps each file's own settings, so that an invalid key is blamed on
the file that sets it.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import tomllib
import types
import typing
import warnings
from importlib import resources
from pathlib import Path

from ecgpipe.errors import EcgpipeError


class ConfigError(EcgpipeError, ValueError):
    """A configuration file or value is invalid; the message names the file and the key."""


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("ecgpipe.configs").iterdir() if p.name.endswith(".toml"))


def _settings_type(annotation):
    """The part of a field's type that holds settings: a model, or a list or dict of them (Optional unwrapped)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and hasattr(arg, "model_fields") or typing.get_origin(arg) in (list, dict):
                return arg
    return annotation


def close_key(model, loc: tuple) -> str | None:
    """For an unknown key at ``loc`` (a validation error's path) in settings of ``model`` (a pydantic model class): the
    known key of the same table its spelling is closest to, or None."""
    current = model
    for part in loc[:-1]:
        current = _settings_type(current)
        if typing.get_origin(current) in (list, dict):  # this part is a list index or a dict key (a database's name)
            current = typing.get_args(current)[-1]
        elif isinstance(current, type) and part in getattr(current, "model_fields", {}):
            current = current.model_fields[part].annotation
        else:
            return None
    current = _settings_type(current)
    known = list(getattr(current, "model_fields", {})) if isinstance(current, type) else []
    match = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    return match[0] if match else None


def error_words(e: dict, model) -> str:
    """One pydantic error of ``model`` in words: an unknown key with the close one; our own checks without pydantic's
    prefix; a type, range or choice with the value given (TOML's spelling) and the choice it is close to."""
    if e["type"] == "extra_forbidden":
        close = close_key(model, e["loc"])
        return (f"unknown key (did you mean {close!r}?)" if close else
                "unknown key (misspelt? `ecgpipe config NAME` prints a preset's every key)")
    if e["type"] in ("value_error", "assertion_error"):
        return e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if e["type"] == "missing":  # its input is the whole table around the key
        return e["msg"]
    value = e.get("input")
    shown = ("true" if value else "false") if isinstance(value, bool) else repr(value)
    msg = f"{e['msg']} (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    if e["type"] == "literal_error" and isinstance(value, str):  # 'SVC' for 'svc', 'hgbt' for 'hgb'
        allowed = str((e.get("ctx") or {}).get("expected", "")).replace("'", "").replace(" or ", ", ").split(", ")
        close = [a for a in allowed if a.lower() == value.lower()] or difflib.get_close_matches(value, allowed, n=1, cutoff=0.5)
        msg += f"; did you mean {close[0]!r}?" if close else ""
    return msg


def setting_file(layers: tuple, loc: tuple) -> str | None:
    """The first file of ``layers`` (``read_config``'s, the given file first) whose own settings hold the key path
    ``loc`` (or its table); None when none does (a default, or a value computed from several keys)."""
    for source, own in layers:
        node = own
        for part in loc:
            if not isinstance(node, dict) or str(part) not in node:
                break
            node = node[str(part)]
        else:
            return source
    return None


def read_config(name_or_path: str | Path, chain: tuple[str, ...] = ()) -> tuple[dict, str, tuple]:
    """The TOML of a preset or file as a dict, with its ``extends`` chain resolved; a name for errors; and each file's
    own settings, the file first, then its bases (``setting_file`` finds which file set a key)."""
    path = Path(name_or_path)
    if path.is_dir() and str(name_or_path) not in preset_names():  # a run's folder: its settings are its config.json
        saved = path / "config.json"
        raise ConfigError(f"{path} is a folder, not a config file" + (f" (a run's? its settings are {saved})" if saved.is_file() else ""))
    if _names_a_file(name_or_path):
        if not path.is_file():
            preset = path.stem if path.suffix == ".toml" and path.stem in preset_names() else None
            raise ConfigError(f"config file {path} not found" + (f" (extended by {chain[-1]})" if chain else "")
                              + (f"; the preset of that name is given as {preset!r}, without .toml" if preset else ""))
        source, identity = str(path), str(path.resolve())
        try:
            text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not TOML
        except UnicodeDecodeError as err:
            raise ConfigError(f"{source}: not UTF-8 text (byte {err.start} is {err.object[err.start:err.start + 1]!r}); "
                              "TOML files must be UTF-8") from None
        except OSError as err:
            raise ConfigError(f"{source}: cannot be read: {err.strerror or err}") from None
    else:
        name = str(name_or_path)
        if name not in preset_names():
            raise ConfigError(f"no preset named {name!r}" + (f" (extended by {chain[-1]})" if chain else "")
                              + f"; presets: {', '.join(preset_names())}; or give a .toml (or .json) path")
        text = resources.files("ecgpipe.configs").joinpath(f"{name}.toml").read_text()
        source = identity = f"preset {name}"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        if not text.lstrip().startswith(("{", "[")) or (text.lstrip().startswith("[") and not _is_json(text)):
            raise ConfigError(f"{source}: not valid TOML: {err}") from None
        data = _json_settings(text, source)
    base = data.pop("extends", None)
    unset = data.pop("unset", None)
    if base is None:
        if unset is not None:
            raise ConfigError(f"{source}: unset removes keys inherited through extends, and this file extends nothing")
        return data, source, ((source, data),)
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{source}: extends must name a preset or a .toml file, got {base!r}")
    if identity in chain:
        raise ConfigError(f"{source}: extends itself through {' -> '.join((*chain, identity))}")
    if _names_a_file(base):
        if source.startswith("preset "):
            raise ConfigError(f"{source}: a preset may only extend another preset, not {base!r}")
        if not Path(base).is_absolute():
            base = str(path.parent / base)  # relative to the extending file, not to the working directory
    base_data, base_source, base_layers = read_config(base, (*chain, identity))
    base_data = _without_keys(base_data, unset, source, base_source)
    if "classes" in data:
        if dropped := [c for c in base_data.get("classes", {}) if c not in data["classes"]]:  # stated whole: easy to miss
            unset_them = json.dumps([f"classes.{c}" for c in dropped])
            warnings.warn(f"{source}: its [classes] replaces {base_source}'s whole, so {', '.join(dropped)} is no class "
                          f"of this run (state it in [classes] to keep it; `unset = {unset_them}` drops it without this "
                          "warning)", UserWarning, stacklevel=2)
        base_data = {k: v for k, v in base_data.items() if k != "classes"}  # a class list is stated whole: its order is the class index
    if "description" not in data and base_data.get("description") and set(data) - {"name"}:
        # the base's words describe the base's settings, which this file changes (a report said "PCA-128" of PCA-16)
        data = {**data, "description": f"{base_source} with the changes of {source}: {base_data['description']}"}
    return merge_overrides(base_data, data), f"{source} (extends {base_source})", ((source, data), *base_layers)


def is_saved_run(doc) -> bool:
    """Whether a JSON document is a run's saved ``config.json``: ``{"config": {...settings}, "data_dir": ...}``."""
    return isinstance(doc, dict) and isinstance(doc.get("config"), dict) and "data_dir" in doc


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def _json_settings(text: str, source: str) -> dict:
    """Settings written as JSON: what ``ecgpipe config NAME`` prints (every key, resolved), or a run's saved
    ``config.json`` ({"config": ..., "data_dir": ...}), so that either can be edited and given back as a config."""
    try:
        doc = json.loads(text)
    except ValueError as err:
        raise ConfigError(f"{source}: neither TOML nor JSON ({err})") from None
    if is_saved_run(doc):
        doc = doc["config"]
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: JSON settings must be one object of tables, got {type(doc).__name__}")
    return doc


def _without_keys(data: dict, unset, source: str, base_source: str) -> dict:
    """The base's settings without the keys a file's ``unset = ["endpoints.shockable", ...]`` names (dotted paths):
    removed before the file's own values are merged, so a removed table stated again replaces the base's whole."""
    if unset is None:
        return data
    if not isinstance(unset, list) or not all(isinstance(k, str) and k for k in unset):
        raise ConfigError(f"{source}: unset must be a list of dotted keys (e.g. [\"endpoints.shockable\"]), got {unset!r}")
    out = copy.deepcopy(data)
    for dotted in unset:
        *parents, last = dotted.split(".")
        table = out
        for part in parents:
            table = table.get(part) if isinstance(table, dict) else None
        if not isinstance(table, dict) or last not in table:
            raise ConfigError(f"{source}: unset names {dotted!r}, which {base_source} does not set")
        del table[last]
    return out


def _names_a_file(name_or_path: str | Path) -> bool:
    """A ``.toml`` name, a path with a folder in it, or an existing file; otherwise a preset's name (even where the
    working directory holds a folder of that name, such as a run's output folder ``paper4-best``)."""
    text = str(name_or_path)
    return text.lower().endswith(".toml") or "/" in text or os.sep in text or Path(text).is_file()


def merge_overrides(base: dict, extra: dict) -> dict:
    """``base`` with ``extra`` merged in section by section (nested tables merge, other values replace)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_overrides(out[key], value)
        else:
            out[key] = value
    return out
