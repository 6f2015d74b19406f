"""Mutation testing against the catalogue in tests/mutations/: does the suite catch wrong science?

Each catalogue entry (tests/mutations/<stage>.yaml) is a plausible wrong implementation: a file, an
exact search snippet that occurs once in it, its replacement, a one-line description of what is
wrong, and the test files (with an optional ``-k``) that must catch it. This script copies the repo
(``git ls-files`` plus untracked, non-ignored files) to a scratch directory, applies each mutation
alone, runs its tests there (``python -m pytest -q -x -n 0 -p no:cacheprovider FILES``), restores
the file, and reports caught / survived per entry and a score. It exits 1 unless every entry is
caught (and every baseline run, the same tests on the unmutated copy, passes).

The scratch copy runs with the project's venv: PYTHONPATH puts the copy first, a sitecustomize.py
drops the venv's editable finder (which would map ``kaelab`` back onto this checkout), and
``kaelab/conf`` is a symlink to the copy's ``conf/`` (what the editable install maps it to).

    python scripts/mutate.py                      # every entry
    python scripts/mutate.py --stage edit         # one stage (repeat the option for more)
    python scripts/mutate.py --id edit-stats-from-test-split
    python scripts/mutate.py --list               # the catalogue, no runs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CATALOGUE = REPO / "tests" / "mutations"
FIELDS = {"id", "file", "search", "replace", "why", "tests", "k"}
SITECUSTOMIZE = (
    "import sys\n"
    "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()\n"
    "                    and 'editable' not in getattr(type(f), '__module__', '').lower()]\n"
)


@dataclass
class Mutation:
    id: str
    stage: str
    file: str
    search: str
    replace: str
    why: str
    tests: list[str]
    k: str | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-n", "0", "-p", "no:cacheprovider", *self.tests]
        return cmd + (["-k", self.k] if self.k else [])


@dataclass
class Outcome:
    mutation: Mutation
    # caught | survived | timeout | error (not run: the snippet is not there once, or its tests fail unmutated)
    status: str
    seconds: float
    tail: str = ""
    extra: dict = field(default_factory=dict)


def load_catalogue(root: Path = CATALOGUE) -> list[Mutation]:
    """Every entry of every ``<stage>.yaml``, checked: known fields, unique ids, test files present."""
    out: list[Mutation] = []
    for path in sorted(root.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        stage = doc["stage"]
        for entry in doc["mutations"]:
            unknown = set(entry) - FIELDS
            if unknown:
                raise SystemExit(f"{path.name}: entry {entry.get('id')}: unknown fields {sorted(unknown)}")
            out.append(Mutation(stage=stage, **{k: entry.get(k) for k in FIELDS}))
    ids = [m.id for m in out]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise SystemExit(f"duplicate mutation ids: {sorted(dupes)}")
    for m in out:
        missing = [t for t in m.tests if not (REPO / t.split("::")[0]).is_file()]
        if missing:
            raise SystemExit(f"{m.id}: no test file {missing[0]}")
    return out


def check_applies(m: Mutation, root: Path = REPO) -> str | None:
    """Why ``m`` cannot be applied to the tree at ``root`` (None: its snippet occurs exactly once)."""
    path = root / m.file
    if not path.is_file():
        return f"no file {m.file}"
    n = path.read_text().count(m.search)
    return None if n == 1 else f"the search snippet occurs {n} times in {m.file}"


def repo_files() -> list[str]:
    """Tracked and untracked, non-ignored files of the checkout that exist."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    return sorted({f for f in out.split("\0") if f and (REPO / f).is_file() and not (REPO / f).is_symlink()})


def make_scratch(root: Path) -> Path:
    """A copy of the checkout under ``root`` that imports as kaelab from the copy, with the venv."""
    for rel in repo_files():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest)
    conf_link = root / "kaelab" / "conf"
    if not conf_link.exists():
        conf_link.symlink_to(Path("..") / "conf")
    site = root / ".mutate-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return root


def scratch_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root / ".mutate-site"), str(root), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a mutated module is never read from a stale .pyc
    env.setdefault("KAELAB_DATA_DIR", str(REPO.parent / "shared" / "data"))
    return env


def check_scratch(root: Path) -> None:
    """kaelab and kaelab.conf must both import from the copy, not from the checkout."""
    probe = "import kaelab, kaelab.conf; print(kaelab.__file__); print(list(kaelab.conf.__path__)[0])"
    res = subprocess.run([sys.executable, "-c", probe], cwd=root, env=scratch_env(root), capture_output=True, text=True)
    lines = res.stdout.split()
    if (
        res.returncode != 0
        or len(lines) != 2
        or not all(Path(p).resolve().is_relative_to(root.resolve()) for p in lines)
    ):
        raise SystemExit(f"the scratch copy does not import from {root}: {res.stdout} {res.stderr[-1000:]}")


