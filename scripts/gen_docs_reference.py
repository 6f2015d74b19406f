"""The generated parts of the documentation site, and the MkDocs hook that fills them in.

* the config reference: every key of the schemas that ``kaelab.config.register_configs`` stores in
  Hydra's ConfigStore (nested dataclasses included), with its type and default read from the
  dataclass and its meaning read from the field's comment in the source (the ``#`` lines right
  above the field and the comment on its own lines, found with ``tokenize``);
* the Python API: one mkdocstrings block per name of ``kaelab.__all__`` (at the module that
  defines it, as ``kaelab._EXPORTS`` says: the package imports its names lazily, so a static
  reader would not find ``kaelab.KAE`` itself);
* the make targets, from the Makefile's ``## `` comments.

A page holds a marker (``<!-- kaelab:config-reference -->``, ``<!-- kaelab:api-reference -->``,
``<!-- kaelab:make-targets -->``) that ``on_page_markdown`` replaces at build time (mkdocs.yml:
``hooks``), so the site never shows a stale key. ``python scripts/gen_docs_reference.py
config|api|make`` prints one of them.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MARKERS = {
    "<!-- kaelab:config-reference -->": "config",
    "<!-- kaelab:api-reference -->": "api",
    "<!-- kaelab:make-targets -->": "make",
}
# comments that instruct a tool and say nothing about the key
# the meaning of every ``_target_`` key whose schema gives none
TARGET_NOTE = "the class hydra.utils.instantiate builds from this group (a dotted import path)"
TOOL_COMMENT = re.compile(r"^(type:\s*ignore(\[[^\]]*\])?|noqa(:[\w, ]+)?|fmt:\s*\w+)\s*")


@dataclass(frozen=True)
class Key:
    """One config key: its dotted name, type as written in the schema, default and meaning."""

    name: str
    type: str
    default: str
    description: str
    schema: str  # the dataclass that declares it


# ------------------------------------------------------------------------------ field comments
def _comments(source: str) -> dict[int, str]:
    """Line number (1-based, in ``source``) -> the text of the comment on that line."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string
    return out


def _clean(comment: str) -> str:
    """A comment's words, without ``#`` and tool directives (``type: ignore[...]``, ``fmt: skip``)."""
    parts = [p.strip() for p in comment.split("#")]
    kept = [TOOL_COMMENT.sub("", p).strip() for p in parts]
    return " ".join(p for p in kept if p)


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> its description: the comment lines right above the field (no blank line in
    between), then the comments on the field's own lines (a trailing one, or inside a value that
    spans several lines)."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines, comments = source.splitlines(), _comments(source)
    body = ast.parse(source).body[0]
    out = {}
    for node in body.body:  # type: ignore[attr-defined]
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, line = [], node.lineno - 1
        while line >= 1 and lines[line - 1].strip().startswith("#"):
            above.insert(0, _clean(comments[line]))
            line -= 1
        own = [_clean(comments[n]) for n in range(node.lineno, node.end_lineno + 1) if n in comments]
        out[node.target.id] = " ".join(t for t in [*above, *own] if t)
    return out


# ------------------------------------------------------------------------------ schema walking
def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return "???"


def _show(value: Any) -> str:
    if value == "???":
        return "??? (required)"
    if isinstance(value, str):
        return f'"{value}"'
    return "null" if value is None else repr(value).replace("True", "true").replace("False", "false")


def _type_name(annotation: Any) -> str:
    """An annotation as written (a string under ``from __future__ import annotations``)."""
    if isinstance(annotation, str):
        return annotation
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def schema_keys(cls: type, prefix: str, stored: dict[type, str]) -> list[Key]:
    """Every key of ``cls`` under ``prefix``, recursing into nested dataclasses that are not a
    schema of their own (``stored``: those get their own section, by anchor)."""
    hints = typing.get_type_hints(cls)
    notes, out = field_comments(cls), []
    for f in dataclasses.fields(cls):
        kind = hints.get(f.name)
        if dataclasses.is_dataclass(kind) and kind not in stored:
            out.extend(schema_keys(kind, f"{prefix}{f.name}.", stored))
            continue
        note = notes.get(f.name) or (TARGET_NOTE if f.name == "_target_" else "")
        default = f"see #{stored[kind]}" if kind in stored else _show(_default(f))
        out.append(Key(f"{prefix}{f.name}", _type_name(f.type), default, note, cls.__qualname__))
    return out


