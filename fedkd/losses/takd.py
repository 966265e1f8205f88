"""Teacher-assistant KD (Mirzadeh et al., 2020): teachers -> assistants -> clients.

The server distils its teachers into a chain of mid-size assistants, and the last
assistant's soft targets go to the clients.

Client side this is the response loss; the chain is built by
:func:`fedkd.assistants.train_assistant_chain`.
"""

from __future__ import annotations

from fedkd.losses.soft_target import soft_target_loss, soft_target_rows

takd_loss = soft_target_loss
takd_rows = soft_target_rows

__all__ = ["takd_loss", "takd_rows"]
