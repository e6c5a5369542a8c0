"""Every module of the package imports on its own: an import cycle shows only when a module is the first of
the package to load (a user's `import ppp.train`, a wheel's `import ppp.cache`), never in a suite that has
loaded the package already."""

import subprocess
import sys

from conftest import ROOT

CHECK = """
import importlib, pkgutil, sys
import ppp
names = sorted(m.name for m in pkgutil.walk_packages(ppp.__path__, "ppp.") if not m.name.startswith("ppp.conf") and not m.name.endswith("__main__"))
failed = []
for name in names:
    for loaded in [m for m in sys.modules if m == "ppp" or m.startswith("ppp.")]:
        del sys.modules[loaded]  # the package's own modules only: torch and the rest stay loaded
    try:
        importlib.import_module(name)
    except Exception as err:
        failed.append(f"{name}: {type(err).__name__}: {err}")
print(len(names))
print("\\n".join(failed))
"""


def test_every_module_imports_first():
    proc = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    count, *failed = proc.stdout.strip().splitlines()
    assert int(count) > 40 and not failed, failed
