"""Test, lint, build and benchmark sessions for the slim monorepo.

`nox` runs the default set (lint, versions, each package's tests in its own
environment, integration, isolation). `nox -s demo` runs the demo and
`nox -s bench` the benchmarks. See docs/development.md.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nox
import tomllib

ROOT = Path(__file__).parent
PACKAGES_DIR = ROOT / "packages"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "versions", "tests", "integration", "isolation"]
nox.options.reuse_existing_virtualenvs = True

PADDLE = ["paddlepaddle>=3.0,<4", "setuptools"]
TEST_TOOLS = ["pytest>=7"]
INTEGRATION_TOOLS = ["hypothesis>=6.100"]  # generated configs in tests-integration/test_robustness.py


def _read(name: str) -> dict:
    return tomllib.loads((PACKAGES_DIR / name / "pyproject.toml").read_text())


def _packages() -> dict[str, dict]:
    """All packages: name -> {"deps": [sibling names], "extras": [...], "module": import name}."""
    out = {}
    for pyproject in sorted(PACKAGES_DIR.glob("*/pyproject.toml")):
        data = tomllib.loads(pyproject.read_text())
        project = data["project"]
        deps = [re.split(r"[\[=<>!~ ;]", d, maxsplit=1)[0] for d in project.get("dependencies", [])]
        module = pyproject.parent.name.replace("-", "_")
        out[project["name"]] = {
            "dir": pyproject.parent,
            "siblings": [d for d in deps if d.startswith("slim-")],
            "extras": list(project.get("optional-dependencies", {})),
            "module": module if (pyproject.parent / "src" / module).is_dir() else None,
        }
    return out


PACKAGES = _packages()
LIBRARIES = [n for n, p in PACKAGES.items() if p["module"]]  # all but the meta-package


def _closure(name: str) -> list[str]:
    seen: list[str] = []
    stack = [name]
    while stack:
        cur = stack.pop()
        if cur in seen:
            continue
        seen.append(cur)
        stack.extend(PACKAGES[cur]["siblings"])
    return seen


def _editable(names: list[str]) -> list[str]:
    args = []
    for n in names:
        path = str(PACKAGES[n]["dir"])
        args += ["-e", f"{path}[test]" if "test" in PACKAGES[n]["extras"] else path]
    return args


GUARD = r"""
import json, sys
from importlib.metadata import distributions
allowed = set(sys.argv[1].split(","))
root = sys.argv[2]
found = {}
for d in distributions():
    name = (d.metadata["Name"] or "").lower().replace("_", "-")
    if name.startswith("slim-"):
        found[name] = d
bad = []
for name, d in found.items():
    if name not in allowed:
        bad.append(f"{name}: installed but not a declared sibling of the package under test")
        continue
    raw = d.read_text("direct_url.json")
    url = json.loads(raw).get("url", "") if raw else ""
    if not url.startswith("file://") or root not in url:
        bad.append(f"{name}: came from an index ({url or 'no direct_url'}), not from this tree")
missing = allowed - set(found)
bad += [f"{m}: declared but not installed" for m in sorted(missing)]
if bad:
    sys.exit("sibling guard failed:\n  " + "\n  ".join(bad))
print("sibling guard: ok:", ", ".join(sorted(found)))
"""


def _install_tree(session: nox.Session, names: list[str]) -> None:
    session.install(*PADDLE, *TEST_TOOLS)
    session.install(*_editable(names))
    _run_script(session, "python", "sibling_guard.py", GUARD, ",".join(sorted(names)), str(ROOT))


def _run_script(session: nox.Session, python: str, name: str, source: str, *args: str) -> None:
    """Run a check script from a file, so the log shows its name rather than its source."""
    script = Path(session.create_tmp()) / name
    script.write_text(source)
    session.run(python, str(script), *args, external=True)


@nox.session
@nox.parametrize("package", LIBRARIES, ids=LIBRARIES)
def tests(session: nox.Session, package: str) -> None:
    """One package's tests, with only that package and its declared siblings installed."""
    names = _closure(package)
    _install_tree(session, names)
    tests_dir = PACKAGES[package]["dir"] / "tests"
    session.run("python", "-m", "pytest", str(tests_dir), "-q", "-p", "no:cacheprovider", *session.posargs, env={"SLIM_QUIET": "1"})