def stored_schemas() -> list[tuple[str, str, type]]:
    """(group, name, dataclass) of every kaelab schema in Hydra's ConfigStore after
    ``kaelab.config.register_configs``; group "" is the root config."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from kaelab.config import register_configs

    register_configs()
    found = []

    def walk(node: dict, group: str) -> None:
        for name, item in sorted(node.items()):
            if isinstance(item, dict):
                walk(item, f"{group}/{name}" if group else name)
                continue
            kind = OmegaConf.get_type(item.node)
            if dataclasses.is_dataclass(kind) and kind.__module__.startswith(("kaelab", "hydra_plugins.kaelab")):
                found.append((group, name.removesuffix(".yaml"), kind))

    walk(ConfigStore.instance().repo, "")
    return sorted(found, key=lambda t: (t[0] != "", t[0], t[1]))


def anchor(group: str, name: str) -> str:
    """The config reference's anchor of a stored schema (``data-mnist``, ``hydra-launcher-slots``)."""
    parts, base = (group.split("/") if group else ["root"]), name.removesuffix("_schema")
    if base not in (parts[-1], "config"):  # a group's one schema is named after the group
        parts.append(base)
    return "-".join(parts).replace("_", "-")


def config_keys() -> list[tuple[str, str, type, list[Key]]]:
    """(group, schema name, dataclass, its keys) for every stored schema."""
    schemas = stored_schemas()
    stored = {kind: anchor(group, name) for group, name, kind in schemas}
    out = []
    for group, name, kind in schemas:
        prefix = f"{group.replace('/', '.')}." if group else ""
        out.append((group, name, kind, schema_keys(kind, prefix, stored)))
    return out


# ------------------------------------------------------------------------------ markdown
def _cell(text: str) -> str:
    """Text for a table cell: pipes escaped; outside code spans, ``*``, ``_``, ``<`` and ``$`` too
    (``conf/kae/*.yaml`` is no emphasis, ``<output_root>`` no HTML tag, ``$HOME`` no maths)."""
    pieces = re.split(r"(``?[^`]+``?)", text.replace("\n", " "))
    for i in range(0, len(pieces), 2):
        pieces[i] = pieces[i].replace("*", "\\*").replace("_", "\\_").replace("<", "&lt;").replace("$", "\\$")
    return "".join(pieces).replace("|", "\\|")


def config_markdown() -> str:
    """The config reference: one section per schema, one table row per key."""
    parts = []
    for group, name, kind, keys in config_keys():
        title = f"`{group}` group" if group else "Root config"
        where = f"{kind.__module__}.{kind.__qualname__}"
        parts.append(f"## {title}: `{name}` {{#{anchor(group, name)}}}\n")
        parts.append(f"Schema: `{where}` (ConfigStore: `{group + '/' if group else ''}{name}`).\n")
        doc = inspect.getdoc(kind) or ""
        if doc and not doc.startswith(f"{kind.__name__}("):  # dataclasses' generated signature docstring
            parts.append(doc + "\n")
        parts.append("| key | type | default | meaning |\n|---|---|---|---|")
        for k in keys:
            default = f"[{k.default[5:]}](#{k.default[5:]})" if k.default.startswith("see #") else f"`{k.default}`"
            parts.append(f"| `{k.name}` | `{k.type}` | {default} | {_cell(k.description)} |")
        parts.append("")
    return "\n".join(parts)


def api_markdown() -> str:
    """One mkdocstrings block per public name, in the order of ``kaelab.__all__``."""
    import kaelab

    blocks = []
    for name in kaelab.__all__:
        module = kaelab._EXPORTS[name]
        blocks.append(
            f"## `kaelab.{name}` {{#{name}}}\n\n"
            f"`import kaelab as kl; kl.{name}` (defined in `{module}`)\n\n"
            f"::: {module}.{name}\n    options:\n      show_root_heading: false\n      heading_level: 3\n"
        )
    return "\n".join(blocks)


def make_markdown() -> str:
    """The Makefile's documented targets (``target: deps  ## help``) as a table."""
    rows = ["| target | what it does |", "|---|---|"]
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"^([a-z-]+):.*?## (.*)$", line)
        if match:
            rows.append(f"| `make {match.group(1)}` | {_cell(match.group(2))} |")
    return "\n".join(rows) + "\n"


GENERATORS = {"config": config_markdown, "api": api_markdown, "make": make_markdown}


def on_pre_build(config: Any, **_: Any) -> None:
    """MkDocs hook: generate the site's figures (scripts/docs_figures.py) when one is missing."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import docs_figures

    img = Path(config["docs_dir"]) / "img"
    if not all((img / name).is_file() for name in docs_figures.FIGURES):
        docs_figures.make_figures(img)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs hook: replace each marker on a page by its generated markdown."""
    for marker, what in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, GENERATORS[what]())
    return markdown


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    which = sys.argv[1] if len(sys.argv) > 1 else "config"
    if which not in GENERATORS:
        sys.exit(f"usage: python scripts/gen_docs_reference.py {'|'.join(GENERATORS)}")
    print(GENERATORS[which]())
