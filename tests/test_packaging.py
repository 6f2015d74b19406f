"""The package ships every subpackage and its configs (found after a non-editable install too)."""

from importlib.resources import files

import tomllib

from conftest import REPO


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    inits = [*(REPO / "kaelab").rglob("__init__.py"), *(REPO / "hydra_plugins").rglob("__init__.py")]
    found = {".".join(p.parent.relative_to(REPO).parts) for p in inits}
    groups = {
        ".".join(("kaelab", "conf", *p.relative_to(REPO / "conf").parts))
        for p in (REPO / "conf").rglob("*")
        if p.is_dir() and p.name != "__pycache__"
    }
    assert found | {"kaelab.conf"} | groups == listed


def test_configs_are_package_data():
    conf = files("kaelab.conf")
    assert conf.joinpath("config.yaml").is_file()
    assert conf.joinpath("experiment").joinpath("mnist_kae.yaml").is_file()
