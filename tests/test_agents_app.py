"""Agents over MCP, against the running app: the server offers the agent tools alone, each one
works, and two agents are two visitors. Gradio relays every agent's call through one internal
client, so the key an agent sends (X-Bees-Ants-Key) is what tells them apart; the same key from
gradio_client is the same visitor, which is how X's draft and run are made here."""
import asyncio
import base64
import json
import shutil

import httpx
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

pytest.importorskip("mcp")

from app_fixtures import api_client, app_settings, dataset_zip, running_app  # noqa: E402
from conftest import COLOURS, write_image  # noqa: E402
from test_app import call, train_args  # noqa: E402

from bees_ants.ui.tools import AGENT_TOOLS  # noqa: E402
from bees_ants.visitors import KEY_RULE, Visitor  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:::gradio.queueing"),
              pytest.mark.filterwarnings("ignore:This MCP server includes a tool that has a gr.State input")]

X_KEY, Y_KEY = "x" * 8 + "-agent-X-0123456789abcdefghij", "y" * 8 + "-agent-Y-0123456789abcdefghij"


@pytest.fixture(scope="module")
def app(tmp_path_factory, trained_checkpoint):
    """The app with its MCP server, a shared model (shared.pt) and a model of X's own (x.pt)."""
    settings = app_settings(tmp_path_factory.mktemp("agents"))
    settings.weights_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(trained_checkpoint, settings.weights_dir / "shared.pt")
    own = Visitor(f"key:{X_KEY}").folder(settings.weights_dir)
    own.mkdir(parents=True)
    shutil.copy(trained_checkpoint, own / "x.pt")
    with running_app(settings, mcp_server=True) as url:
        yield url, settings


