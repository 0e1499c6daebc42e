"""llava.hf's splice of compressed runs into a prompt, against a loop oracle."""

from __future__ import annotations

import pytest
import torch

from llava.hf.core import splice, text_positions

IMG, VID, PAD = 9, 8, 0


def oracle(rows: list[list[int]], runs: dict[int, list[list[int]]]) -> list[list[int]]:
    """Each placeholder (in row-major order, per token) repeated as often as its run says."""
    its = {t: iter([c for run in r for c in run]) for t, r in runs.items()}
    return [[x for x in row for _ in range(next(its[x]) if x in its else 1)] for row in rows]


def batch(rows: list[list[int]], side: str):
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), PAD)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, sl], mask[i, sl] = torch.tensor(r), 1
    return ids, mask


@pytest.mark.parametrize("side", ["left", "right"])
def test_splice_equals_the_loop_oracle(side):
    rows = [
        [1, 2, IMG, IMG, IMG, 3, IMG, IMG, 4],  # two images
        [5, IMG, IMG, IMG, IMG, IMG, IMG, VID, VID, 6],  # two adjacent image runs, then a video
        [7, 7],  # text only
    ]
    runs = {IMG: [[1, 0, 1], [0, 1], [1, 1, 1], [0, 0, 1]], VID: [[0, 1]]}
    ids, mask = batch(rows, side)
    out = splice(ids, mask, {t: [torch.tensor(r) for r in rs] for t, rs in runs.items()}, pad_id=PAD)
    want = oracle(rows, runs)
    got = [row[m.bool()].tolist() for row, m in zip(out.input_ids, out.attention_mask)]
    assert got == want
    assert out.input_ids.shape[1] == max(map(len, want))
    for b, w in enumerate(want):  # left-padded, and `source` points at the original tokens
        n = len(w)
        assert out.attention_mask[b, -n:].all() and not out.attention_mask[b, :-n].any()
        assert torch.equal(ids[b, out.source[b, -n:]], torch.tensor(w))
    positions = text_positions(out.attention_mask)
    assert positions[0, -1] == len(want[0]) - 1 and positions[2, 0] == 0


def test_splice_inserts_a_run_longer_than_the_placeholder():
    """The reference layout is not a subsequence: the whole packed run stands at the first slot."""
    ids = torch.tensor([[1, IMG, IMG, 2]])
    out = splice(ids, None, {IMG: [torch.tensor([5, 0])]})
    assert out.input_ids.tolist() == [[1, IMG, IMG, IMG, IMG, IMG, 2]]
    assert out.attention_mask.dtype == torch.long and out.attention_mask.all()


def test_splice_take_maps_per_token_tensors():
    ids, mask = batch([[1, IMG, IMG, IMG, 2], [3, IMG, 4]], "left")
    out = splice(ids, mask, {IMG: [torch.tensor([1, 0, 1]), torch.tensor([0])]})
    pos = torch.arange(5).expand(3, 2, 5) * torch.tensor([1, 10, 100])[:, None, None]
    taken = out.take(pos)
    assert taken.shape == (3, 2, 4)
    assert taken[1].tolist() == [[0, 10, 30, 40], [0, 0, 20, 40]]


def test_splice_count_mismatch_is_a_clear_error():
    ids = torch.tensor([[1, IMG, IMG, 2]])
    with pytest.raises(ValueError, match=r"hold 2 placeholder tokens \(id 9\) but the 1 image\(s\) call for 3 "
                                         r"\(per image: \[3\]\)"):
        splice(ids, None, {IMG: [torch.tensor([1, 1, 1])]})


def test_resolved_config_records_the_score_that_runs(hf_llava_next, hf_onevision):
    """On a CLS-free tower the default [CLS] score runs as neg_cos, and the recorded config says
    so (also for a pipeline's vision stage); on a CLIP tower the config is the compressor's."""
    import llava.hf
    from llava.compression import build_compressor

    next_model, onevision = hf_llava_next[0], hf_onevision[0]
    comp = build_compressor("globalcom2", retention_ratio=0.25)
    assert comp.to_dict()["score"] == "cls_logits"
    assert llava.hf.resolved_config(next_model, comp) == comp.to_dict()
    on_ov = llava.hf.resolved_config(onevision, comp)
    assert on_ov == {**comp.to_dict(), "score": "neg_cos"}
    both = build_compressor("fastervlm+fastv", retention_ratio=0.1)
    assert llava.hf.resolved_config(onevision, both)["vision"]["score"] == "neg_cos"
    assert llava.hf.resolved_config(next_model, both) == both.to_dict()
    assert llava.hf.resolved_config(onevision, None) == {"name": "none"}
    with pytest.raises(ValueError, match="no \\[CLS\\] token"):
        llava.hf.resolved_config(onevision, build_compressor("globalcom2", score="cls_softmax"))
