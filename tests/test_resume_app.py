"""Resuming a stopped run from the app, through the API as a page would (gradio_client)."""
from pathlib import Path

import pytest

from app_fixtures import api_client
from bees_ants.resume import resume_path
from test_app import call, named, rows, train_args

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")


@pytest.mark.timeout(900)  # three short fine-tunes at the speed of a loaded 2-core machine
def test_a_visitor_resumes_their_own_cancelled_run_and_no_one_elses(served_app):
    url, settings = served_app
    owner, other = api_client(url), api_client(url)
    args = train_args(settings.dataset_dirs[0], mode="finetune", epochs=3, lr=0.01, optimizer="adamw", patience=0)
    run = owner.submit(**args, api_name="/train")
    for out in run:
        if rows(named(owner, "train", out)["history"]):
            break
    assert "Cancel requested" in owner.predict(api_name="/cancel")
    stopped = named(owner, "train", run.result())
    assert "Cancelled after" in stopped["status"]
    checkpoint = stopped["resumable"]  # what the page's Resume button (shown now) sends
    assert checkpoint == stopped["model"]["choices"][0][1] and resume_path(checkpoint).is_file()
    done = len(rows(stopped["history"]))

    # another visitor naming it is refused, with the words used for anything not theirs
    refused, _ = other.predict(checkpoint, api_name="/resume")  # (notice, the page's timer)
    assert "Not resumed" in refused and "your own" in refused
    assert call(other, "status")["status"].startswith("**No training yet.**")

    assert "Resuming" in owner.predict(checkpoint, api_name="/resume")[0]
    for _ in owner.submit(api_name="/follow"):  # returns once the resumed job is over
        pass
    final = call(owner, "status")
    assert "Finished 3 epochs" in final["status"] and final["resumable"] == ""
    assert [r[0] for r in rows(final["history"])] == [3, 2, 1] and done < 3
    assert not resume_path(checkpoint).exists() and Path(checkpoint).is_file()
    assert "adamw lr 0.01" in final["status"]  # the run's own settings, kept