def agent(url: str, key: str | None, calls):
    """Run `calls(session)` as an MCP agent that sends `key` (None: no key) with every request."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def run():
        async with httpx.AsyncClient(headers={"X-Bees-Ants-Key": key} if key else {}, timeout=120) as http:
            async with streamable_http_client(url + "gradio_api/mcp/", http_client=http) as (read, write, _):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    return await calls(session)
    return asyncio.run(run())


def text(result) -> str:
    return result.content[0].text


def picture_url(tmp_path) -> str:
    picture = write_image(tmp_path / "ant.png", COLOURS["ants"], seed=7)
    return "data:image/png;base64," + base64.b64encode(picture.read_bytes()).decode()


def test_the_server_offers_the_agent_tools_alone_and_each_one_works(app, tmp_path):
    url, _ = app
    image = picture_url(tmp_path)

    async def calls(session):
        tools = (await session.list_tools()).tools
        answers = {"classify": await session.call_tool("classify", {"image": image, "model": ""})}
        for name in ("list_models", "training_status", "cancel_training"):
            answers[name] = await session.call_tool(name, {})
        page = await session.call_tool("push_to_hub", {"repo_id": "a/b", "token": "t"})
        return tools, answers, page

    tools, answers, page = agent(url, None, calls)
    assert sorted(t.name for t in tools) == sorted(AGENT_TOOLS)
    for tool in tools:  # each says what it does and what it returns
        assert len(tool.description) > 80 and "Returns:" in tool.description, tool.name
    assert not any(a.isError for a in answers.values()), {n: text(a) for n, a in answers.items()}
    assert json.loads(text(answers["classify"]))["model"] == "shared.pt"
    # Without a key an agent is nobody in particular: the shared models only, no run of its own.
    [shared] = json.loads(text(answers["list_models"]))["models"]
    assert shared["model"] == "shared.pt" and shared["classes"] == ["ants", "bees"] and not shared["yours"]
    assert "resnet18" in shared["about"]
    assert json.loads(text(answers["training_status"]))["status"] == "none"
    assert text(answers["cancel_training"]).startswith("Nothing to cancel")
    assert page.isError and "Unknown tool" in text(page)  # the page's endpoints are no tools


def test_two_agents_are_two_visitors(app, tmp_path):
    url, settings = app
    image = picture_url(tmp_path)
    x_api = api_client(url, headers={"X-Bees-Ants-Key": X_KEY})
    y_api = api_client(url, headers={"X-Bees-Ants-Key": Y_KEY})
    call(x_api, "draft_add_class", "x-secret-class")
    # X's run: long enough to be running while Y tries to cancel it; X cancels it at the end.
    run = x_api.submit(**train_args(settings.dataset_dirs[0], epochs=500), api_name="/train")
    next(iter(run))  # the job exists once /train answers
    x_model_path = str(Visitor(f"key:{X_KEY}").folder(settings.weights_dir) / "x.pt")

    async def as_y(session):
        return {"models": await session.call_tool("list_models", {}),
                "by name": await session.call_tool("classify", {"image": image, "model": "x.pt"}),
                "by path": await session.call_tool("classify", {"image": image, "model": x_model_path}),
                "status": await session.call_tool("training_status", {}),
                "cancel": await session.call_tool("cancel_training", {})}

    async def as_x(session):
        return {"models": await session.call_tool("list_models", {}),
                "classify": await session.call_tool("classify", {"image": image, "model": "x.pt"}),
                "status": await session.call_tool("training_status", {})}

    y = agent(url, Y_KEY, as_y)
    x = agent(url, X_KEY, as_x)
    assert [m["model"] for m in json.loads(text(y["models"]))["models"]] == ["shared.pt"]
    for attempt in ("by name", "by path"):  # refused like a name that does not exist
        assert y[attempt].isError and "no model named" in text(y[attempt]) and "shared.pt" in text(y[attempt])
    assert json.loads(text(y["status"]))["status"] == "none"
    assert text(y["cancel"]).startswith("Nothing to cancel")
    # X's things are still X's: listed as its own, usable, its run untouched by Y's cancel. (Its run
    # may have saved its first checkpoint by then: X's own too.)
    listed = {m["model"]: m["yours"] for m in json.loads(text(x["models"]))["models"]}
    assert {"x.pt": True, "shared.pt": False}.items() <= listed.items()
    assert all(yours for model, yours in listed.items() if model != "shared.pt")
    assert json.loads(text(x["classify"]))["model"] == "x.pt"
    status = json.loads(text(x["status"]))
    assert status["status"] in ("queued", "preparing", "scanning", "running") and status["epochs"] == 500
    # The draft: the same key from gradio_client is X; Y's key does not reach it.
    assert "x-secret-class" in call(api_client(url, headers={"X-Bees-Ants-Key": X_KEY}), "draft", None)[
        "draft-table"]
    assert "x-secret-class" not in call(y_api, "draft", None)["draft-table"]

    async def cancel(session):
        return await session.call_tool("cancel_training", {})
    assert text(agent(url, X_KEY, cancel)).startswith("Cancel requested")
    run.result()  # the stream ends with the run
    final = agent(url, X_KEY, lambda s: s.call_tool("training_status", {}))
    assert json.loads(text(final))["status"] == "cancelled"


def test_a_key_that_breaks_the_rule_is_refused_with_the_rule(app, tmp_path):
    url, _ = app
    answer = agent(url, "short", lambda s: s.call_tool("list_models", {}))
    assert answer.isError and "X-Bees-Ants-Key header must be a random secret" in text(answer)
    with pytest.raises(AppError, match="must be a random secret"):
        api_client(url, headers={"X-Bees-Ants-Key": "short"}).predict(api_name="/list_models")
    assert KEY_RULE.startswith("the X-Bees-Ants-Key header")


def test_a_dataset_named_visitors_is_listed_like_any_other(app, tmp_path):
    url, _ = app
    client = api_client(url)
    archive = dataset_zip(tmp_path / "visitors.zip", {"ants": 5, "bees": 5})
    picker = call(client, "import_dataset", handle_file(str(archive)))["dataset"]
    assert picker["value"].endswith("/visitors")
    assert picker["value"] in [path for _, path in picker["choices"]]


def test_a_file_url_as_a_model_is_an_unknown_model(app, tmp_path):
    import os

    url, settings = app
    image = picture_url(tmp_path)
    x_model = Visitor(f"key:{X_KEY}").folder(settings.weights_dir) / "x.pt"
    names = ["file://" + str(x_model), "file:///etc/passwd", "file://x.pt", "file://shared.pt"]

    async def calls(session):
        return [await session.call_tool("classify", {"image": image, "model": name}) for name in names]

    for name, answer in zip(names, agent(url, Y_KEY, calls)):
        # A long name is cut at 100 characters in the refusal (the pytest temp path may be longer).
        assert answer.isError and text(answer) == f"no model named '{name[:100]}'; the models here: shared.pt"
        assert os.getcwd() not in text(answer).replace(name, "")
    client = api_client(url)
    for name in names:
        with pytest.raises(AppError) as refused:
            client.predict(handle_file(write_image(tmp_path / "b.png", COLOURS["bees"])), name, api_name="/classify")
        assert str(refused.value) == f"no model named '{name[:100]}'; the models here: shared.pt"
