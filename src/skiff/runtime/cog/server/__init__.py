"""Cog's HTTP prediction server (``python -m cog.server.http``)."""
