"""Reading an anomaly model file (docs/anomaly.md "Model file") on the host.

The tables it returns are checked by the portable core
(controller/core/anomaly.py ``ModelTables``); this module only reads the
file and says what is wrong with it.
"""

from __future__ import annotations

from pathlib import Path

from controller.core.anomaly import ModelTables
from drivers.safefile import InputFileError, parse_json, read_text
from rules.errors import ModelFileError


def read_model(path: str | Path) -> ModelTables:
    """The checked tables of a model file (docs/anomaly.md "Model file")."""
    try:
        doc = parse_json(read_text(path, "model file"), path, "model file")
        return ModelTables(doc)
    except OSError as e:
        raise ModelFileError("cannot read model {}: {}".format(path, e.strerror)) from None
    except InputFileError as e:
        raise ModelFileError("{} (make one with `cabguard model train`)".format(e)) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFileError("{}: {} (make one with `cabguard model train`)".format(path, e)) from None
