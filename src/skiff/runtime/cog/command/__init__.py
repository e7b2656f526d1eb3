"""Command-line entry points run inside the image or by skiff (``python -m cog.command.X``)."""
