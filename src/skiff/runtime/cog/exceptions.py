"""Exceptions that predictor code may meet (part of Cog's public SDK surface)."""


class CancelationException(BaseException):
    """Raised inside predict() when its prediction is canceled.

    A BaseException (like KeyboardInterrupt) so that a predictor's broad
    ``except Exception`` blocks do not swallow the cancelation by accident.
    """
