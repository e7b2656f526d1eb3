"""Where older predictors import it from: ``from cog.server.exceptions import ...``."""

from ..exceptions import CancelationException

__all__ = ["CancelationException"]
