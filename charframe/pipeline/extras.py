"""The optional installs an executor needs (`charframe[ray]`, `charframe[slurm]`), imported only when asked for.

A plain `charframe run` never imports Ray or submitit; asking for an executor whose library is missing is one
line naming the extra to install (charframe/data/executors.toml maps extra → module).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from charframe.errors import CharframeError
from charframe.util import toml as tomlio
from charframe.util.files import DATA_DIR

EXECUTORS_FILE = DATA_DIR / "executors.toml"


def need(extra: str) -> ModuleType:
    """The module the optional extra `extra` brings; missing → one line naming the extra."""
    module = tomlio.load(EXECUTORS_FILE)["extras"][extra]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if e.name and e.name.split(".")[0] != module:  # installed, but one of its own dependencies is missing
            raise CharframeError(f"the {extra} executor: {module} is installed but does not import ({e}); "
                                 f"reinstall it: pip install 'charframe[{extra}]'") from None
        raise CharframeError(f"the {extra} executor needs {module}, which is not installed: "
                             f"pip install 'charframe[{extra}]'") from None
