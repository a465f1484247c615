"""The glibc allocator tuning: applied once, opt-out by environment, harmless elsewhere."""
import subprocess
import sys

import pytest

CHECK = ("import trtqat.allocator as a; first = a.tune_allocator(); "
         "print(first, a.tune_allocator(), a._state)")


def _run(env_value=None):
    import os

    env = {k: v for k, v in os.environ.items() if k != "TRTQAT_MALLOC"}
    if env_value is not None:
        env["TRTQAT_MALLOC"] = env_value
    return subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, check=True).stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tuned_once_on_glibc_and_opt_out():
    import ctypes

    glibc = hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
    assert _run() == ([str(glibc)] * 3)
    assert _run("default") == ["False", "False", "False"]


def test_the_cli_tunes_the_process(monkeypatch):
    from click.testing import CliRunner

    import trtqat.allocator as alloc
    from trtqat.cli import main

    calls = []
    monkeypatch.setattr(alloc, "tune_allocator", lambda: calls.append(1) or True)
    assert CliRunner().invoke(main, ["rules", "--list"]).exit_code == 0
    assert calls == [1]
