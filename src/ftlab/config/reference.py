"""The configuration reference as Markdown: one table per typed config group, fine-tune strategy and data
source (key, type, default, description), rendered from the dataclasses so that it follows the code.

Descriptions come from the trailing `# comment` of the key in the group's YAML files under `conf/`, else
from the trailing comment of the dataclass field."""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import tokenize
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from ftlab.config.location import config_dir
from ftlab.config.schemas import FINETUNE_SCHEMAS, SCHEMAS

# Groups whose keys sit in conf/train.yaml rather than in a group folder.
_IN_TRAIN_YAML = ("param_groups", "runtime")
# Fine-tune strategy -> its file in conf/finetune/ where the names differ.
_STRATEGY_FILE = {"top_k": "last_stages"}
_KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w-]*):(?P<rest>.*)$")


def _yaml_keys(path: Path) -> dict[str, tuple[str, str]]:
    """Dotted key -> (value as written, trailing comment or ""), for every key of a YAML file."""
    keys: dict[str, tuple[str, str]] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    for line in path.read_text().splitlines():
        match = _KEY_LINE.match(line)
        if match is None:
            continue
        indent, key = len(match["indent"]), match["key"]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([k for _, k in stack] + [key])
        stack.append((indent, key))
        value, sep, comment = match["rest"].partition(" #")
        if value.count("'") % 2 or value.count('"') % 2:  # the "#" is inside a quoted value
            value, comment = match["rest"], ""
        keys.setdefault(dotted, (value.strip(), comment.strip()))
    return keys


def _yaml_comments(path: Path) -> dict[str, str]:
    """Dotted key -> the trailing comment on its line, for the keys of a YAML file that have one."""
    return {key: comment for key, (_, comment) in _yaml_keys(path).items() if comment}


def _field_comments(cls: type) -> dict[str, str]:
    """Field name -> the trailing comment on its line in the dataclass source."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    name, depth = None, 0
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NEWLINE:
            name = None
        elif tok.type == tokenize.INDENT:
            depth += 1
        elif tok.type == tokenize.DEDENT:
            depth -= 1
        elif tok.type == tokenize.NAME and name is None and depth == 1 and tok.start[1] > 0:
            name = tok.string
        elif tok.type == tokenize.COMMENT and name is not None:
            comments.setdefault(name, tok.string.lstrip("#").strip())
    return comments


def _descriptions(group: str, preferred: str | None = None) -> dict[str, str]:
    """Key -> description for the keys of `group`, from conf/ (the `preferred` file first)."""
    conf = config_dir()
    found: dict[str, str] = {}
    if group in _IN_TRAIN_YAML:
        prefix = f"{group}."
        for key, text in _yaml_comments(conf / "train.yaml").items():
            if key.startswith(prefix):
                found.setdefault(key[len(prefix) :], text)
        return found
    files = sorted((conf / group).glob("*.yaml"))
    if preferred is not None:
        files.sort(key=lambda p: p.stem != preferred)
    for path in files:
        for key, text in _yaml_comments(path).items():
            found.setdefault(key, text)
    return found


def _default(field: dataclasses.Field[Any], configured: str | None = None) -> str:
    """The field's default; a field without one shows `configured` (its value in conf/) or "required"."""
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        value = MISSING
    if value is MISSING:
        return f"`{configured}`" if configured not in (None, "", "???") else "required"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return f"`[{', '.join(map(str, value))}]`"
    return f"`{value}`"


def _cell(text: str) -> str:
    """`text` as literal Markdown table-cell content."""
    for char, escaped in (("\\", "\\\\"), ("|", "\\|"), ("*", "\\*"), ("_", "\\_"), ("<", "&lt;")):
        text = text.replace(char, escaped)
    return text


def _table(
    prefix: str,
    cls: type,
    described: dict[str, str],
    own_only: bool = False,
    configured: dict[str, str] | None = None,
) -> str:
    """A Markdown table of the dataclass's init fields (only those not inherited with `own_only`);
    `configured`: values set in conf/ for fields that have no default in the code."""
    inherited: set[str] = set()
    if own_only:
        for base in cls.__mro__[1:]:
            if dataclasses.is_dataclass(base):
                inherited |= {f.name for f in dataclasses.fields(base)}
    field_comments = _field_comments(cls)
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for field in dataclasses.fields(cls):
        if not field.init or field.name in inherited:
            continue
        text = described.get(field.name) or field_comments.get(field.name, "")
        kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
        default = _default(field, (configured or {}).get(field.name))
        rows.append(f"| `{prefix}{field.name}` | `{kind}` | {default} | {_cell(text)} |")
    return "\n".join(rows)


def _summary(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.split("\n\n")[0].replace("\n", " ")


def markdown(sources: Mapping[str, type] | None = None) -> str:
    """The reference: ftlab's config groups, the fine-tune strategies' own keys and, given `sources` (the data
    sources by name, `ftlab.data.sources.registry.SOURCES`: config sits below data, so the caller passes
    them), each data source's keys."""
    parts = ["## Config groups"]
    for group, cls in SCHEMAS.items():
        parts += [f"### `{group}`", _summary(cls), _table(f"{group}.", cls, _descriptions(group))]
    parts.append("## Fine-tune strategies\n\nEach strategy's keys beside the common `finetune` keys above.")
    for strategy, cls in FINETUNE_SCHEMAS.items():
        described = _descriptions("finetune", preferred=_STRATEGY_FILE.get(strategy, strategy))
        parts += [f"### `finetune.strategy={strategy}`", _summary(cls)]
        own = _table("finetune.", cls, described, own_only=True)
        parts.append(own if own.count("\n") > 1 else "No keys of its own.")
    if not sources:
        return "\n\n".join(parts) + "\n"
    parts.append(
        "## Data sources\n\nEach source's own keys (`data=<name>`); the loader options such as "
        "`data.batch_size` are in the source's file in `conf/data/`. `data.seed`, when not set, is the "
        "run's `seed`."
    )
    for name, cls in sources.items():
        keys = _yaml_keys(config_dir() / "data" / f"{name}.yaml")
        described = {key: comment for key, (_, comment) in keys.items()}
        configured = {key: value for key, (value, _) in keys.items()}
        parts += [f"### `data={name}`", _summary(cls), _table("data.", cls, described, configured=configured)]
    return "\n\n".join(parts) + "\n"
