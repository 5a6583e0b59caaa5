"""A ticket body (:class:`Doc`: blocks and a hidden marker) and the labels that find it again.

The alert engine builds a :class:`Doc` once per finding; each sink renders it as it needs
(Markdown for GitHub, the webhook and the file; ADF for Jira).  :func:`marker` and
:func:`fingerprint_label` are how sinks find a ticket an earlier attempt created.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.codec.adf import render_adf
from collector.codec.markdown import render_markdown
from collector.codec.ticket_blocks import Block
from collector.ports import JsonObject


@dataclass(frozen=True)
class Doc:
    """A ticket body; implements :class:`collector.ports.TicketBody`."""

    blocks: tuple[Block, ...]
    marker: str = ""  # hidden in Markdown (an HTML comment); omitted in ADF

    def markdown(self) -> str:
        return render_markdown(self.blocks, self.marker)

    def adf(self) -> JsonObject:
        return render_adf(self.blocks)


def fingerprint_label(fingerprint: str) -> str:
    """The label every ticket of a finding carries (GitHub lists issues by it)."""
    return f"prodloop:{fingerprint}"


def marker(fingerprint: str, generation: int) -> str:
    """The hidden line of a body that names its finding and generation."""
    return f"prodloop:fingerprint={fingerprint} generation={generation}"
