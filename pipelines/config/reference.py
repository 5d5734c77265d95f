"""The configuration reference (docs/config-reference.md), generated from the schema: every key with
the schema's default, the quick preset's value (or that `auto` derives it) and its meaning."""
from __future__ import annotations

import json

from . import Config, describe, load_config
from .auto import AUTO_KEYS

HEADER = """# Configuration reference

Every key of a ganpipe config, generated from the schema by `ganpipe config --markdown` (a test keeps
this file current). *quick* is the built-in preset's value where it differs from the schema's;
*auto* marks a key the preset's `auto: true` derives from the data and the device when neither the
config nor `--set` gives it (the rule: [configuration.md](configuration.md#derived-defaults)).
"""


def _shown(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return f"`{text}`" if text != "" else '`""`'


def markdown() -> str:
    schema = {k: v for k, v, _ in describe(Config())}
    quick = {k: v for k, v, _ in describe(load_config("quick"))}
    out, section = [HEADER], None
    for key, value, meaning in describe(Config()):
        top = key.split(".")[0] if "." in key else "(top level)"
        if top != section:
            section = top
            out += [f"\n## {section}\n", "| key | default | quick | meaning |", "|---|---|---|---|"]
        q = "auto" if key in AUTO_KEYS else (_shown(quick[key]) if quick[key] != schema[key] else "")
        out.append(f"| `{key}` | {_shown(value)} | {q} | {meaning.replace('|', '/')} |")
    return "\n".join(out) + "\n"
