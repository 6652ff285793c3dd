"""What a security tester found after issue 11's fixes: each hole with the test that shows it."""

import pytest

from .helpers import create_run, post_events


@pytest.mark.parametrize("status", [[], {}, ["failed"], {"a": 1}, 1, None])
def test_train_end_with_a_status_that_is_not_text_ends_the_run_finished(api, status):
    """A list or object as train_end's status was a 500 (unhashable): the client retried
    the batch forever and lost its epochs with it."""
    run_id = create_run(api)
    post_events(
        api,
        run_id,
        {"seq": 1, "kind": "epoch_end", "epoch": 0, "metrics": {"loss": 0.5}},
        {"seq": 2, "kind": "train_end", "data": {"status": status}},
    )
    run = api.get(f"/api/v1/runs/{run_id}").json()
    assert (run["status"], run["epochs_done"]) == ("finished", 1)
