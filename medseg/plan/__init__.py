"""Experiment planning: a dataset fingerprint, the plan (spacing, patch, network, batch, normalisation) it
implies, and the network a plan describes.

May import: medseg.data, medseg.io and the bottom layer (losses, metrics, transforms, utils).
"""

from __future__ import annotations

from medseg.plan.fingerprint import extract_fingerprint
from medseg.plan.planner import ChannelNorm, ComputeBudget, NetworkPlan, Plan, make_plan, plan_dataset

__all__ = ["extract_fingerprint", "ChannelNorm", "ComputeBudget", "NetworkPlan", "Plan", "make_plan", "plan_dataset"]
