"""Commands that run a flow: Prefect's server started early, the inputs read ahead.

The run context is built once by the command, so that a config or date mistake is a
sentence within a second instead of a failed flow run; meanwhile Prefect's temporary
server starts (:mod:`pipelines.prefect_server`) and, for the ``nightly`` and ``score``
flows, the inputs are read (:mod:`pipelines.read_ahead`) while the server comes up and
Prefect creates the flow run. The flow gets the user's config file and run date as
given and builds its own context from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.context import RunContext
    from pipelines.summary import RunSummary


def config_arg(config: Path | None) -> str | None:
    """The config file as the flow gets it: an absolute path, or ``None``."""
    return str(Path(config).resolve()) if config else None


def context_with_prefect(
    config: Path | None, as_of: str | None, allow_future: bool = False, *, inputs: bool = False
) -> RunContext:
    """The run context, built while Prefect's temporary server starts in the background.

    The flows are imported meanwhile too; with ``inputs``, the flow's inputs are then
    read ahead (:mod:`pipelines.read_ahead`) while the server comes up and the flow run
    is created. Returns once the server answers.
    """
    from pipelines.prefect_server import start_prefect_server_early, wait_for_prefect_server
    from pipelines.runtime import no_collections_while_importing

    with no_collections_while_importing():
        start_prefect_server_early()
        from pipelines import flows  # noqa: F401 - imported while the server comes up
        from pipelines.context import build_context

        ctx = build_context(config, as_of, allow_future=allow_future)
    if inputs:
        from pipelines.read_ahead import read_ahead

        read_ahead(ctx)
    wait_for_prefect_server()
    return ctx


def scoring_run(
    config: Path | None, as_of: str | None, allow_future: bool, *, retrain: bool
) -> RunSummary:
    """Run the nightly (``retrain``) or score flow once, its inputs read ahead."""
    ctx = context_with_prefect(config, as_of, allow_future, inputs=True)
    from pipelines.flows import nightly as nightly_flow
    from pipelines.flows import score_flow
    from pipelines.read_ahead import drop
    from pipelines.runtime import few_full_collections

    try:
        with few_full_collections():
            return (nightly_flow if retrain else score_flow)(
                as_of=str(ctx.as_of.date()),
                config_path=config_arg(config),
                allow_future=allow_future,
            )
    finally:
        drop()  # a flow that failed before its first step left it
