"""Experiment planning: a dataset fingerprint and the plan (spacing, patch, network, batch, normalisation) it implies."""

from __future__ import annotations

from medseg.plan.fingerprint import extract_fingerprint
from medseg.plan.planner import ChannelNorm, ComputeBudget, NetworkPlan, Plan, make_plan, plan_dataset

__all__ = ["extract_fingerprint", "ChannelNorm", "ComputeBudget", "NetworkPlan", "Plan", "make_plan", "plan_dataset"]