@nox.session
def integration(session: nox.Session) -> None:
    """All packages together: tests-integration/."""
    _install_tree(session, list(PACKAGES))  # every library and the meta-package
    session.install(*INTEGRATION_TOOLS)
    session.run(
        "python", "-m", "pytest", str(ROOT / "tests-integration"), "-q", "-p", "no:cacheprovider", *session.posargs, env={"SLIM_QUIET": "1"}
    )


ISOLATION_CHECK = r"""
import importlib, pkgutil, sys
mod = sys.argv[1]
pkg = importlib.import_module(mod)
names = [mod] + [m.name for m in pkgutil.walk_packages(pkg.__path__, mod + ".") if not m.name.split(".")[-1].startswith("__main")]
for n in names:
    importlib.import_module(n)
print(f"{mod}: imported {len(names)} modules")
"""


def _build_wheels(session: nox.Session, dist: Path) -> None:
    """A wheel of every package (the meta-package included) into ``dist``, emptied first."""
    if dist.exists():
        for f in dist.iterdir():
            if f.suffix == ".whl":
                f.unlink()
    for info in PACKAGES.values():
        session.run("uv", "build", "--wheel", "--out-dir", str(dist), str(info["dir"]), silent=True, external=True)


@nox.session
def wheels(session: nox.Session) -> None:
    """Wheels of every package in dist/: `pip install --find-links dist slim-prune` then installs one piece
    from this tree (its siblings come from dist/, not from an index)."""
    session.install("uv")
    _build_wheels(session, ROOT / "dist")
    session.log(f"{len(list((ROOT / 'dist').glob('*.whl')))} wheels in {ROOT / 'dist'}")


def _readme_tree_installs() -> list[str]:
    """The README's commands that install from this tree (Installing section, `pip install` lines naming
    `packages/` or `dist`): the isolation session runs each exactly as written."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Installing", 1)[1].split("\n## ", 1)[0]
    lines = []
    for raw in section.splitlines():
        cmd = raw.split("#", 1)[0].strip()
        if "pip install" in cmd and ("packages/" in cmd or "--find-links dist" in cmd):
            lines.append(cmd)
    if not lines:
        raise RuntimeError("README.md's Installing section has no install-from-the-tree line")
    return lines


def _venv(session: nox.Session, env: Path, *, seed: bool = False) -> str:
    args = ["uv", "venv", "--quiet", "--clear", *(["--seed"] if seed else [])]
    session.run(*args, "--python", session.virtualenv.location + "/bin/python", str(env), external=True)
    return str(env / "bin" / "python")


@nox.session
def isolation(session: nox.Session) -> None:
    """Build every wheel; install each alone (with its declared siblings, not editable) and import all its modules;
    run the README's install-from-the-tree commands with plain pip in fresh environments."""
    session.install("build", "uv")
    dist = Path(session.create_tmp()) / "dist"
    _build_wheels(session, dist)
    for cmd in _readme_tree_installs():
        # exactly the README's line, with pip of a fresh environment (Paddle preinstalled as the README says first)
        env = Path(session.create_tmp()) / "readme-install"
        py = _venv(session, env, seed=True)
        session.run("uv", "pip", "install", "--quiet", "--python", py, *PADDLE, external=True)
        cmd = cmd.split("&&")[-1].strip()  # `nox -s wheels && pip install ...`: the wheels are built above
        args = cmd.split()[2:]  # after "pip install"
        args = [str(dist) if a == "dist" else str(ROOT / a) if a.startswith("packages/") else a for a in args]
        session.run(py, "-m", "pip", "install", "--quiet", *args, external=True)
        names = [a.rsplit("/", 1)[-1] for a in args if a.startswith(str(ROOT / "packages"))] or [args[-1]]
        closure = sorted({n for name in names for n in _closure(name.strip('"'))})
        editable = any(a == "-e" for a in args)
        guard = GUARD if editable else GUARD.replace('not url.startswith("file://") or root not in url', "False")
        _run_script(session, py, "sibling_guard.py", guard, ",".join(closure), str(ROOT))
        for name in closure:
            if PACKAGES[name]["module"]:
                _run_script(session, py, "import_check.py", ISOLATION_CHECK, PACKAGES[name]["module"])
    for name, info in PACKAGES.items():
        env = Path(session.create_tmp()) / f"iso-{name}"
        py = _venv(session, env)
        session.run("uv", "pip", "install", "--quiet", "--python", py, *PADDLE, "numpy", "pyyaml", "tqdm", external=True)
        # slim packages only from the freshly built wheels, never from an index; --no-cache because
        # uv would otherwise reuse an older wheel of the same version built at the same path
        session.run(
            "uv", "pip", "install", "--quiet", "--python", py, "--no-index", "--no-cache", "--find-links", str(dist), name, external=True
        )
        wheel_guard = GUARD.replace('not url.startswith("file://") or root not in url', "False")  # wheels: presence only
        _run_script(session, py, "sibling_guard.py", wheel_guard, ",".join(_closure(name)), str(ROOT))
        for dep in [name] if info["module"] else info["siblings"]:
            mod = PACKAGES[dep]["module"]
            _run_script(session, py, "import_check.py", ISOLATION_CHECK, mod)


