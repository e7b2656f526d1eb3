"""skiff: build Cog models into OCI images without a Docker daemon and push them anywhere."""

__version__ = "0.1.0"
