"""The artifact cache: built once under concurrency, never trusted half-written."""

import multiprocessing as mp
import time

import pytest

from kaelab.cache import ArtifactCache, config_key


def _slow_build(root, counter_file):
    def build(tmp):
        with open(counter_file, "a") as f:
            f.write("built\n")
        time.sleep(0.5)
        (tmp / "value.txt").write_text("42")

    return ArtifactCache(root).get_or_build("stage", "k1", build)


def test_concurrent_jobs_build_once(tmp_path):
    counter = tmp_path / "count.txt"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_slow_build, args=(tmp_path / "cache", counter)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert counter.read_text().count("built") == 1
    assert (tmp_path / "cache" / "stage" / "k1" / "value.txt").read_text() == "42"


def test_failed_build_leaves_nothing_behind(tmp_path):
    cache = ArtifactCache(tmp_path)

    def broken(tmp):
        (tmp / "half.txt").write_text("partial")
        raise KeyboardInterrupt  # as a killed job

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_build("stage", "k2", broken)
    assert not cache.exists("stage", "k2")
    assert [p.name for p in (tmp_path / "stage").iterdir() if not p.name.endswith(".lock")] == []
    calls = []
    path = cache.get_or_build("stage", "k2", lambda tmp: calls.append((tmp / "ok").write_text("1")))
    assert calls and (path / "ok").is_file()


def test_config_key_is_stable_and_order_free():
    assert config_key({"a": 1, "b": [1, 2]}) == config_key({"b": [1, 2], "a": 1})
    assert config_key({"a": 1}) != config_key({"a": 2})


def test_the_key_schema_is_part_of_every_key(monkeypatch):
    """Catches a ``config_key`` that does not hash ``KEY_SCHEMA``: raising it would then not make
    entries written under the previous scheme be rebuilt."""
    import kaelab.cache

    before = config_key("base_model", {"a": 1})
    monkeypatch.setattr(kaelab.cache, "KEY_SCHEMA", kaelab.cache.KEY_SCHEMA + 1)
    assert config_key("base_model", {"a": 1}) != before
