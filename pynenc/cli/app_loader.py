"""Finding the app named on the command line (``--app tasks.app``).

``module.attribute`` imports ``module`` and takes ``attribute``; a bare
``module`` takes the one :class:`~pynenc.Pynenc` instance defined in it. The
current directory is put on ``sys.path`` first, as ``python -m`` would, so
``--app tasks.app`` finds ``./tasks.py``. Failures raise :class:`AppLoadError`
naming the module and the error; the supervisor exits with its own code on it.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

from pynenc.app import Pynenc
from pynenc.exceptions import AppLoadError, ConfigurationError

__all__ = ["AppLoadError", "load_app"]


def load_app(spec: str) -> Pynenc:
    if not spec or spec.startswith(".") or spec.endswith("."):
        raise AppLoadError(f"--app {spec!r}: expected 'module.attribute' (e.g. tasks.app) or 'module'")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    module_name, attribute = spec, None
    try:
        module = importlib.import_module(module_name)
    except ConfigurationError:
        raise  # the app's own settings are wrong: report that, not an import problem
    except ModuleNotFoundError as exc:
        if "." not in spec or exc.name != spec:
            if exc.name and spec.startswith(exc.name):
                module_name = exc.name
            raise _import_error(spec, module_name, exc) from exc
        module_name, _, attribute = spec.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ConfigurationError:
            raise
        except Exception as inner:
            raise _import_error(spec, module_name, inner) from inner
    except Exception as exc:
        raise _import_error(spec, module_name, exc) from exc
    if attribute is not None:
        app = getattr(module, attribute, None)
        if not isinstance(app, Pynenc):
            found = "nothing" if app is None else type(app).__name__
            raise AppLoadError(f"--app {spec!r}: {module_name}.{attribute} is {found}, not a Pynenc app")
        return app
    apps = [value for value in vars(module).values() if isinstance(value, Pynenc)]
    if len(apps) != 1:
        raise AppLoadError(
            f"--app {spec!r}: module {module_name} defines {len(apps)} Pynenc apps; name one as {module_name}.<name>"
        )
    return apps[0]


def _import_error(spec: str, module_name: str, exc: BaseException) -> AppLoadError:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen")]
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return AppLoadError(f"--app {spec!r}: cannot import module {module_name}: {type(exc).__name__}: {exc}{where}")
