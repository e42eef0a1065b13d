"""The engine's SNMP agent, when ``[snmp.agent]`` enables it, and what status shows of SNMP.

An agent that cannot start (address in use, no permission) is logged and shown in status: the
agent is not worth a router without failover, so the engine goes on without it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from linkwatch.config import SnmpConfig
from linkwatch.core.status import SnmpStatus, Status

log = logging.getLogger("linkwatch.engine")


class AgentSlot:
    """Holds the running agent (or why it is not running)."""

    def __init__(self) -> None:
        self.agent: Any = None
        self.error: str | None = None

    async def start(self, cfg: SnmpConfig, status: Callable[[], Status],
                    suppressed: Callable[[], dict[str, int]]) -> None:
        self.error = None
        if not cfg.agent.enabled:
            return
        from linkwatch.snmp import SnmpError  # pysnmp only when the agent runs
        from linkwatch.snmp.agent import SnmpAgent

        agent = SnmpAgent(cfg, status, asyncio.get_running_loop(), suppressed)
        try:
            await agent.start()
        except (SnmpError, OSError) as e:
            self.error = str(e)
            log.error("snmp agent not started: %s", e)
            return
        self.agent = agent

    async def stop(self) -> None:
        agent, self.agent = self.agent, None
        if agent is not None:
            try:
                await agent.close()
            except Exception as e:  # closing must not stop the engine from stopping
                log.warning("snmp agent close failed: %s", e)

    def status(self, cfg: SnmpConfig) -> SnmpStatus | None:
        """What status shows of SNMP (never a community or key); None when SNMP is off."""
        if not cfg.traps and not cfg.agent.enabled:
            return None
        from linkwatch.snmp import engine_id

        return SnmpStatus(engine_id=engine_id(cfg.engine_id).hex(), base_oid=cfg.base_oid,
                          agent=self.agent.stats() if self.agent is not None else None,
                          agent_error=self.error, agent_listen=cfg.agent.listen if cfg.agent.enabled else None)