def run_tests(m: Mutation, root: Path, timeout: float) -> tuple[str, float, str]:
    """(passed | failed | timeout, seconds, the output's tail) of ``m``'s tests in ``root``."""
    t0 = time.perf_counter()
    try:
        res = subprocess.run(
            m.command(), cwd=root, env=scratch_env(root), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t0, ""
    tail = (res.stdout + res.stderr)[-1500:]
    return ("passed" if res.returncode == 0 else "failed"), time.perf_counter() - t0, tail


def mutate_one(m: Mutation, root: Path, timeout: float) -> Outcome:
    """Apply ``m`` in ``root``, run its tests, restore the file."""
    problem = check_applies(m, root)
    if problem:
        return Outcome(m, "error", 0.0, problem)
    path = root / m.file
    original = path.read_text()
    path.write_text(original.replace(m.search, m.replace))
    try:
        result, seconds, tail = run_tests(m, root, timeout)
    finally:
        path.write_text(original)
    status = {"passed": "survived", "failed": "caught", "timeout": "timeout"}[result]
    return Outcome(m, status, seconds, tail if status == "survived" else "")


def baselines(muts: list[Mutation], root: Path, timeout: float) -> dict[tuple[str, ...], str]:
    """Each distinct test command on the unmutated copy; returns the failing ones with their output
    (an entry whose tests fail unmutated is not run: "caught" would mean nothing)."""
    bad, seen = {}, set()
    for m in muts:
        cmd = tuple(m.command())
        if cmd in seen:
            continue
        seen.add(cmd)
        result, seconds, tail = run_tests(m, root, timeout)
        print(f"baseline {result:8s} {seconds:6.1f}s  {' '.join(cmd[3:])}", flush=True)
        if result != "passed":
            bad[cmd] = f"the unmutated tests do not pass ({result}):\n{tail}"
    return bad


def select(muts: list[Mutation], stages: list[str] | None, ids: list[str] | None) -> list[Mutation]:
    known = {m.stage for m in muts}
    for s in stages or []:
        if s not in known:
            raise SystemExit(f"--stage {s}: no such stage (have: {', '.join(sorted(known))})")
    chosen = [m for m in muts if (not stages or m.stage in stages) and (not ids or m.id in ids)]
    if ids and len(chosen) != len(set(ids)):
        raise SystemExit(f"--id: unknown ids {sorted(set(ids) - {m.id for m in chosen})}")
    return chosen


def report(outcomes: list[Outcome], wall: float, out: Path) -> int:
    """One line per entry, per-stage counts and the score; the JSON report; the exit code."""
    stages: dict[str, list[int]] = {}
    for o in outcomes:
        caught = o.status in ("caught", "timeout")
        stages.setdefault(o.mutation.stage, [0, 0])[0 if caught else 1] += 1
    print("\nstage            caught survived")
    for s, (c, v) in sorted(stages.items()):
        print(f"{s:16s} {c:6d} {v:8d}")
    n_caught = sum(c for c, _ in stages.values())
    print(f"\nscore: {n_caught}/{len(outcomes)} caught in {wall / 60:.1f} min")
    for o in outcomes:
        if o.status in ("survived", "error"):
            print(f"\n{o.status.upper()}: {o.mutation.id} ({o.mutation.file}): {o.mutation.why}\n{o.tail}")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"id": o.mutation.id, "stage": o.mutation.stage, "status": o.status, "seconds": round(o.seconds, 1)}
            for o in outcomes]  # fmt: skip
    out.write_text(
        json.dumps({"score": [n_caught, len(outcomes)], "wall_s": round(wall, 1), "entries": rows}, indent=1)
    )
    print(f"report: {out}")
    return 0 if n_caught == len(outcomes) else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", action="append", help="only this stage (repeatable)")
    p.add_argument("--id", action="append", help="only this entry (repeatable)")
    p.add_argument("--list", action="store_true", help="list the catalogue and check every snippet applies")
    p.add_argument("--no-baseline", action="store_true", help="skip running the tests on the unmutated copy")
    p.add_argument("--timeout", type=float, default=900, help="seconds per test run (a timeout counts as caught)")
    p.add_argument("--keep", action="store_true", help="keep the scratch copy")
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "mutate" / "report.json")
    return p.parse_args(argv)


def list_catalogue(muts: list[Mutation]) -> int:
    bad = 0
    for m in muts:
        problem = check_applies(m)
        bad += problem is not None
        print(f"{m.stage:12s} {m.id:48s} {'OK' if problem is None else problem}  {m.why}")
    counts = {s: sum(m.stage == s for m in muts) for s in dict.fromkeys(m.stage for m in muts)}
    print(f"{len(muts)} entries: " + ", ".join(f"{s} {n}" for s, n in counts.items()))
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    muts = select(load_catalogue(), args.stage, args.id)
    if args.list:
        return list_catalogue(muts)
    t0 = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="kaelab-mutate-"))
    try:
        make_scratch(root)
        check_scratch(root)
        print(f"scratch copy: {root}; {len(muts)} mutations", flush=True)
        broken = {} if args.no_baseline else baselines(muts, root, args.timeout)
        outcomes = []
        for i, m in enumerate(muts, 1):
            cmd = tuple(m.command())
            o = Outcome(m, "error", 0.0, broken[cmd]) if cmd in broken else mutate_one(m, root, args.timeout)
            print(f"[{i}/{len(muts)}] {o.status:8s} {o.seconds:6.1f}s  {m.stage}: {m.id}", flush=True)
            outcomes.append(o)
        return report(outcomes, time.perf_counter() - t0, args.out)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
