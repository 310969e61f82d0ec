"""Session reports sent to webhooks and by e-mail when a session ends (see docs/architecture.md)."""

from ferryman.server.notifications.notifier import Notifier
from ferryman.server.notifications.senders import DeliveryError

__all__ = ["DeliveryError", "Notifier"]
