"""State shared by replicas through Redis: budgets reserved and settled atomically across them, and
the decisions and reports each one counts, so every replica's economics, breakers and decision
lookup see the whole fleet. When Redis is away each replica keeps routing on its own state (budgets
at its share of what was left) and catches up when Redis is back. Nothing here imports grpc.
"""

from orxaq_grpc.shared.budgets import SharedBudgets
from orxaq_grpc.shared.link import SharedLink, SharedStatus, SharedUnavailable, open_link

__all__ = ["SharedBudgets", "SharedLink", "SharedStatus", "SharedUnavailable", "open_link"]
