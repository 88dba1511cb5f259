"""Keys that moved when each config group got to own its keys: the old name says where it lives now."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable

from ftlab.config.registry import registered
from ftlab.errors import FtlabError

# old key -> new key
MOVED: dict[str, str] = {
    "trainer.compile": "runtime.compile",
    "trainer.channels_last": "runtime.channels_last",
    "finetune.backbone_lr_mult": "param_groups.backbone_lr_mult",
    "finetune.lr_decay": "param_groups.lr_decay",
    "finetune.no_decay_norm_bias": "param_groups.no_decay_norm_bias",
}
# Groups whose other keys moved one level down: scheduler.<argument> -> scheduler.factory.<argument>.
MOVED_INTO: dict[str, str] = {"scheduler": "factory"}
WHY = {
    "trainer": "`trainer` holds only Lightning Trainer arguments; ftlab's own options live in `runtime`",
    "finetune": "the LR policy is the same for every strategy and lives in `param_groups`",
    "scheduler": "the torch scheduler's own arguments live in `scheduler.factory`, beside "
    "`scheduler.interval` and `scheduler.monitor`",
}


def moved_key(key: str) -> str | None:
    """The new name of an old config key such as `trainer.compile`, or None when `key` did not move."""
    if key in MOVED:
        return MOVED[key]
    group, _, rest = key.partition(".")
    if group in MOVED_INTO and rest:
        fields = [f.name for cls in registered(group).values() for f in dataclasses.fields(cls)]
        name = rest.split(".")[0]
        if name not in fields and not difflib.get_close_matches(name, fields, cutoff=0.75):  # not a typo
            return f"{group}.{MOVED_INTO[group]}.{rest}"
    return None


def moved_error(key: str, new: str) -> FtlabError:
    """One paragraph saying that `key` moved to `new`."""
    why = WHY[key.split(".")[0]]
    return FtlabError(f"{key} has moved to {new} ({why}). Write {new}=<value> instead of {key}=<value>.")


def check_moved(keys: Iterable[str]) -> None:
    """Raise the "moved to" error for the first old key among `keys` (full dotted names)."""
    for key in keys:
        new = moved_key(key)
        if new is not None:
            raise moved_error(key, new)
