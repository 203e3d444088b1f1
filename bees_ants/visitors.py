"""Who is asking: one `Visitor` per person using the app, and where their own things live.

The app decides identity once per request (bees_ants/ui) and passes a Visitor down; the catalog and the
job manager use only `Visitor.key`, so which datasets, runs and checkpoints a visitor may see or
touch is decided below the UI, for the page and the API alike. Identity, strongest first:
- a Hugging Face account signed in through the Space's OAuth (`hf:<username>`);
- a random id the browser keeps (gr.BrowserState): anonymous, but it survives reloads;
- the API client's session (gradio_client keeps one per Client object).
On disk a visitor is a hash of that identity, so folder names leak no user names and cannot be
steered by what a client sends.
"""
from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PRIVATE_FOLDER = "visitors"  # <data root>/visitors/<key>/ and <weights dir>/visitors/<key>/
_BROWSER_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Visitor:
    identity: str  # "hf:<user>", "browser:<id>" or "session:<hash>"
    name: str = "you"  # how the page addresses them
    # The network address the request came from: not who they are (many people share one, and one
    # person may use several), but it cannot be made up per request, so the queue shares by it.
    source: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        return hashlib.sha256(self.identity.encode()).hexdigest()[:24]

    @property
    def signed_in(self) -> bool:
        return self.identity.startswith("hf:")

    def folder(self, root: Path) -> Path:
        """This visitor's own folder under a shared root (data root or weights folder)."""
        return Path(root) / PRIVATE_FOLDER / self.key


def new_browser_id() -> str:
    return uuid.uuid4().hex


def identify(username: str | None, browser_id: str | None, session_hash: str | None, source: str = "") -> Visitor:
    """The visitor behind a request from network address `source`. A browser id must look like one
    we issued; anything else (an API client sending junk) falls back to the session."""
    if username:
        return Visitor(f"hf:{username}", username, source)
    if isinstance(browser_id, str) and _BROWSER_ID.match(browser_id):
        return Visitor(f"browser:{browser_id}", source=source)
    return Visitor(f"session:{session_hash or 'none'}", source=source)
