"""Training backends behind one step interface (moved to ``base`` with ``git mv``; the next
commit splits the dispatch back here)."""

from __future__ import annotations

from .base import Engine, build_engine, check_engine, lr_lambda, param_groups

__all__ = ["Engine", "build_engine", "check_engine", "lr_lambda", "param_groups"]
