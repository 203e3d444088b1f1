"""The model anywhere, through the app: the classify tool over MCP and the API, ONNX export and a
push to a (fake, local) Hugging Face Hub from the Evaluate & export tab, each for the visitor's
own or the shared models only."""
import asyncio
import base64
import json
import shutil
from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

pytest.importorskip("mcp")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytest.importorskip("safetensors")

from app_fixtures import api_client, app_settings, running_app  # noqa: E402
from conftest import COLOURS, IMAGE_SIZE, write_image  # noqa: E402
from fake_hub import serve_fake_hub  # noqa: E402
from test_app import call, visitor_of  # noqa: E402

from bees_ants.predict import Predictor  # noqa: E402

TOKEN = "hf_app_test_token"


@pytest.fixture(scope="module")
def app(tmp_path_factory, trained_checkpoint):
    """The app with its MCP server, one shared model (shared.pt) and another visitor's private one;
    pushes go to a fake Hub. Yields (url, settings, hub endpoint, fake hub)."""
    import huggingface_hub.constants

    settings = app_settings(tmp_path_factory.mktemp("anywhere"))
    settings.weights_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(trained_checkpoint, settings.weights_dir / "shared.pt")
    private = settings.weights_dir / "visitors" / "someone-else"
    private.mkdir(parents=True)
    shutil.copy(trained_checkpoint, private / "theirs.pt")
    with serve_fake_hub(TOKEN) as (endpoint, hub), pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)  # what HF_ENDPOINT sets at import
        with running_app(settings, mcp_server=True) as url:
            yield url, settings, endpoint, hub


def mcp_session(url: str, call_with):
    """Run `call_with(session)` in an MCP client session against the app's MCP server."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def run():
        async with streamable_http_client(url) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await call_with(session)
    return asyncio.run(run())


def test_mcp_lists_classify_with_a_usable_description_and_calls_it(app, tmp_path, trained_checkpoint):
    url, *_ = app
    picture = write_image(tmp_path / "ant.png", COLOURS["ants"], seed=7)
    data_url = "data:image/png;base64," + base64.b64encode(picture.read_bytes()).decode()

    async def list_and_call(session):
        tools = (await session.list_tools()).tools
        result = await session.call_tool("classify", {"image": data_url, "model": ""})
        unknown = await session.call_tool("classify", {"image": data_url, "model": "theirs.pt"})
        return tools, result, unknown

    tools, result, unknown = mcp_session(url + "gradio_api/mcp/?tools=classify", list_and_call)
    assert [t.name for t in tools] == ["classify"]  # ?tools=classify: the agent's tool alone
    tool = tools[0]
    assert "Classify one image" in tool.description and "most likely" in tool.description
    assert set(tool.inputSchema["properties"]) == {"image", "model"}
    assert "newest model" in tool.inputSchema["properties"]["model"]["description"]
    answer = json.loads(result.content[0].text)
    expected = Predictor(trained_checkpoint).predict([picture])[0]
    assert answer["model"] == "shared.pt" and answer["classes"] == ["ants", "bees"]
    assert answer["predictions"][0]["label"] == expected.label
    assert answer["predictions"][0]["confidence"] == pytest.approx(expected.confidence, abs=1e-3)
    # Another visitor's model is not offered, by name or otherwise: the error lists what is.
    assert unknown.isError and "no model named 'theirs.pt'" in unknown.content[0].text
    assert "shared.pt" in unknown.content[0].text


def test_classify_over_the_api_explains_bad_input(app, tmp_path):
    url, *_ = app
    client = api_client(url)
    answer = json.loads(client.predict(handle_file(write_image(tmp_path / "b.png", COLOURS["bees"], seed=3)), "shared.pt",
                                       api_name="/classify"))
    assert {p["label"] for p in answer["predictions"]} == {"ants", "bees"}
    assert sum(p["confidence"] for p in answer["predictions"]) == pytest.approx(1, abs=1e-3)
    fake = tmp_path / "photo.png"
    fake.write_bytes(b"<?php system($_GET['c']); ?>")
    with pytest.raises(AppError, match="cannot classify this file: not an image"):
        client.predict(handle_file(fake), "", api_name="/classify")


def test_export_onnx_from_the_tab_runs_with_onnxruntime(app):
    import numpy as np
    import onnxruntime as ort

    url, settings, *_ = app
    client = api_client(url)
    shared = str(settings.weights_dir / "shared.pt")
    export = call(client, "export_onnx", shared)
    file, note = export["model-file"], export["model-file-note"]
    assert Path(file["value"]).name == "shared.onnx" and "onnxruntime" in note
    session = ort.InferenceSession(file["value"], providers=["CPUExecutionProvider"])
    probs = session.run(None, {"crops": np.zeros((2, 3, IMAGE_SIZE, IMAGE_SIZE), np.uint8)})[0]
    assert probs.shape == (2, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    theirs = str(settings.weights_dir / "visitors" / "someone-else" / "theirs.pt")
    with pytest.raises(AppError, match="choose a model from the list"):
        client.predict(theirs, api_name="/export_onnx")
    assert not Path(theirs).with_suffix(".onnx").exists()


def test_push_to_hub_from_the_tab(app):
    url, settings, endpoint, hub = app
    client = api_client(url)
    shared = str(settings.weights_dir / "shared.pt")
    done = client.predict(shared, "carol/ants", TOKEN, False, api_name="/push_to_hub")
    assert "Pushed to [carol/ants]" in done and "predict" in done and "confusion matrix" in done
    assert {"model.safetensors", "config.json", "README.md", "curves.png", "confusion.png"} <= set(hub.repos["carol/ants"])

    refused = client.predict(shared, "carol/other", "hf_not_the_token", False, api_name="/push_to_hub")
    assert refused.startswith("⚠") and "token is missing or invalid" in refused
    no_token = client.predict(shared, "carol/other", "", False, api_name="/push_to_hub")
    assert no_token.startswith("⚠") and "write token" in no_token
    theirs = str(settings.weights_dir / "visitors" / "someone-else" / "theirs.pt")
    stolen = client.predict(theirs, "carol/stolen", TOKEN, False, api_name="/push_to_hub")
    assert stolen == "⚠ choose a model from the list"
    assert set(hub.repos) == {"carol/ants"}


def test_own_models_are_offered_to_their_owner_alone(app, trained_checkpoint, tmp_path):
    url, settings, *_ = app
    owner, stranger = api_client(url), api_client(url)
    own = visitor_of(owner).folder(settings.weights_dir)
    own.mkdir(parents=True)
    shutil.copy(trained_checkpoint, own / "mine.pt")
    picture = handle_file(write_image(tmp_path / "a.png", COLOURS["ants"], seed=9))
    assert json.loads(owner.predict(picture, "mine.pt", api_name="/classify"))["model"] == "mine.pt"
    with pytest.raises(AppError, match="no model named 'mine.pt'"):
        stranger.predict(picture, "mine.pt", api_name="/classify")


def test_mcp_server_is_on_with_its_extra_unless_switched_off():
    from bees_ants.ui import mcp_server_enabled
    assert mcp_server_enabled({}) is True  # the mcp package is installed here (importorskip above)
    assert mcp_server_enabled({"GRADIO_MCP_SERVER": "False"}) is False
    assert mcp_server_enabled({"GRADIO_MCP_SERVER": "true"}) is True
