"""YAML files that configure adept (training configs, `adept run` recipes): read one mapping, or
stop with one line naming the file and the line of the problem."""

from __future__ import annotations

from pathlib import Path

from .errors import AdeptError


def read_yaml_mapping(path: Path, what: str) -> dict:
    """The mapping in a YAML file; `what` names it in errors ("config file", "recipe")."""
    import yaml

    if not path.is_file():
        raise AdeptError(f"{path}: no such {what}")
    from .data.files import read_text

    try:
        loaded = yaml.safe_load(read_text(path)) or {}
    except RecursionError:      # PyYAML's composer recurses once per level of nesting
        raise AdeptError(f"{path}: invalid YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())   # PyYAML's text spans lines
        raise AdeptError(f"{path}{where}: invalid YAML: {problem}") from None
    if not isinstance(loaded, dict):
        raise AdeptError(f"{path}: a {what} is a mapping of key: value")
    return loaded
