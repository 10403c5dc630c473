"""Static files as the nodes serve them: whitenoise's compressed, hashed-name storage, which also
rewrites ES module imports to the hashed names, so a page never runs a new page.js against an old
client.js from a browser's cache after a deploy."""

from __future__ import annotations

from whitenoise.storage import CompressedManifestStaticFilesStorage


class HashedModulesStorage(CompressedManifestStaticFilesStorage):  # type: ignore[misc]  # untyped base
    support_js_module_import_aggregation = True
