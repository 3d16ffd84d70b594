"""Online template mining: Drain3 with masking of variable tokens.

``TemplateMiner.mine(message)`` returns the template a line belongs to, learned in one
pass. Variable tokens (IPs, hex, numbers, paths, e-mail addresses, user=...) are masked
before Drain sees them, which keeps lines that differ only in such values in one group.

Drain3's own ``TemplateMiner`` facade reads ``drain3.ini`` and persists synchronously on
every change; we build the config in code and checkpoint the whole object ourselves (see
``streams.pipeline``), so nothing here does I/O.

>>> m = TemplateMiner()
>>> a = m.mine("Accepted password for root from 10.0.0.1 port 22 ssh2")
>>> b = m.mine("Accepted password for alice from 10.0.0.7 port 4711 ssh2")
>>> a.template_id == b.template_id, b.template
(True, 'Accepted password for <*> from <IP> port <NUM> ssh2')
>>> b.params
['alice', '10.0.0.7', '4711']
"""

from __future__ import annotations

from dataclasses import dataclass

from drain3.masking import MaskingInstruction
from drain3.template_miner import TemplateMiner as _Drain3Miner
from drain3.template_miner_config import TemplateMinerConfig

__all__ = ["MinedTemplate", "TemplateMiner", "MASKS"]

# Order matters: the first instruction that matches a span wins.
MASKS: tuple[tuple[str, str], ...] = (
    # starts only after a non-word character, so a long token costs linear time, not quadratic
    (r"((?<=[^\w.+-])|^)[\w.+-]+@[\w-]+(\.[\w-]+)+", "EMAIL"),
    (r"((?<=[^A-Za-z0-9])|^)(\d{1,3}\.){3}\d{1,3}(:\d{1,5})?((?=[^A-Za-z0-9])|$)", "IP"),
    (r"((?<=[^A-Za-z0-9])|^)([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}((?=[^A-Za-z0-9])|$)", "MAC"),
    (r"((?<=[^A-Za-z0-9])|^)(0x[a-fA-F0-9]+)((?=[^A-Za-z0-9])|$)", "HEX"),
    (r"((?<=[^A-Za-z0-9])|^)([a-fA-F0-9]{8,})((?=[^A-Za-z0-9])|$)", "HEX"),
    (r"((?<=[^A-Za-z0-9:/])|^)(/[\w.@%+-]+){2,}/?((?=[^A-Za-z0-9])|$)", "PATH"),
    (r"((?<=[^A-Za-z0-9])|^)([\-\+]?\d+(\.\d+)?)((?=[^A-Za-z0-9])|$)", "NUM"),
)


@dataclass(slots=True, frozen=True)
class MinedTemplate:
    template_id: str
    template: str
    params: list[str]
    is_new: bool
    seen_before: int  # how many lines this template had before this one


class TemplateMiner:
    """Drain3 tree + masking; one pass, online, picklable."""

    def __init__(self, *, sim_th: float = 0.4, depth: int = 4, max_clusters: int | None = None):
        config = TemplateMinerConfig()
        config.drain_sim_th = sim_th
        config.drain_depth = depth
        config.drain_max_clusters = max_clusters
        config.masking_instructions = [MaskingInstruction(p, name) for p, name in MASKS]
        config.parametrize_numeric_tokens = True
        self._miner = _Drain3Miner(persistence_handler=None, config=config)
        self.drain = self._miner.drain

    @property
    def template_count(self) -> int:
        return len(self.drain.clusters)

    def bump_ids_past(self, max_id: int) -> None:
        """Never reuse an id already stored (used when state was lost or rolled back)."""
        if self.drain.clusters_counter < max_id:
            self.drain.clusters_counter = max_id

    def mine(self, message: str) -> MinedTemplate:
        masked = self._miner.masker.mask(message)
        before = self.drain.clusters_counter
        cluster, change = self.drain.add_log_message(masked)
        template = cluster.get_template()
        is_new = change == "cluster_created"
        return MinedTemplate(
            template_id=f"T{cluster.cluster_id}",
            template=template,
            params=_params(message, template),
            is_new=is_new and self.drain.clusters_counter > before,
            seen_before=cluster.size - 1,
        )


def _params(message: str, template: str) -> list[str]:
    """Tokens of the message where the template has a placeholder (cheap positional diff)."""
    tokens = message.split()
    ttokens = template.split()
    if len(tokens) != len(ttokens):
        return []
    return [tok for tok, ttok in zip(tokens, ttokens) if ttok != tok and "<" in ttok]
