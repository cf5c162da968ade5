"""Mutation testing of training (DeepCrime-style): operators from a function's signature, seeded runs
stored in SQLite, kill tests, threshold search, adaptive stopping and reports."""
from __future__ import annotations

from .analysis import Analysis, MutantAnalysis, analyze
from .models import ModelRef, call_seeded, final_metrics, seed_everything, source_hash
from .operators import Domain, Operator, OperatorCatalogue, domain_for, load_domain_overrides, operators_for, parse_value
from .runner import MutantOutcome, MutationSweep, RunTask, TrainingWorkerFactory
from .search import (
    ThresholdResult, find_kill_threshold, killability_score, mutation_score, per_input_kill_probability,
    sequential_decision, triviality_score,
)
from .statistics import (
    Comparison, GLMTest, KillTest, MannWhitneyTest, WelchTest, cohens_d, compare, kill_test, power_two_sample,
    runs_for_power,
)
from .store import MutationStore
from .sweeps import adaptive_summary, run_adaptive, run_sweep, search_threshold, sweep_configs

__all__ = [
    "Analysis", "MutantAnalysis", "analyze", "ModelRef", "call_seeded", "final_metrics", "seed_everything",
    "source_hash", "Domain", "Operator", "OperatorCatalogue", "domain_for", "load_domain_overrides", "operators_for",
    "parse_value", "MutantOutcome", "MutationSweep", "RunTask", "TrainingWorkerFactory", "ThresholdResult",
    "find_kill_threshold", "killability_score", "mutation_score", "per_input_kill_probability", "sequential_decision",
    "triviality_score", "Comparison", "GLMTest", "KillTest", "MannWhitneyTest", "WelchTest", "cohens_d", "compare",
    "kill_test", "power_two_sample", "runs_for_power", "MutationStore", "adaptive_summary", "run_adaptive",
    "run_sweep", "search_threshold", "sweep_configs",
]
