"""Optional plant-side outputs beside the JSON contract: Sparkplug B and Prometheus.

Each is off unless its config section is present, and each gets every result through the
camera workers' per-result hook list. The Sparkplug module is imported only when enabled,
so a station without pysparkplug installed runs as before.
"""

from __future__ import annotations


def attach_outputs(daemon) -> list:
    """The configured outputs (not started yet); sets daemon.sparkplug for the metrics collector."""
    cfg, outs = daemon.cfg, []
    daemon.sparkplug = None
    if cfg.sparkplug is not None:
        from .sparkplug import SparkplugNode

        state = getattr(daemon, "state", None)  # the state dir keeps bdSeq across restarts
        daemon.sparkplug = SparkplugNode(cfg.sparkplug, cfg.mqtt, daemon.workers, daemon.recalibrators,
                                         state_dir=state.path if state is not None else None)
        outs.append(daemon.sparkplug)
    if cfg.prometheus is not None:
        from .metrics import PromMetrics

        outs.append(PromMetrics(cfg.prometheus, daemon))
    for w in daemon.workers.values():
        w.listeners.extend(o.on_result for o in outs)
    return outs
