"""Supervisor: what people read from verified records — the report page, the leaderboard.

May import: `attest` (records are verified before anything is shown).
Offers: the names in `__all__`.
"""

from prism_eval.supervisor.present.leaderboard import WeightScheme, build_leaderboard
from prism_eval.supervisor.present.report import render_report

__all__ = ["WeightScheme", "build_leaderboard", "render_report"]
