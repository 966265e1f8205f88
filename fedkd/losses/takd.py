"""Teacher-assistant KD (Mirzadeh et al., 2020): teachers -> assistants -> clients.

The server distils its teachers into a chain of mid-size assistants
(:func:`fedkd.assistants.train_assistant_chain`, ``distill.assistants``), and the last
assistant's soft targets go to the clients. Client side this is the response loss.
"""

from __future__ import annotations

from fedkd.losses.method import KDMethod, register_method
from fedkd.losses.response import soft_target_loss, soft_target_rows

takd_loss = soft_target_loss
takd_rows = soft_target_rows


@register_method
class TAKD(KDMethod):
    """Response distillation from the end of a server-side assistant chain."""

    name = "takd"
    kind = "progressive (assistants)"
    formula = "response towards the last assistant of teachers -> TA_1 -> ... -> TA_n"
    paper = "Mirzadeh et al. 2020, Improved KD via Teacher Assistant"
    needs_teachers = True
    uses_assistants = True
    rank = 6
    loss = staticmethod(takd_loss)
    rows = staticmethod(takd_rows)


__all__ = ["takd_loss", "takd_rows"]