def _postgres_bindir(session: nox.Session) -> Path:
    """The bin directory of the Debian PostgreSQL server; installs the package when it is missing (needs root)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        if os.geteuid() != 0:
            session.error("PostgreSQL is not installed: run `sudo apt-get install -y postgresql` (or run this session as root)")
        session.run("apt-get", "install", "-y", "-q", "postgresql", external=True, env={"DEBIAN_FRONTEND": "noninteractive"})
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent


@nox.session
def nas_postgres(session: nox.Session) -> None:
    """slim-nas: four search workers on one study in a real PostgreSQL server, one killed mid-trial.

    Installs PostgreSQL from the Debian package when missing, starts a throw-away cluster on
    127.0.0.1 (as the `postgres` user when run as root) in a temporary directory, and runs
    packages/slim-nas/tests/test_search_workers.py with SLIM_NAS_PG_URL pointing at it. Not in the
    default sessions: it needs apt (root) and starts a database server. `nox -s nas_postgres --no-venv`
    runs it in the current environment (which then needs slim-nas, optuna and psycopg2-binary).
    """
    import pwd
    import shutil
    import socket
    import tempfile

    if not isinstance(session.virtualenv, nox.virtualenv.PassthroughEnv):
        _install_tree(session, _closure("slim-nas"))
        session.install("psycopg2-binary")
    bindir = _postgres_bindir(session)
    run_as: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="slim-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root
        pg = pwd.getpwnam("postgres")
        os.chown(tmp, pg.pw_uid, pg.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    data, log = tmp / "data", tmp / "server.log"
    pg_ctl = str(bindir / "pg_ctl")
    session.run(*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", external=True, silent=True)
    session.run(*run_as, pg_ctl, "-D", str(data), "-l", str(log), "-w", "-o", f"-h 127.0.0.1 -p {port} -k {tmp}", "start", external=True)
    try:
        session.run(*run_as, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", port, "-U", "postgres", "slim_nas", external=True)
        url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/slim_nas"
        tests = PACKAGES["slim-nas"]["dir"] / "tests" / "test_search_workers.py"
        session.run(
            "python",
            "-m",
            "pytest",
            str(tests),
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "postgresql",
            *session.posargs,
            env={"SLIM_NAS_PG_URL": url, "SLIM_QUIET": "1"},
        )
    finally:
        session.run(*run_as, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop", external=True)
        shutil.rmtree(tmp, ignore_errors=True)


@nox.session(venv_backend="none")
def versions(session: nox.Session) -> None:
    """Fail when package versions or sibling pins drift apart."""
    problems = []
    versions_found = {}
    for name, info in PACKAGES.items():
        data = _read(info["dir"].name)
        project = data["project"]
        if "version" in project:
            versions_found[name] = project["version"]
        else:
            about = info["dir"] / "src" / info["module"] / "__about__.py"
            m = re.search(r'__version__\s*=\s*"([^"]+)"', about.read_text())
            versions_found[name] = m.group(1) if m else "?"
    reference = versions_found.get("slim-core")
    for name, ver in versions_found.items():
        if ver != reference:
            problems.append(f"{name} is at {ver}, slim-core at {reference}")
    for name, info in PACKAGES.items():
        for dep in _read(info["dir"].name)["project"].get("dependencies", []):
            if dep.startswith("slim-"):
                m = re.fullmatch(r"(slim-[a-z]+)(\[[^\]]*\])?==([^;\s]+)", dep)
                if not m:
                    problems.append(f"{name}: sibling dependency {dep!r} is not an exact pin")
                elif m.group(3) != reference:
                    problems.append(f"{name}: pins {m.group(1)}=={m.group(3)} but the version is {reference}")
    meta = set(PACKAGES["slim-toolkit"]["siblings"])
    if meta != set(LIBRARIES):
        problems.append(f"slim-toolkit must depend on every package; missing {sorted(set(LIBRARIES) - meta)}")
    if problems:
        session.error("version drift:\n  " + "\n  ".join(problems))
    session.log(f"all {len(PACKAGES)} packages at {reference}, sibling pins exact")


DEP_CHECK = r"""
import ast, re, sys, tomllib
from pathlib import Path
root = Path(sys.argv[1])
stdlib = set(sys.stdlib_module_names) | {"__future__"}
# import name -> distribution name where they differ
dist_of = {"yaml": "pyyaml", "paddle": "paddlepaddle"}
bad = []
for pyproject in sorted((root / "packages").glob("*/pyproject.toml")):
    project = tomllib.loads(pyproject.read_text())["project"]
    name = project["name"]
    src = pyproject.parent / "src"
    if not src.is_dir():
        continue
    def names(reqs):
        return {re.split(r"[\[=<>!~ ;]", r, maxsplit=1)[0].lower() for r in reqs}
    hard = names(project.get("dependencies", []))
    extras = set().union(*[names(v) for v in project.get("optional-dependencies", {}).values()] or [set()])
    own = {d.name for d in src.iterdir() if d.is_dir() and not d.name.startswith((".", "_"))}
    top, lazy, text = set(), set(), ""
    for f in src.rglob("*.py"):
        text += f.read_text()
        tree = ast.parse(f.read_text())
        body = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module.split(".")[0]]
            else:
                continue
            (top if id(node) in body else lazy).update(mods)
    for mod in sorted((top | lazy) - stdlib - own):
        dist = dist_of.get(mod, mod.replace("_", "-"))
        if dist == "paddlepaddle":
            continue  # never a hard requirement (CPU vs GPU builds); checked by require_paddle at import
        if mod in top and dist not in hard:
            bad.append(f"{name}: imports {mod} at module top but does not declare {dist} in dependencies")
        elif dist not in hard and dist not in extras:
            bad.append(f"{name}: imports {mod} but declares {dist} neither in dependencies nor in an extra")
    for dist in sorted(d for d in hard if d.startswith("slim-")):
        mod = dist.replace("-", "_")
        if mod not in top | lazy and f'"{mod}' not in text:  # slim-auto loads some siblings by name ("slim_prune:prune_")
            bad.append(f"{name}: declares {dist} but never uses {mod}")
