"""Scoring: shared-prefix scoring equals scoring each request alone, and both equal a direct sum."""

from __future__ import annotations

import pytest
import torch
from evalhelpers import make_runwright_run

from modelcore.evaluation.lm import load_model
from modelcore.evaluation.scoring import (
    TokenRequest,
    encode_pair,
    generate_greedy,
    rolling_windows,
    score_loglikelihood,
    score_rolling,
)

QUESTIONS = {
    "The capital of France is": [" Paris", " Rome", " Madrid", " the city of Lyon"],
    "Q: What is 2 + 2?\nA:": [" 4", " 5", " twenty-two"],
    "A dog is a kind of ": ["animal", "plant"],  # trailing space moves onto the continuation
}


def _requests(model) -> list[TokenRequest]:
    return [encode_pair(model, ctx, c) for ctx, choices in QUESTIONS.items() for c in choices]


def _direct(model, r: TokenRequest) -> float:
    """log P(continuation | context) from one unbatched forward pass over the whole sequence."""
    ids = torch.tensor([list(r.context + r.continuation)])
    logp = torch.log_softmax(model.logits(ids)[0].float(), dim=-1)
    n = len(r.continuation)
    positions = range(len(r.context) - 1, len(r.context) - 1 + n)
    return sum(logp[p, t].item() for p, t in zip(positions, r.continuation, strict=True))


@pytest.fixture(scope="module")
def runwright_model(tmp_path_factory):
    return load_model(make_runwright_run(tmp_path_factory.mktemp("rw") / "run"))


@pytest.mark.parametrize("which", ["hf", "runwright"])
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_shared_prefix_equals_plain_equals_direct(which, batch_size, tiny_hf_model, runwright_model):
    model = tiny_hf_model if which == "hf" else runwright_model
    reqs = _requests(model)
    shared = score_loglikelihood(model, reqs, batch_size, share_prefix=True)
    plain = score_loglikelihood(model, reqs, batch_size, share_prefix=False)
    for r, (ll_s, greedy_s), (ll_p, greedy_p) in zip(reqs, shared, plain, strict=True):
        assert ll_s == pytest.approx(ll_p, abs=1e-4)
        assert ll_s == pytest.approx(_direct(model, r), abs=1e-4)
        assert greedy_s == greedy_p
    assert len({round(ll, 4) for ll, _ in shared}) == len(reqs)  # the model tells the choices apart


def test_encode_pair_moves_trailing_space_and_uses_prefix_token_for_empty_context(tiny_hf_model):
    m = tiny_hf_model
    r = encode_pair(m, "A dog is a kind of ", "animal")
    assert r.context == tuple(m.encode("A dog is a kind of"))
    assert m.decode(r.continuation) == " animal"
    empty = encode_pair(m, "", "Paris")
    assert empty.context == (m.prefix_token_id,)
    assert m.decode(empty.continuation) == "Paris"


def test_rolling_windows_predict_every_token_once_with_bounded_inputs():
    tokens = list(range(100, 137))
    windows = rolling_windows(tokens, prefix_token=1, max_len=8)
    predicted = [t for w in windows for t in w.continuation]
    assert predicted == tokens
    assert windows[0].context == (1,)
    t = tokens
    # After the first window each conditions on the token before it; the last, shorter one on a full window.
    assert [w.context for w in windows] == [(1,), (t[7],), (t[15],), (t[23],), tuple(t[28:32])]
    assert all(len(w.context) + len(w.continuation) - 1 <= 8 for w in windows)


def test_rolling_loglikelihood_of_a_short_text_is_the_plain_loglikelihood(tiny_hf_model):
    m = tiny_hf_model
    text = "The capital of France is Paris."
    (rolled,) = score_rolling(m, [text])
    ids = m.encode(text)
    assert rolled == pytest.approx(_direct(m, TokenRequest((m.prefix_token_id,), tuple(ids))), abs=1e-4)
    long_text = " ".join([text] * 30)
    assert len(m.encode(long_text)) > 3 * m.max_length
    (long_ll,) = score_rolling(m, [long_text])
    assert long_ll < 3 * rolled


def test_progress_counts_every_request(tiny_hf_model):
    reqs = _requests(tiny_hf_model)
    seen: list[int] = []
    score_loglikelihood(tiny_hf_model, reqs, 2, progress=seen.append)
    assert sum(seen) == len(reqs) and len(seen) > 1


@pytest.mark.parametrize("which", ["hf", "runwright"])
def test_greedy_generation_is_the_argmax_chain_cut_at_stop_strings(which, tiny_hf_model, runwright_model):
    model = tiny_hf_model if which == "hf" else runwright_model
    context = "Q: What is 2 + 2?\nA:"
    text = generate_greedy(model, context, until=[], max_gen_toks=5)
    ids = model.encode(context)
    for _ in range(5):
        nxt = int(model.logits(torch.tensor([ids]))[0, -1].argmax())
        if nxt == model.eot_token_id:
            break
        ids.append(nxt)
    assert text == model.decode(ids[len(model.encode(context)) :])
    if len(text) > 1:
        stop = text[1]
        assert generate_greedy(model, context, until=[stop], max_gen_toks=5) == text.split(stop)[0]


def test_requests_too_long_for_the_model_are_left_truncated_like_lm_eval(tiny_hf_model):
    m = tiny_hf_model
    long_ctx = "The capital of France is Paris. " * 20
    reqs = [encode_pair(m, long_ctx, " Paris"), encode_pair(m, long_ctx, " Rome")]
    assert len(reqs[0].context) > m.max_length
    shared = score_loglikelihood(m, reqs, 4, share_prefix=True)
    for r, (ll, _) in zip(reqs, shared, strict=True):
        window = TokenRequest(
            tuple(list(r.context + r.continuation)[-(m.max_length + 1) :][: -len(r.continuation)]),
            r.continuation,
        )
        assert ll == pytest.approx(_direct(m, window), abs=1e-4)


def test_models_without_logits_to_keep_score_the_same(tiny_hf_model, monkeypatch):
    reqs = _requests(tiny_hf_model)
    expected = score_loglikelihood(tiny_hf_model, reqs, 4)
    monkeypatch.setattr(tiny_hf_model, "_keeps_logits", False)
    got = score_loglikelihood(tiny_hf_model, reqs, 4)
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in expected], abs=1e-5)
