"""The run page's evaluations panel on its own (the page refreshes it when the run ends)."""

from __future__ import annotations


def test_panel_offers_the_run_checkpoints_to_members(client_for, alice, run):
    html = client_for(alice).get(f"/runs/{run.id}/evals/panel").content.decode()
    assert 'id="run-evals"' in html and 'id="run-eval-step"' in html
    assert '<option value="40">step 40</option>' in html and "csrfmiddlewaretoken" in html
    assert "<html" not in html  # a fragment, not a page


def test_viewers_see_the_panel_without_the_form_and_strangers_get_404(client_for, bob, charlie, run):
    html = client_for(bob).get(f"/runs/{run.id}/evals/panel").content.decode()
    assert 'id="run-evals"' in html and "run-eval-step" not in html
    assert client_for(charlie).get(f"/runs/{run.id}/evals/panel").status_code == 404
