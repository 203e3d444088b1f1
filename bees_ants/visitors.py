"""Who is asking: one `Visitor` per person or program using the app, and where their own things live.

The app decides identity once per request (`identify`, called by bees_ants/ui's `Visitors`) and
passes a Visitor down; the catalog and the job manager use only `Visitor.key` and
`Visitor.folder`, so which datasets, runs and checkpoints a visitor may see or touch is decided
below the UI, for the page, the API and MCP alike. Identity, strongest first:
- a Hugging Face account signed in through the Space's OAuth (`hf:<username>`);
- a key the client sends in the X-Bees-Ants-Key header (`key:<key>`): a random secret an API
  client or an MCP agent picks and keeps; whoever sends it is that visitor;
- a random id the browser keeps (gr.BrowserState): anonymous, but it survives reloads;
- the API client's session (gradio_client keeps one per Client object);
- else nobody in particular (`ANONYMOUS`): an MCP call without a key. Gradio's MCP server sends
  every agent's calls through one internal client, so their session is one and the same and
  names no one; such a visitor sees the shared datasets and models and owns nothing.
On disk a visitor is a hash of that identity, so folder names leak no user names or keys and
cannot be steered by what a client sends.
"""
from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError

PRIVATE_FOLDER = "visitors"  # <data root>/visitors/<key>/ and <weights dir>/visitors/<key>/
KEY_HEADER = "x-bees-ants-key"  # HTTP header names are case-insensitive; Starlette lowercases them
ANONYMOUS = "anonymous"
_BROWSER_ID = re.compile(r"^[0-9a-f]{32}$")
_KEY = re.compile(r"^[A-Za-z0-9_-]{32,128}$")  # 32 characters of a random token: unguessable
KEY_RULE = ("the X-Bees-Ants-Key header must be a random secret of 32 to 128 letters, digits, '-' or '_', "
            "e.g. from python -c \"import secrets; print(secrets.token_urlsafe(32))\"")
NEEDS_KEY = ("without a key of your own you can use the shared models only: send the header "
             "X-Bees-Ants-Key: <a random secret of 32+ letters and digits> with every request to have datasets, "
             "models and runs of your own")


@dataclass(frozen=True)
class Visitor:
    identity: str  # "hf:<user>", "key:<key>", "browser:<id>", "session:<hash>" or ANONYMOUS
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

    @property
    def anonymous(self) -> bool:
        return self.identity == ANONYMOUS

    def folder(self, root: Path) -> Path:
        """This visitor's own folder under a shared root (data root or weights folder). The
        anonymous visitor stands for any number of agents, so it has none: whatever would be
        kept there is refused with advice."""
        if self.anonymous:
            raise UserError(NEEDS_KEY)
        return Path(root) / PRIVATE_FOLDER / self.key


def new_browser_id() -> str:
    return uuid.uuid4().hex


def identify(username: str | None, browser_id: str | None, session_hash: str | None,
             key: str | None = None, via_mcp: bool = False, source: str = "") -> Visitor:
    """The visitor behind a request from network address `source`. A key that breaks the rule is
    refused (UserError): taking it for no key would hide the client's things from it without a
    word. A browser id must look like one we issued; anything else (an API client sending junk)
    falls back to the session. A call through Gradio's MCP server (`via_mcp`) carries the session
    of its internal client, shared by every agent, and a request without a session has none: both
    are ANONYMOUS."""
    if username:
        return Visitor(f"hf:{username}", username, source)
    if key is not None:
        if not isinstance(key, str) or not _KEY.match(key):
            raise UserError(KEY_RULE)
        return Visitor(f"key:{key}", source=source)
    if isinstance(browser_id, str) and _BROWSER_ID.match(browser_id):
        return Visitor(f"browser:{browser_id}", source=source)
    if session_hash and not via_mcp:
        return Visitor(f"session:{session_hash}", source=source)
    return Visitor(ANONYMOUS, source=source)
