"""Prometheus and promtool for the tests of the alerting rules (``infra/prometheus/``).

Debian's ``prometheus`` package, fetched once with ``apt-get download`` (no root needed, no
installation: the package is unpacked, its two binaries kept) into ``.cache/prometheus/bin``.
Only the tests use them; a deployment brings its own Prometheus.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from caravan.infra.kafka import file_lock
from caravan.infra.logs import error_line
from caravan.output import OperatorError

PACKAGE = "prometheus"
BINARIES = ("prometheus", "promtool")


def ensure_prometheus(repo_root: Path) -> Path:
    """The folder holding ``prometheus`` and ``promtool``, fetched on the first call."""
    bin_dir = repo_root / ".cache" / "prometheus" / "bin"
    if all((bin_dir / name).exists() for name in BINARIES):
        return bin_dir
    bin_dir.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(bin_dir.parent / ".lock"):
        if all((bin_dir / name).exists() for name in BINARIES):  # fetched meanwhile
            return bin_dir
        for tool in ("apt-get", "dpkg-deb"):
            if shutil.which(tool) is None:
                raise OperatorError(f"{tool} is needed once to fetch Debian's {PACKAGE} package")
        print(f"caravan: fetching {PACKAGE} into {bin_dir} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=bin_dir.parent) as scratch:
            download(scratch)
            (deb,) = Path(scratch).glob(f"{PACKAGE}_*.deb")
            _run(["dpkg-deb", "-x", str(deb), "unpacked"], cwd=scratch)
            partial = bin_dir.with_name("bin.partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            for name in BINARIES:
                shutil.copy2(Path(scratch, "unpacked", "usr", "bin", name), partial / name)
            shutil.rmtree(bin_dir, ignore_errors=True)
            partial.rename(bin_dir)  # never a folder that looks complete but is not
        version = _run([str(bin_dir / "promtool"), "--version"]).splitlines()[0]
        elapsed = time.monotonic() - started
        print(f"caravan: {version} ready ({elapsed:.0f}s)", file=sys.stderr, flush=True)
    return bin_dir


def download(folder: str) -> None:
    """Debian's package into ``folder``. A machine whose package lists were never fetched (a
    bare image) knows no package: as root, it fetches them once and asks again."""
    try:
        _run(["apt-get", "download", PACKAGE], cwd=folder)
    except OperatorError as exc:
        if os.geteuid() != 0 or "Unable to locate package" not in str(exc):
            raise  # not a machine without lists (a network down, say): said as it is
        _run(["apt-get", "update", "-q"])
        _run(["apt-get", "download", PACKAGE], cwd=folder)


def _run(command: list[str], cwd: str | None = None) -> str:
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        output = result.stdout + result.stderr
        said = error_line(output, first=True, otherwise=output)
        raise OperatorError(f"{' '.join(command)} failed ({said})")
    return result.stdout + result.stderr
