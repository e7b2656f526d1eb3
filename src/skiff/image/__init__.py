"""Image building: OCI values, the layout cache, reproducible layers, sources, dependencies,
build steps and the builder. Import the modules themselves: this package imports nothing, so
that a command needing one small module (``options``, ``oci``) does not pay for all of them.

Nothing here talks to a registry except ``base``, which pulls base images into the cache.
"""
