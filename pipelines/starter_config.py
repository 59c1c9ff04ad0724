"""``leadscore init``: a commented starter config a new user edits instead of the code.

The text is :data:`STARTER_CONFIG` (``pipelines/templates/leadscore.yaml``): every
section with its main settings and defaults, a comment on each, and examples of
``sources.column_map``, ``value_map`` and ``timestamp_format`` for an export with its
own column names (``contact_id``, ``timestamp``, ``activity``) and values
(``"Email Opened"``, ``"Closed Won"``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipelines.atomic_files import write_text_atomic

log = logging.getLogger(__name__)

#: The starter config's text.
STARTER_CONFIG = Path(__file__).parent / "templates" / "leadscore.yaml"


def write_starter_config(out: Path, *, force: bool = False) -> Path:
    """Write the starter config to ``out``.

    Args:
        out: The file to write (``.yaml`` or ``.yml``).
        force: Overwrite an existing file.

    Returns:
        ``out``.

    Raises:
        FileExistsError: ``out`` exists and ``force`` is false.
        ValueError: ``out`` does not end in ``.yaml`` or ``.yml``.
    """
    out = Path(out)
    if out.suffix not in {".yaml", ".yml"}:
        raise ValueError(f"The starter config is YAML: name it .yaml or .yml, not {out.name}.")
    if out.exists() and not force:
        raise FileExistsError(
            f"{out} already exists and was left as it is; give --force to overwrite it, "
            "or --out another file."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(STARTER_CONFIG.read_text(encoding="utf-8"), out)
    log.info("Starter config written to %s.", out)
    return out