if bad:
    sys.exit("declared dependencies do not match imports:\n  " + "\n  ".join(bad))
print("declared dependencies match imports")
"""


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, the package layering (import-linter) and declared dependencies vs imports."""
    session.install("ruff>=0.6", "import-linter>=2")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # contracts in .importlinter: auto > quant > {prune, nas, deploy} > {analysis, distill} > core; deploy never imports quant.
    # The packages are found on PYTHONPATH (import-linter reads the source, it imports nothing).
    src_path = os.pathsep.join(str(p["dir"] / "src") for p in PACKAGES.values() if p["module"])
    session.run("lint-imports", "--no-cache", env={"PYTHONPATH": src_path})
    _run_script(session, "python", "dependency_check.py", DEP_CHECK, str(ROOT))


@nox.session
def demo(session: nox.Session) -> None:
    """The main job on its embedded default: `slim demo`, with its default relative output directory (./slim-demo-out)."""
    _install_tree(session, list(PACKAGES))  # every library and the meta-package
    session.run("slim", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks in benchmarks/ (each prints side-by-side ratios measured in one run)."""
    _install_tree(session, LIBRARIES)
    extras_file = ROOT / "benchmarks" / "requirements.txt"
    if extras_file.exists():
        session.install("-r", str(extras_file))
    nodeps_file = ROOT / "benchmarks" / "requirements-nodeps.txt"
    if nodeps_file.exists():  # packages used only for the model or data file they carry
        session.install("--no-deps", "-r", str(nodeps_file))
    args = session.posargs or sorted(str(p) for p in (ROOT / "benchmarks").glob("bench_*.py"))
    for script in args:
        session.run("python", script, env={"SLIM_QUIET": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps({k: {**v, "dir": str(v["dir"])} for k, v in PACKAGES.items()}, indent=2))
