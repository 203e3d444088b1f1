"""A model that runs in a web browser: onnxruntime-web's files, and the model exported as a web page.

The page-side code is one file, static/classify.js, used by the app's live webcam (Predict tab)
and by the exported page (static/index.html) alike: it fetches the runtime, resizes and crops as
the checkpoint's recipe says, and runs the ONNX model (export.py) with onnxruntime-web.

Where the runtime's files come from: onnxruntime-web is ~15 MB of WebAssembly per build, too much
to keep in this repository. By default a page takes a pinned version from the jsdelivr CDN (a
Space's visitors have internet), and fetches each file with a Subresource Integrity hash taken from
the npm tarball, so a changed CDN file is refused instead of run. Offline (tests, CI, a machine
with no internet) BEES_ANTS_ORT_DIR names a folder holding the same files
(`npm install onnxruntime-web@ORT_VERSION` puts them in node_modules/onnxruntime-web/dist); the
app then serves them itself and an exported page carries a copy. The hashes are checked either way.

An exported page is a folder (and the same as a .zip): index.html, classify.js, model.onnx,
model.json (class names and preprocessing), runtime.json (where the runtime is, and its hashes),
and ort/ with the runtime's files when they come from a local folder. Any static host serves it.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import UserError
from .export import export_onnx
from .settings import ORT_DIR_ENV, onnxruntime_web_dir

STATIC = Path(__file__).resolve().parent / "static"  # classify.js and index.html: public files only
ORT_VERSION = "1.31.1"
ORT_CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_VERSION}/dist/"
# sha384 of each file in the npm tarball onnxruntime-web-1.31.1.tgz (npm checked its sha512):
# openssl dgst -sha384 -binary package/dist/FILE | base64
ORT_INTEGRITY = {
    "ort.wasm.min.js": "sha384-tNxIwEqSlcdvKtUte98AsccPbDKM958LBXB/+3BLS42TTihXHKTWgdqPqXI/lot8",
    "ort-wasm-simd-threaded.mjs": "sha384-L9olMNCg9w3FaNhr+m7EAeeiUpM5zy2Nlh6APnoogtFXjsL4ZZZRXlYhSVJc1r3j",
    "ort-wasm-simd-threaded.wasm": "sha384-bQJgW/bZhNOlc9KU45Zu0dyd0EFfNpkOZjfHyH/90dkZQSBBGkFTsAJaabSyYA4Z",
    "ort.webgpu.min.js": "sha384-vdDj+w5K0qlH8UgWJk1y/VQKvheIizpzLGonwCzeCc+ch0GiyjYbnJQvPvRKkbxn",
    "ort-wasm-simd-threaded.asyncify.mjs": "sha384-MZXSqYGZtrCJ8cYZ26C4RYRYYoYtDVV2GnAEL1cLiD+oOr3MrUSe3Hur4S7NidC1",
    "ort-wasm-simd-threaded.asyncify.wasm": "sha384-Da9/alSN2rEHI5XIgPPOp70/HfJ82/URSSpUwy1h4UmGMPkJtb6PoMwvcBHy5h8P",
}
# Each build: the script that defines `ort`, its glue module and its WebAssembly.
FLAVOURS = {
    "wasm": {"script": "ort.wasm.min.js", "mjs": "ort-wasm-simd-threaded.mjs", "wasm": "ort-wasm-simd-threaded.wasm"},
    "webgpu": {"script": "ort.webgpu.min.js", "mjs": "ort-wasm-simd-threaded.asyncify.mjs",
               "wasm": "ort-wasm-simd-threaded.asyncify.wasm"},
}


def local_runtime(folder: str | os.PathLike | None = None) -> Path | None:
    """The folder of onnxruntime-web files to use instead of the CDN: `folder`, else
    $BEES_ANTS_ORT_DIR, else None. Refused when it lacks the WebAssembly build."""
    folder = folder or onnxruntime_web_dir()
    if not folder:
        return None
    path = Path(folder).expanduser().resolve()
    missing = [name for name in FLAVOURS["wasm"].values() if not (path / name).is_file()]
    if missing:
        raise UserError(f"{path} lacks onnxruntime-web's {', '.join(missing)}: point {ORT_DIR_ENV} (or --ort-dir) at "
                        f"node_modules/onnxruntime-web/dist after `npm install onnxruntime-web@{ORT_VERSION}`")
    return path


def runtime_config(base: str, folder: Path | None = None) -> dict:
    """What classify.js reads as window.beesAntsRuntime: where the files are (`base`, ending in /),
    their hashes, and the builds on offer (from a local `folder`: those it holds)."""
    flavours = {name: files for name, files in FLAVOURS.items()
                if folder is None or all((folder / f).is_file() for f in files.values())}
    return {"version": ORT_VERSION, "base": base, "integrity": ORT_INTEGRITY, "flavours": flavours}


def model_description(onnx_path: str | os.PathLike) -> dict:
    """The class names and preprocessing an exported .onnx carries (export.py's metadata)."""
    import onnx  # an extra, like ONNX export itself; only the header is read

    from .export import META_FILE
    model = onnx.load(str(onnx_path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    info = json.loads(meta[META_FILE])
    return {"class_names": info["class_names"], "preprocessing": info["preprocessing"], "arch": info["arch"]}


def export_web(checkpoint, output: str | os.PathLike | None = None, ort_dir: str | os.PathLike | None = None,
               onnx_path: str | os.PathLike | None = None) -> Path:
    """The checkpoint as a web page: a folder `output` (default: the checkpoint's path with
    .web) and the same as `output`.zip beside it; returns the folder. The ONNX model is exported
    unless `onnx_path` (an up-to-date export) is given. The runtime comes from `ort_dir` (or
    $BEES_ANTS_ORT_DIR), copied into ort/, else from the CDN."""
    folder = local_runtime(ort_dir)
    output = Path(output) if output else Path(getattr(checkpoint, "path", checkpoint)).with_suffix(".web")
    # Built beside its final place, then swapped in: a half-written page never has the final name.
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    tmp.chmod(0o755)  # a page for anyone to read (mkdtemp makes it the owner's alone)
    try:
        onnx_file = tmp / "model.onnx"
        if onnx_path:
            shutil.copyfile(onnx_path, onnx_file)
        else:
            export_onnx(checkpoint, onnx_file)
        (tmp / "model.json").write_text(json.dumps(model_description(onnx_file), indent=1))
        if folder:  # only the WebAssembly build travels: the WebGPU one would double the size
            (tmp / "ort").mkdir()
            for name in FLAVOURS["wasm"].values():
                shutil.copyfile(folder / name, tmp / "ort" / name)
        config = runtime_config("ort/", tmp / "ort") if folder else runtime_config(ORT_CDN)
        (tmp / "runtime.json").write_text(json.dumps(config, indent=1))
        for name in ("index.html", "classify.js"):
            shutil.copyfile(STATIC / name, tmp / name)
        if output.exists():
            shutil.rmtree(output)
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # The zip unpacks to the folder, under its name.
    zipped = Path(f"{tmp}.zip")
    try:
        shutil.make_archive(str(tmp), "zip", output.parent, output.name)
        os.replace(zipped, output.with_name(output.name + ".zip"))
    except BaseException:
        zipped.unlink(missing_ok=True)
        raise
    return output
