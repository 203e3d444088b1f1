"""Serve the app: `python app.py` (also the Hugging Face Spaces entry point).

Listens on 0.0.0.0 so it is reachable in a container or a Space; the port comes from
GRADIO_SERVER_PORT (default 7860). Locations and limits: bees_ants/settings.py. With gradio's mcp
extra installed it is also an MCP server for agents, at /gradio_api/mcp/ (GRADIO_MCP_SERVER=false
turns that off); README.md says how to connect.
"""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

from bees_ants.runner import settle_long_lived_objects  # noqa: E402
from bees_ants.settings import Settings  # noqa: E402
from bees_ants.ui import CSS, agent_tools_only, build_app, mcp_server_enabled  # noqa: E402

if __name__ == "__main__":
    settings = Settings.from_env()
    # Nothing in the weights folder or the data root is served by URL: visitors' files are private,
    # and downloads are handed over as copies (housekeeping.download_copy).
    # 500 MB uploads: dataset zips; the importer has its own caps on what they expand to.
    app = build_app(settings)
    settle_long_lived_objects()
    # The MCP server offers agents their own few tools only (bees_ants/ui/tools.py).
    app.launch(server_name="0.0.0.0", server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
               css=CSS, ssr_mode=False, max_file_size="500mb", show_error=True,
               mcp_server=mcp_server_enabled(), app_kwargs={"lifespan": agent_tools_only(app)},
               blocked_paths=[str(settings.weights_dir.resolve()), str(settings.data_root.resolve())])
