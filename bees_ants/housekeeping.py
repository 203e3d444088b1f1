"""Every file the app writes has an owner and a lifetime: budgets, expiry and sweeps, in one place.

A shared server must not fill its disk, whoever visits. So each thing the app writes is either
removed after use or counted against a budget (the numbers: settings.py, BEES_ANTS_*):
- a visitor's datasets, draft and models (<data root>/visitors/<key>/, <weights dir>/visitors/<key>/)
  count against their own budget (how many datasets, how many models, how many bytes) and against
  the whole server's (bytes of all visitors together). `require_room` refuses a new dataset or run
  that would pass one, saying what to delete; catalog decides what is whose and calls it.
- they expire: a visitor's folders go after `idle_days` without a visit (signed-in visitors:
  `signed_in_idle_days`, 0 = never), with their job record. A visit is any request that lists or
  uses their things (catalog calls `touch`); <weights dir>/.visits/<key> records its time.
- downloads and exports handed to a browser are copies in a folder per visitor, the newest
  `keep_downloads` kept, each removed after `temp_minutes`; images shown in galleries go after
  `temp_minutes` too. The rest of Gradio's cache folder (uploads and the like) goes after
  `upload_minutes` (see `Housekeeper`).
- leftovers of work cut short by a kill (an import's .import-* folder, a draft's check-* files, a
  save's hidden .tmp file, a half-removed folder) are swept once older than LEFTOVER_SECONDS, which
  work still running never is: at start and every `sweep_minutes` (`Housekeeper`).
Every function takes the time as `now`, so tests move the clock instead of waiting.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

from .checkpoint import remove_stale_temp_files
from .errors import UserError
from .settings import Settings
from .visitors import PRIVATE_FOLDER, Visitor

log = logging.getLogger(__name__)

LEFTOVER_SECONDS = 600     # older than this, a work file belongs to no running work (saves, imports, checks)
TOUCH_SECONDS = 600        # a visit is recorded at most this often per visitor: expiry counts days
SPACE_USAGE_SECONDS = 60   # how long the server-wide byte count is reused
VISITS = ".visits"         # <weights dir>/.visits/<key>: mtime = last visit; text = "signed-in" or "anonymous"
DAY = 86_400.0
# Names the app's own interrupted work leaves behind: hidden ones in the data root and visitors'
# folders (importer.work_folder, `remove_folder`), and a draft's incoming files (Draft._checked_copy,
# Draft.remove_class), where nothing else lives. A dataset's name never starts with a dot.
HIDDEN_LEFTOVERS = (".import-", ".expired-")
DRAFT_LEFTOVERS = ("check-", "removed-")
APP_TEMP_PREFIX = "bees_ants-"  # the app's own temp folders in Gradio's cache folder (app_temp_folder)
# Temp folders of versions before this module (catalog.download_copy), in the system temp folder.
OLD_DOWNLOADS = "bees_ants-download-"


class BudgetExceeded(UserError):
    """A visitor (or the server) has no room for what they asked for; the message says what to do."""


DELETE_DATASET = "delete one under Train › Add your own dataset › Delete the selected dataset"
DELETE_MODEL = "delete one under Evaluate & export › Delete this model"


# -- budgets -------------------------------------------------------------------------------------

def folder_bytes(folder: Path, seen: set | None = None) -> int:
    """Bytes of the files under `folder` (links not followed; a file hard-linked twice, as a
    draft's images are into the dataset made of them, counted once); 0 for a folder that is not there."""
    seen = set() if seen is None else seen
    total = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                total += folder_bytes(Path(entry.path), seen)
            elif entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
        except OSError:  # removed meanwhile
            continue
    return total


def visitor_bytes(settings: Settings, key: str) -> int:
    seen = set()
    return sum(folder_bytes(_visitor_folder(root, key), seen) for root in _roots(settings))


_space_usage: dict[tuple, tuple[float, int]] = {}


def space_bytes(settings: Settings, now: float | None = None) -> int:
    """Bytes of all visitors' folders together, counted at most every SPACE_USAGE_SECONDS (a big
    server has many files; budgets need not be exact to the byte)."""
    now = time.time() if now is None else now
    key = tuple(str(r.resolve()) for r in _roots(settings))
    counted = _space_usage.get(key)
    if counted is None or now - counted[0] > SPACE_USAGE_SECONDS:
        seen = set()
        counted = (now, sum(folder_bytes(r / PRIVATE_FOLDER, seen) for r in _roots(settings)))
        _space_usage[key] = counted
    return counted[1]


def require_room(settings: Settings, visitor: Visitor, what: str, have: int, incoming_bytes: int = 0) -> None:
    """Refuse (BudgetExceeded) a new `what` ("dataset" or "model") for a visitor who already has
    `have` of them, or whose things (or all visitors' things) with `incoming_bytes` more would pass
    their byte budget."""
    most, delete = {"dataset": (settings.max_datasets, DELETE_DATASET), "model": (settings.max_models, DELETE_MODEL)}[what]
    if have >= most:
        raise BudgetExceeded(f"you have {have} {what}s, the most a visitor may keep; {delete}, then try again")
    used, limit = visitor_bytes(settings, visitor.key), settings.visitor_mb * 1024**2
    if used + incoming_bytes > limit:
        raise BudgetExceeded(f"your datasets and models take {_mb(used)}"
                             + (f" (and this one {_mb(incoming_bytes)} more)" if incoming_bytes else "")
                             + f", past the {_mb(limit)} a visitor may keep; {DELETE_DATASET}, or {DELETE_MODEL[7:]}")
    used, limit = space_bytes(settings), settings.space_mb * 1024**2
    if used + incoming_bytes > limit:
        raise BudgetExceeded(f"this server's room for visitors' datasets and models is full ({_mb(used)} of "
                             f"{_mb(limit)}); try again later, or run the app on your own machine (see the README)")


def _mb(n: int) -> str:
    return f"{n / 1024**2:,.0f} MB" if n >= 10 * 1024**2 else f"{n / 1024**2:.1f} MB"


# -- visits and expiry ---------------------------------------------------------------------------

_touched: dict[tuple[Path, str], float] = {}  # (weights dir, key) -> when its visit was last recorded


def touch(settings: Settings, visitor: Visitor, now: float | None = None) -> None:
    """Record that `visitor` used the app now (at most every TOUCH_SECONDS, or a tenth of their
    lifetime when that is shorter: a visitor in the middle of using the app must never look idle).
    The anonymous visitor owns nothing, so has nothing to expire."""
    if visitor.anonymous:
        return
    now = time.time() if now is None else now
    record = settings.weights_dir / VISITS / visitor.key
    last = _touched.get((record.parent, visitor.key))
    days = settings.signed_in_idle_days if visitor.signed_in else settings.idle_days
    every = min(TOUCH_SECONDS, days * DAY / 10) if days > 0 else TOUCH_SECONDS
    if last is not None and 0 <= now - last < every:
        return
    if len(_touched) > 100_000:  # forget who was seen recently; they are recorded again on their next request
        _touched.clear()
    _touched[(record.parent, visitor.key)] = now
    kind = "signed-in" if visitor.signed_in else "anonymous"
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        if not record.is_file() or record.read_text() != kind:
            record.write_text(kind)
        os.utime(record, (now, now))
    except OSError as e:  # a full or read-only disk: nothing to expire by, nothing lost either
        log.warning("cannot record a visit in %s: %s", record, e)


def expire_visitors(settings: Settings, now: float | None = None, busy: Callable[[str], bool] = lambda key: False,
                    forget: Callable[[str], object] = lambda key: None) -> list[str]:
    """Remove the folders of every visitor idle longer than their lifetime, unless `busy(key)`
    (a job of theirs is queued or running); `forget(key)` drops their job record. A visitor with
    folders but no record of a visit (things from before visits were recorded) gets one now: their
    clock starts at this sweep. Returns the keys removed."""
    now = time.time() if now is None else now
    visits = settings.weights_dir / VISITS
    keys = {p.name for p in _listing(visits) if p.is_file()}
    keys |= {p.name for root in _roots(settings) for p in _listing(root / PRIVATE_FOLDER)
             if p.is_dir() and not p.name.startswith(".")}
    removed = []
    for key in sorted(keys):
        record = visits / key
        try:
            last, kind = record.stat().st_mtime, record.read_text()
        except OSError:
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text("unknown")  # could be signed in: the longer lifetime until they visit
            os.utime(record, (now, now))
            continue
        days = settings.idle_days if kind == "anonymous" else settings.signed_in_idle_days
        if days <= 0 or now - last <= days * DAY or busy(key):
            continue
        for root in _roots(settings):
            remove_folder(_visitor_folder(root, key))
        forget(key)
        record.unlink(missing_ok=True)
        _touched.pop((visits, key), None)
        removed.append(key)
    return removed


# -- sweeps --------------------------------------------------------------------------------------

def sweep_leftovers(settings: Settings, now: float | None = None) -> list[Path]:
    """Remove what work cut short left in the folders the app owns (data root, visitors' folders,
    drafts' incoming folders, the weights folder), once older than LEFTOVER_SECONDS."""
    now = time.time() if now is None else now
    removed = remove_stale_temp_files(settings.weights_dir, LEFTOVER_SECONDS, now=now)
    folders = [(f, HIDDEN_LEFTOVERS) for f in (settings.data_root, *(r / PRIVATE_FOLDER for r in _roots(settings)))]
    for visitor in _listing(settings.data_root / PRIVATE_FOLDER):
        folders += [(visitor, HIDDEN_LEFTOVERS), (visitor / ".draft" / "incoming", DRAFT_LEFTOVERS)]
    for folder, prefixes in folders:
        for p in _listing(folder):
            if p.name.startswith(prefixes) and not p.is_symlink() and _newest_mtime(p) < now - LEFTOVER_SECONDS:
                if p.is_dir():
                    remove_folder(p)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def sweep_temp(folder: Path, max_age: float, now: float | None = None, keep: tuple[str, ...] = ()) -> list[Path]:
    """Remove the entries of a temp folder (files, or one folder per download) older than `max_age`
    seconds, and folders left empty, but those whose names start with `keep`. Age counts from an
    entry's last change of any kind (its ctime, or a later mtime): a download is a hard link to the
    checkpoint, whose modification time is when it was trained, maybe days ago; linking it is a
    change, so the copy gets its full time from the download."""
    now = time.time() if now is None else now
    removed = []
    for p in _listing(folder):
        if keep and p.name.startswith(keep):
            continue
        try:
            st = p.lstat()
            old = max(st.st_mtime, st.st_ctime) < now - max_age
            if p.is_dir() and not p.is_symlink():
                removed += sweep_temp(p, max_age, now)
                if old and not any(p.iterdir()):  # an old one: a new copy is never put into it
                    p.rmdir()
            elif old:
                p.unlink()
                removed.append(p)
        except OSError:  # removed or filled meanwhile
            continue
    return removed


def download_copy(folder: Path, visitor: Visitor, path: str, keep: int) -> str:
    """A copy of `path` to hand to the visitor's browser, in their own download folder under
    `folder`, of which only the newest `keep` stay (the sweep removes the others as they age).
    The weights folder is never served by URL (a half-written temp file or another visitor's model
    could be fetched by name); this copy is, in a folder of its own with a random name."""
    mine = folder / visitor.key
    target = mine / uuid.uuid4().hex / Path(path).name
    target.parent.mkdir(parents=True)
    try:
        os.link(path, target)  # same filesystem: no bytes copied; the original stays untouched
    except OSError:
        shutil.copyfile(path, target)
    older = sorted(_listing(mine), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for stale in [p for p in older if p != target.parent][max(keep - 1, 0):]:
        shutil.rmtree(stale, ignore_errors=True)
    return str(target)


class Housekeeper:
    """The app's sweeps: leftovers, expired visitors and temp folders, at start and then every
    `sweep_minutes` in a daemon thread. `cache` is the web framework's cache folder; the app's own
    temp folders are in it (downloads, images), so it serves them without copying them again.

    The rest of that folder is Gradio's: uploads (a folder per content hash), its copies of what the
    app shows, the pictures MCP agents send inline, and an empty `tmp*` file its File box makes for
    every file it is given. All of it goes after `upload_minutes` (ctime, as Gradio's own rule).
    Gradio's own sweep (delete_cache) is not used: in 6.x it stops for good the first time a file
    arrives while it runs ("Set changed size during iteration", seen with bench.soak), and never
    removes the agents' pictures, the folders or the tmp* files. The folder is taken to be this
    app's alone, as on a Space: a file a component showed from the start would go too (there is none)."""

    def __init__(self, settings: Settings, cache: Path,
                 busy: Callable[[str], bool] = lambda key: False, forget: Callable[[str], object] = lambda key: None):
        self.settings, self.cache, self.busy, self.forget = settings, Path(cache), busy, forget
        self.downloads, self.images = app_temp_folder(cache, "downloads"), app_temp_folder(cache, "images")
        self._stop = threading.Event()

    def download_copy(self, visitor: Visitor, path: str) -> str:
        return download_copy(self.downloads, visitor, path, self.settings.keep_downloads)

    def sweep(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        sweep_leftovers(self.settings, now)
        expire_visitors(self.settings, now, self.busy, self.forget)
        for folder in (self.downloads, self.images):
            sweep_temp(folder, self.settings.temp_minutes * 60, now)
        sweep_temp(self.cache, self.settings.upload_minutes * 60, now, keep=(APP_TEMP_PREFIX,))
        # Download folders of earlier versions, one per click, in the system temp folder.
        for old in Path(tempfile.gettempdir()).glob(OLD_DOWNLOADS + "*"):
            if old.is_dir() and not old.is_symlink() and _newest_mtime(old) < now - self.settings.temp_minutes * 60:
                shutil.rmtree(old, ignore_errors=True)

    def start(self, then: Callable[[], object] = lambda: None) -> None:
        """Sweep now, then every `sweep_minutes` until the process ends; `then()` after each sweep."""
        self.sweep()
        then()
        interval = self.settings.sweep_minutes * 60

        def loop():
            while not self._stop.wait(interval):
                try:
                    self.sweep()
                    then()
                except Exception:  # a sweep that failed must not stop the next ones
                    log.exception("housekeeping sweep failed")
        threading.Thread(target=loop, name="bees_ants-housekeeping", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


# -- helpers -------------------------------------------------------------------------------------

def app_temp_folder(cache: Path, kind: str) -> Path:
    """The app's own temp folder for `kind` ("images", "downloads") in the web framework's cache folder."""
    return Path(cache) / f"{APP_TEMP_PREFIX}{kind}"


def _roots(settings: Settings) -> tuple[Path, Path]:
    return settings.data_root, settings.weights_dir


def _visitor_folder(root: Path, key: str) -> Path:
    return Path(root) / PRIVATE_FOLDER / key


def _listing(folder: Path) -> list[Path]:
    try:
        return list(Path(folder).iterdir())
    except OSError:
        return []


def _newest_mtime(path: Path) -> float:
    """The newest modification time in `path` (a file or a whole folder): work still writing into
    a folder keeps it young."""
    try:
        newest = path.lstat().st_mtime
    except OSError:
        return float("inf")  # gone: nothing to remove
    if path.is_dir() and not path.is_symlink():
        for child in _listing(path):
            newest = max(newest, _newest_mtime(child))
    return newest


def remove_folder(folder: Path) -> None:
    """A folder removed as a whole: out of every listing at once (renamed to a hidden name beside it), then deleted; a kill
    mid-way leaves a .expired-* folder the next sweep removes."""
    if not folder.is_dir():
        return
    gone = folder.with_name(f".expired-{uuid.uuid4().hex}")
    try:
        folder.rename(gone)
    except OSError:
        gone = folder
    shutil.rmtree(gone, ignore_errors=True)
