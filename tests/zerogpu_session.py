"""One session of the app as ZeroGPU runs it, for test_zerogpu.py: run in a fresh interpreter
with tests/zerogpu_stub on PYTHONPATH and SPACES_ZERO_GPU=true, so bees_ants is imported the way
a Space imports it. Drives the app through gradio_client and prints a JSON summary as its last
line. Usage: python zerogpu_session.py <scratch folder>"""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402

import bees_ants.runner as runner  # noqa: E402
import bees_ants.zerogpu as zerogpu  # noqa: E402
from app_fixtures import app_settings, running_app  # noqa: E402
from test_app import named, rows, train, train_args  # noqa: E402


def main(root: Path) -> dict:
    summary = {"on_zero_gpu": zerogpu.on_zero_gpu(), "wrapped": hasattr(runner.training_events, "zerogpu"),
               "app_pid": os.getpid(), "cap": zerogpu.max_gpu_seconds()}
    settings = app_settings(root)
    with running_app(settings) as url:
        client = Client(url, verbose=False)
        # A short run to the end
        outputs = train(client, settings.dataset_dirs[0], epochs=3)
        final = outputs[-1]
        model = final["model"]["value"]
        summary.update(statuses=[o["status"].splitlines()[0] for o in outputs if o["status"]],
                       final_status=final["status"], model=model, model_exists=Path(model).is_file())
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
        # Predict with the trained model, in the app process
        image = sorted((settings.dataset_dirs[0] / "val").rglob("*.png"))[0]
        _, _, problems, table = client.predict(model, [handle_file(str(image))], api_name="/predict")
        summary.update(predict_problems=problems, predicted=[r[1] for r in table["data"]])
    summary["cuda_initialized"] = torch.cuda.is_initialized()
    return summary


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))), flush=True)
