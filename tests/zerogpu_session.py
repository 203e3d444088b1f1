"""One session of the app as ZeroGPU runs it, for test_zerogpu.py: run in a fresh interpreter
with tests/zerogpu_stub on PYTHONPATH and SPACES_ZERO_GPU=true, so bees_ants is imported the way
a Space imports it (`spaces` first: it patches torch). Drives the app through gradio_client as a
visitor with a ZeroGPU token, and prints a JSON summary as its last line.
Usage: python zerogpu_session.py <scratch folder> <Hub endpoint> <Hub token>"""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import spaces  # noqa: E402,F401  (a Space imports it before torch touches CUDA)
import torch  # noqa: E402
from gradio_client import handle_file  # noqa: E402

import bees_ants.runner as runner  # noqa: E402
import bees_ants.zerogpu as zerogpu  # noqa: E402
from app_fixtures import api_client, app_settings, running_app  # noqa: E402
from test_app import call, named, rows, train, train_args  # noqa: E402


def main(root: Path, hub_token: str) -> dict:
    summary = {"on_zero_gpu": zerogpu.on_zero_gpu(), "wrapped": hasattr(runner.training_events, "zerogpu"),
               "app_pid": os.getpid(), "cap": zerogpu.max_gpu_seconds(),
               "cuda_seems_available": torch.cuda.is_available()}
    settings = app_settings(root)
    with running_app(settings) as url:
        # A visitor as a Space's page sends them: with the token ZeroGPU counts their quota by.
        client = api_client(url, headers={"X-IP-Token": "a-visitor"})
        # A short run to the end. It must end within the GPU time it asks for, which is estimated for
        # a GPU; this stand-in's worker trains on a CPU, which other tests may keep busy: it is given
        # more time to set up (the 110 s cap still applies).
        zerogpu.SETUP_SECONDS = 90
        outputs = train(client, settings.dataset_dirs[0], arch="mobilenet_v2", epochs=3)
        final = outputs[-1]
        model = final["model"]["value"]
        summary.update(statuses=[o["status"].splitlines()[0] for o in outputs if o["status"]],
                       final_status=final["status"], model=model, model_exists=bool(model) and Path(model).is_file())
        if not model:
            raise SystemExit(final["status"])
        # A long run, cancelled once its first epoch is in
        long_run = client.submit(**train_args(settings.dataset_dirs[0], mode="finetune", epochs=500),
                                 api_name="/train")
        for out in long_run:
            if rows(named(client, "train", out)["history"]):
                break
        summary["cancel_reply"] = client.predict(api_name="/cancel")
        cancelled = named(client, "train", long_run.result())
        summary.update(cancelled_status=cancelled["status"], cancelled_result=cancelled["result"],
                       cancelled_labels=[label for label, _ in cancelled["model"]["choices"]],
                       cancelled_files=[p for _, p in cancelled["model"]["choices"] if Path(p).is_file()])
        # A dataset error inside the worker
        summary["failed_status"] = train(client, settings.dataset_dirs[1])[-1]["status"]
        # Everything else runs in the app process, where CUDA only seems available. Its val set
        # is streamed (over a 1 MB budget), as a large one would be.
        os.environ["BEES_ANTS_MEMORY_BUDGET_MB"] = "1"
        image = sorted((settings.dataset_dirs[0] / "val").rglob("*.png"))[0]
        _, _, problems, table = client.predict(model, [handle_file(str(image))], api_name="/predict")
        summary.update(predict_problems=problems, predicted=[r[1] for r in table["data"]])
        summary["explained"] = str(client.predict(model, [handle_file(str(image))], api_name="/explain"))
        summary["evaluation"] = call(client, "evaluate", model)["eval-summary"]
        summary["exported"] = Path(call(client, "export", model)["model-file"]["value"]).suffix
        summary["pushed"] = client.predict(model, "alice/zero-ants", hub_token, False, api_name="/push_to_hub")
        # A visitor whose GPU quota is used up: the scheduler refuses before any worker runs.
        os.environ["ZEROGPU_STUB_QUOTA_LEFT"] = "5"
        summary["refused_status"] = train(client, settings.dataset_dirs[0], epochs=3)[-1]["status"]
    summary["cuda_initialized"] = torch.cuda.is_initialized()
    return summary


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[3])), flush=True)
