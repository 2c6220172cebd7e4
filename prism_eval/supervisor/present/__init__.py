"""Supervisor: what people read from verified records — the report page, the leaderboard."""
