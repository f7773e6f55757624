"""Entry point of the built-in metric plugin."""
from __future__ import annotations

from coopcore import hookimpl

from .parzen import Parzen, ParzenOptions


@hookimpl
def coop_register_metrics(registry) -> None:
    registry.add("parzen", Parzen, ParzenOptions, "Parzen-window log-likelihood (TPAMI Table 2 protocol)")
