"""Render the report: load results, build sections, fill the jinja2 template, write atomically."""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
from pathlib import Path

import jinja2

from reports.build import build_context
from reports.loader import ResultSet, load
from workloads.errors import UserError

_TEMPLATES = Path(__file__).resolve().parent / "templates"


def _env() -> jinja2.Environment:
    # Autoescape everything: file names, error messages and titles come from user data.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def render_html(rs: ResultSet, title: str, notes: list[str] | None = None) -> str:
    ctx = build_context(rs, title, notes)
    ctx["generated_utc"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    ctx["css"] = (_TEMPLATES / "report.css").read_text(encoding="utf-8")
    return _env().get_template("report.html.j2").render(**ctx)


def write_atomic(path: Path, text: str) -> None:
    """Temp file in the target directory + fsync + rename: a reader sees the old file or the whole new
    one, never a half-written report."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(
            f"--out {str(path)!r}: directory {str(parent)!r} does not exist; create it or choose another path"
        )
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise UserError(f"--out {str(path)!r}: cannot write there ({e.strerror}); choose a writable path") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_report(
    results: list[str],
    out: str | Path,
    title: str = "roo-bench efficiency report",
    notes: list[str] | None = None,
) -> tuple[Path, ResultSet]:
    """Load `results` (files/directories), render, write `out` atomically; returns (path, results)."""
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {str(out)!r} is a directory; give a file name such as {str(out / 'report.html')!r}")
    rs = load(results)
    html = render_html(rs, title, notes)
    write_atomic(out, html)
    return out, rs
