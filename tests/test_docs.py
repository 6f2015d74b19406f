"""The documentation site: the strict build, and the config reference generated from the schemas."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_docs_reference", ROOT / "scripts" / "gen_docs_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module while the class is built
    spec.loader.exec_module(module)
    return module


gen = _generator()


# fmt: off
@dataclass
class _Sample:
    a: int = 1  # trailing
    # above one
    # above two
    b: int = 2
    c: int | None = (
        3  # inside a value
    )
    d: str = "# a string, not a comment"
    e: int = "${seed}"  # type: ignore[assignment]  # after a directive
    f: int = 0  # fmt: skip
# fmt: on


def test_field_comments_reads_each_comment_style():
    """Catches a parser that lets a trailing comment leak into the next field's description, takes a
    '#' inside a string for a comment, misses a comment inside a multi-line value, or keeps tool
    directives (``type: ignore``) as the meaning."""
    assert gen.field_comments(_Sample) == {
        "a": "trailing",
        "b": "above one above two",
        "c": "inside a value",
        "d": "",
        "e": "after a directive",
        "f": "",
    }


def _leaves(node: DictConfig, prefix: str, stored: set[type]) -> set[str]:
    """The leaf keys of a structured config, by OmegaConf (not by the generator's own walk)."""
    out = set()
    for key in node.keys():
        child = node._get_node(key)
        kind = OmegaConf.get_type(child) if isinstance(child, DictConfig) else None
        if isinstance(child, DictConfig) and kind is not None and kind not in stored and kind is not dict:
            out |= _leaves(child, f"{prefix}{key}.", stored)
        else:
            out.add(f"{prefix}{key}")
    return out


def test_every_config_key_is_in_the_reference_with_a_description():
    """Every key of every schema registered by ``kaelab.config.register_configs`` (nested ones
    included) has a type, a default and a description in the generated reference. Fails when a
    schema field has no comment (write one next to the field), or when the generator skips a
    nested dataclass or a registered schema."""
    sections = gen.config_keys()
    stored = {kind for _, _, kind, _ in sections}
    groups = {group for group, _, _, _ in sections}
    assert {"", "data", "model", "trainer", "paths", "kae", "dmd", "edit", "topology", "hydra/launcher"} <= groups
    for group, _, kind, keys in sections:
        prefix = f"{group.replace('/', '.')}." if group else ""
        assert {k.name for k in keys} == _leaves(OmegaConf.structured(kind), prefix, stored), kind
        missing = [k.name for k in keys if not k.description.strip()]
        assert not missing, f"{kind.__module__}.{kind.__qualname__}: no description for {missing}"
        assert all(k.type and k.default for k in keys)
    names = {k.name for *_, keys in sections for k in keys}
    assert {"kae.lambdas.iso", "kae.path.rows", "dmd.scaling.linear_h", "model.optim.lr"} <= names


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_the_site_builds_strictly_with_every_key_and_every_api_name(tmp_path):
    """``make docs``'s build: no broken link, anchor, nav entry or API reference (strict mode makes
    each a failure), the generated pages filled in. Fails when a page links to a missing page or
    anchor, when a name of ``kaelab.__all__`` cannot be rendered, or when a marker is left unfilled."""
    import kaelab

    result = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    figures = (ROOT / "scripts" / "docs_figures.py").read_text()
    names = re.findall(r'"(\w+\.png)"', figures[figures.index("FIGURES = ") :])
    assert names and all((tmp_path / "site" / "img" / n).stat().st_size > 10_000 for n in names), names
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    for name in kaelab.__all__:
        assert f'id="{name}"' in api, name
    config = (tmp_path / "site" / "reference" / "config" / "index.html").read_text()
    for *_, keys in gen.config_keys():
        for key in keys:
            assert f"<code>{key.name}</code>" in config, key.name
    for page in (tmp_path / "site").rglob("*.html"):
        assert "<!-- kaelab:" not in page.read_text(), page


@pytest.mark.parametrize("link", ["missing.md", "index.md#no-such-anchor"])
def test_a_broken_link_fails_the_build(tmp_path, link):
    """The strictness is real: a link to a missing page or anchor fails the build. Catches a
    mkdocs.yml that drops ``strict`` or the link ``validation`` settings."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(f"# Page\n\n[a link]({link})\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"INHERIT: {ROOT / 'mkdocs.yml'}\ndocs_dir: {docs}\nhooks: []\nnav:\n  - index.md\n")
    result = _build(config, tmp_path / "site")
    assert result.returncode != 0
    assert link.split("#")[0] in result.stderr or "no-such-anchor" in result.stderr
