"""An image that keeps Cog's image contract, composed here for ``skiff predict IMAGE`` tests.

It is what ``cog build`` (and skiff's builder) makes, put together by hand so that these tests
do not depend on the builder: the suite's Debian + python3 base, Cog's runtime (``cog`` and
``coglet`` wheels from PyPI, installed by uv for linux/amd64 and Python 3.11), ``python``
resolving to the image's interpreter, the model in ``/src`` with ``.cog/openapi_schema.json``,
and Env/WorkingDir/Cmd as Cog writes them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from skiff import cogschema
from skiff.image.layers import Entry, write_layer
from skiff.image.layout import Layout
from skiff.image.oci import ImageConfig, Manifest
from skiff.image.pydeps import site_entries, uv_command
from support.baseimage import python_base_layout

SITE = "/opt/cog/site-packages"
SDK = "0.23.1"


def install_cog(target: Path, uv_cache: Path) -> Path:
    """cog + coglet for the image's platform and Python, once per target folder."""
    if not (target / "coglet").is_dir():
        subprocess.run(
            [
                *uv_command(),
                "pip",
                "install",
                "--quiet",
                "--target",
                str(target),
                "--python-platform",
                "x86_64-manylinux_2_28",
                "--python-version",
                "3.11",
                "--only-binary",
                ":all:",
                f"cog=={SDK}",
            ],
            check=True,
            timeout=300,
            env={**os.environ, "UV_CACHE_DIR": str(uv_cache)},
        )
    return target


def compose(layout: Layout, model: Path, site: Path, name: str) -> None:
    """Writes the image of ``model`` into ``layout``, tagged ``name``."""
    base = python_base_layout()
    index = json.loads((base.layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"]
    manifest = Manifest.from_bytes(_blob(base.layout, manifest_digest).read_bytes())
    for descriptor in (manifest.config, *manifest.layers):
        with _blob(base.layout, str(descriptor.digest)).open("rb") as blob:
            layout.ingest(iter(lambda: blob.read(1 << 20), b""), expected=descriptor.digest)
    config = ImageConfig.from_bytes(layout.read_bytes(manifest.config.digest))
    schema = cogschema.generate(model, "predict.py:Predictor", version=SDK)
    entries = site_entries(site, SITE)
    entries.append(Entry.symlink("/usr/local/bin/python", "/usr/bin/python3"))
    for path in sorted(model.iterdir()):
        entries.append(Entry.file(f"/src/{path.name}", path))
    entries.append(Entry.file("/src/.cog/openapi_schema.json", json.dumps(schema).encode()))
    layer = write_layer(entries, layout, "gzip")
    config = (
        config.with_env(
            {
                "PYTHONPATH": SITE,
                "PYTHONUNBUFFERED": "1",
                "COG_PREDICT_TYPE_STUB": "predict.py:Predictor",
            }
        )
        .with_labels({"run.cog.version": SDK, "run.cog.openapi_schema": json.dumps(schema)})
        .with_run(cmd=["python", "-m", "cog.server.http"], working_dir="/src")
        .with_layers([layer.diff_id], "test: Cog's runtime and the model")
    )
    layout.write_image(config, [*manifest.layers, layer.descriptor], name=name)


def push(layout: Layout, name: str, registry_host: str, repo: str, scratch: Path) -> str:
    """Pushes the image ``name`` with skopeo (not skiff): the reference it is at."""
    exported = scratch / "exported"
    layout.export(name, exported)
    reference = f"{registry_host}/{repo}"
    subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-no-creds",
            f"oci:{exported}:{name}",
            f"docker://{reference}",
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )
    return reference


def _blob(layout: Path, digest: str) -> Path:
    algorithm, _, hexdigest = digest.partition(":")
    return layout / "blobs" / algorithm / hexdigest
