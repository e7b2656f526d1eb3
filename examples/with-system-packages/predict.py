"""Totals the prices in a JSON document with jq (a system package) and a build step's filter."""

import subprocess

from cog import BasePredictor, Input

FILTER = "/opt/filters/total.jq"  # written by the `run:` step in cog.yaml


class Predictor(BasePredictor):
    def setup(self) -> None:
        """Check that the system package is there, once."""
        found = subprocess.run(["jq", "--version"], capture_output=True, text=True, check=True)
        self.jq = found.stdout.strip()

    def predict(
        self,
        document: str = Input(
            description='JSON like {"items": [{"price": 2}, {"price": 3.5}]}',
        ),
    ) -> str:
        """Sum the items' prices."""
        done = subprocess.run(
            ["jq", "-f", FILTER], input=document, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise ValueError(f"not a document jq can total: {done.stderr.strip()}")
        return f"total {done.stdout.strip()} ({self.jq})"
