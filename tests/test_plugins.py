"""Plugins: found through entry points, checked first, never breaking the built-ins."""
from __future__ import annotations

import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT, cli

PLUGIN = ROOT / "examples" / "plugin"


def fake_dist(site: Path, dist: str, entry_points: str, module: str = "", code: str = "") -> None:
    """A minimal installed distribution: what pip leaves in site-packages."""
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[sluice.stages]\n" + entry_points)
    if module:
        (site / f"{module}.py").write_text(textwrap.dedent(code))


def test_broken_and_clashing_plugins_are_skipped_with_one_line_each(tmp_path):
    """A plugin that fails to import, or takes a built-in's name, is refused; the rest work."""
    site = tmp_path / "site"
    fake_dist(site, "broken-plug", "bad = broken_plug:Stage\n", "broken_plug", "raise ImportError('no numpy for you')\n")
    fake_dist(site, "clash-plug", "file-input = clash_plug:FileInput\n", "clash_plug", """
        from pipeline import Input
        class FileInput(Input):
            '''A clash.'''
            name = "file-input"
    """)
    fake_dist(site, "not-a-stage", "thing = not_a_stage:thing\n", "not_a_stage", "thing = 42\n")
    p = cli("stages", env={"PYTHONPATH": str(site)})
    assert p.returncode == 0
    warnings = sorted(x for x in p.stderr.splitlines() if x.startswith("sluice: warning"))
    assert warnings == [
        "sluice: warning: plugin broken-plug (entry point 'bad') skipped: no numpy for you",
        "sluice: warning: plugin clash-plug (entry point 'file-input') skipped: stage name "
        "'file-input' from clash-plug (entry point 'file-input') clashes with the one from "
        "sluice (built-in)",
        "sluice: warning: plugin not-a-stage (entry point 'thing') skipped: 42 is not a "
        "subclass of pipeline.Stage",
    ]
    assert "file-input            input      Read lines from files" in p.stdout
    run = cli("-c", str(ROOT / "configs" / "summary.yaml"), "--state-dir", str(tmp_path / "s"),
              env={"PYTHONPATH": str(site)})
    assert run.returncode == 0 and run.stdout  # the built-ins still run


def venv_seeing_this_environment(venv: Path) -> str:
    """A new venv whose python also sees the packages of the environment running the
    tests, system install or venv alike. (`venv --system-site-packages` would not: made
    from inside a venv, it sees the *base* interpreter's packages, not the venv's.)

    The new venv gets no pip of its own (`--without-pip`, and faster): `python -m pip`
    in it runs this environment's pip, which installs into the new venv's prefix."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    here = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    adds = "; ".join(f"site.addsitedir({d!r})" for d in here if os.path.isdir(d))
    # a .pth line starting with `import` runs at startup; addsitedir also runs the .pth
    # files there (an editable install of sluice, for one)
    Path(purelib, "this_environment.pth").write_text(f"import site; {adds}\n")
    return py


def test_plugin_package_end_to_end(tmp_path):
    """pip install -e the example plugin in a venv; list it, run it, test it."""
    py = venv_seeing_this_environment(tmp_path / "venv")
    install = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "-e", str(PLUGIN)],
                             capture_output=True, text=True, timeout=300)
    if install.returncode != 0 and "No matching distribution" in install.stderr:
        pytest.skip("no package index reachable to build the plugin")
    assert install.returncode == 0, install.stderr

    def sluice(*args):
        return subprocess.run([py, str(ROOT / "main.py"), *args], capture_output=True,
                              text=True, cwd=tmp_path, timeout=120)
    listed = sluice("stages")
    assert ("mask-field            processor  Mask a string field, keeping only its last few "
            "characters.  [sluice-mask-field (entry point 'mask-field')]") in listed.stdout
    shown = sluice("stages", "mask-field")
    assert "  keep   int  default 4    characters left visible at the end" in shown.stdout and "- mask-field:" in shown.stdout
    data = tmp_path / "in.jsonl"
    data.write_text('{"id":"a","from":"visitor42"}\n')
    ran = sluice("-c", str(PLUGIN / "mask.yaml"), "-f", str(data))
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == '{"id":"a","from":"*******42"}\n'
    tested = sluice("test", str(PLUGIN / "mask_test.yaml"))
    assert tested.returncode == 0
    assert tested.stdout.splitlines()[-1] == "1 passed, 0 failed"
    assert sluice("validate", "-c", str(PLUGIN / "mask.yaml")).returncode == 0
