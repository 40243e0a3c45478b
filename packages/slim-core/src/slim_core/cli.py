"""The ``slim`` command. Each installed slim package adds its subcommands.

Subcommands come from the entry-point group ``slim.commands``: each entry point
names a function ``register(subparsers)`` that adds one subparser and sets
``func`` on it (``func(args) -> int``). Install slim-analysis and ``slim analyze``
appears; uninstall it and it is gone.

A :class:`~slim_core.errors.SlimError` ends a command with one ``error:`` line (exit 2);
Ctrl-C or SIGTERM with one ``interrupted`` line (exit 130 or 143), after the command's
cleanup code ran (``finally`` blocks, temporary directories, child processes): SIGTERM
is raised in the main thread as :class:`Terminated`, a ``KeyboardInterrupt``. A command
may set ``args.interrupt_hint`` (what the user can do next) to end that line.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import distributions, entry_points
from typing import Any

from slim_core.__about__ import __version__
from slim_core.errors import PaddleVersionError, SlimError
from slim_core.log import configure, get_logger, quiet_native_defaults

__all__ = ["main", "build_parser", "run_command", "sigterm_interrupts", "Terminated", "installed_packages", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "slim.commands"


def installed_packages() -> dict[str, str]:
    """Installed slim distributions (``slim-*``) and their versions."""
    found = {}
    for dist in distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name.startswith("slim-"):
            found[name] = dist.version
    return dict(sorted(found.items()))


def _version_text() -> str:
    from slim_core._paddle import paddle_version

    lines = [f"slim {__version__}"]
    lines += [f"  {n} {v}" for n, v in installed_packages().items()]
    lines.append(f"  paddle {paddle_version() or 'not installed'}")
    return "\n".join(lines)


def _doctor(args: argparse.Namespace) -> int:
    from slim_core._paddle import paddle_version, require_paddle

    ok = True
    print(_version_text())
    try:
        paddle = require_paddle()
        print(f"[ok] paddle {paddle.__version__} imports")
        try:
            mkldnn = bool(paddle.base.core.is_compiled_with_mkldnn())
        except Exception:  # older/newer builds move this flag
            mkldnn = False
        print(
            f"[{'ok' if mkldnn else 'warn'}] oneDNN (MKLDNN) {'available' if mkldnn else 'not compiled in: INT8 on CPU will not be fast'}"
        )
        print(f"[info] CUDA compiled in: {bool(paddle.is_compiled_with_cuda())}")
    except SlimError as exc:
        ok = False
        print(f"[fail] {exc}")
        print(f"[info] paddle distribution version: {paddle_version()}")
    for mod, what in [
        ("onnxruntime", "ONNX Runtime backend"),
        ("paddle2onnx", "ONNX export"),
        ("onnx", "ONNX INT8 QDQ export"),
        ("optuna", "model-based search"),
        ("matplotlib", "plots"),
    ]:
        present = importlib.util.find_spec(mod) is not None
        print(f"[{'ok' if present else 'info'}] {mod} ({what}): {'present' if present else 'absent (optional)'}")
    return 0 if ok else 1


def _register_doctor(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check the environment (Paddle, oneDNN, optional backends)")
    p.set_defaults(func=_doctor)


def _demo(args: argparse.Namespace) -> int:
    from slim_core.demo import run_demo

    result = run_demo(args.out, epochs=args.epochs)
    print(result.to_markdown())
    print(f"saved to {args.out}")
    return 0


def _register_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="train the built-in digits model, measure it and save it")
    p.add_argument("--out", default="slim-demo-out", help="output directory (default: ./slim-demo-out)")
    p.add_argument("--epochs", type=int, default=8)
    p.set_defaults(func=_demo)


_BUILTIN: dict[str, Callable[[Any], None]] = {"doctor": _register_doctor, "demo": _register_demo}


def _unavailable(name: str, reason: BaseException) -> Callable[[Any], None]:
    """A stand-in subcommand for a package that cannot load without Paddle: it explains instead of warning on every call."""

    def run(args: argparse.Namespace) -> int:
        raise SlimError(f"`slim {name}` needs Paddle: {reason}")

    def register(sub: Any) -> None:
        p = sub.add_parser(name, help=f"(needs Paddle: not available) {name}", add_help=True)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=run)

    return register


def _is_level_flag(a: str) -> bool:
    return a in ("-q", "--quiet", "--verbose") or (len(a) > 1 and a[0] == "-" and set(a[1:]) == {"v"})


def _level_flags_first(argv: Sequence[str] | None) -> list[str]:
    """``-v``/``-q`` are accepted anywhere (``slim compress ... -v``): move them before the subcommand."""
    args = list(sys.argv[1:] if argv is None else argv)
    return [a for a in args if _is_level_flag(a)] + [a for a in args if not _is_level_flag(a)]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with built-in and entry-point subcommands."""
    parser = argparse.ArgumentParser(
        prog="slim", description="slim: model compression for PaddlePaddle 3.x", formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=_version_text())
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and results only, no progress bars")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="debug log lines, with Paddle/oneDNN/glog output (hidden by default)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    registrars: dict[str, Callable[[Any], None]] = dict(_BUILTIN)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            registrars[ep.name] = ep.load()  # a package's command replaces the built-in of the same name
        except PaddleVersionError as exc:  # Paddle missing: `slim --version` and `slim doctor` still work
            if ep.name not in registrars:
                registrars[ep.name] = _unavailable(ep.name, exc)
        except Exception as exc:  # a broken plugin must not break the whole CLI
            print(f"slim: warning: could not load subcommand {ep.name!r} from {ep.value}: {exc}", file=sys.stderr)
    for name in sorted(registrars):
        registrars[name](sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived while a command ran (raised like Ctrl-C, so the same cleanup runs)."""


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Inside the block, SIGTERM raises :class:`Terminated` in the main thread instead of ending the process at once.

    Python's default SIGTERM action skips every ``finally``: child processes would be left
    running and temporary files behind. A second SIGTERM ends the process at once. Outside
    the main thread (where handlers cannot be set) the block runs unchanged.

    Example:
        >>> with sigterm_interrupts():
        ...     pass   # `kill PID` here raises Terminated
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed subcommand (``args.func``) and turn its errors and interruptions into one line each.

    Returns:
        The command's exit code; 2 after a :class:`~slim_core.errors.SlimError`, 130 after
        Ctrl-C, 143 after SIGTERM.

    Example:
        >>> run_command(argparse.Namespace(command="noop", func=lambda a: 0))
        0
    """
    try:
        with sigterm_interrupts():
            return int(args.func(args) or 0)
    except SlimError as exc:
        get_logger("slim.cli").debug("error details", exc_info=True)
        print(f"slim {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        get_logger("slim.cli").debug("interrupted here", exc_info=True)
        terminated = isinstance(exc, Terminated)
        hint = getattr(args, "interrupt_hint", "")
        print(
            f"slim {args.command}: interrupted ({'SIGTERM' if terminated else 'Ctrl-C'})" + (f"; {hint}" if hint else ""), file=sys.stderr
        )
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``slim`` console script."""
    argv = _level_flags_first(argv)
    quiet_native_defaults(verbose=any(a not in ("-q", "--quiet") for a in argv if _is_level_flag(a)))  # before Paddle loads
    parser = build_parser()
    args = parser.parse_args(argv)
    configure(1 if args.verbose else (-1 if args.quiet else 0))
    if args.quiet:
        from slim_core.progress import set_quiet

        set_quiet(True)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return run_command(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
