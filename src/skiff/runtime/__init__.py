"""Running models with Cog's own runtime (``cog`` + ``coglet`` from PyPI).

``skiff predict`` and ``skiff serve`` run Cog's server in a cached uv environment for a model
folder (``venv``, ``srcdir``), or a built image under bubblewrap (``image``); ``process`` starts
and stops it whole. The schema they and the builder use is ``skiff.cogschema``'s.
"""
