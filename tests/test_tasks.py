"""mtransfer.tasks: one object per task; the rest of the package asks it instead of testing the task's name."""

import pytest
import torch

from mtransfer.heads import Head, HeadConfig
from mtransfer.speech.vocabulary import Vocabulary
from mtransfer.tasks import Task, get_task, register_task, task_names


def test_every_task_says_what_its_outputs_are():
    kinds = {name: get_task(name) for name in task_names()}
    assert [n for n, t in kinds.items() if t.transcribes] == ["ctc"] == [n for n, t in kinds.items() if t.reads_frames]
    assert [n for n, t in kinds.items() if not t.has_class_names] == ["regression"]
    assert [n for n, t in kinds.items() if t.multi_label] == ["multi_label_classification"]
    assert kinds["ctc"].metrics == ("wer", "cer") and kinds["regression"].metrics == ("mse", "mae", "r_squared")


def test_labels_decisions_and_decoding_per_task():
    single, multi, regression, ctc = (get_task(n) for n in task_names())
    assert single.labels(3) == (None, ["0", "1", "2"])
    vocab, names = ctc.labels(Vocabulary.from_texts(["ab ba"]))
    assert isinstance(vocab, Vocabulary) and names == list(vocab.symbols)
    with pytest.raises(ValueError, match="task='ctc' needs its vocabulary as labels"):
        ctc.labels(4)
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 1.0, 2.0]])
    assert single.decode(single.decisions(logits, None).tolist(), ["a", "b", "c"]) == ["a", "c"]
    head = Head(HeadConfig(task="multi_label_classification", num_outputs=3, input_dim=2))
    assert multi.decode(multi.decisions(logits, head).tolist(), ["a", "b", "c"]) == [["a", "c"], ["b", "c"]]
    reg = Head(HeadConfig(task="regression", num_outputs=1, input_dim=2))
    reg.set_target_stats(torch.tensor([[10.0], [30.0]]))
    assert regression.decode(regression.decisions(torch.tensor([[1.0]]), reg).tolist(), ["price"]) == [30.0]
    with pytest.raises(ValueError, match="use transcribe"):
        ctc.decode([[1]], ["<blank>", "a"])


def test_a_task_checks_its_head_and_a_name_is_registered_once():
    with pytest.raises(ValueError, match="a CTC head is one linear layer"):
        HeadConfig(task="ctc", num_outputs=5, input_dim=4, hidden_sizes=[8])
    with pytest.raises(ValueError, match="single_label_classification needs num_outputs >= 2"):
        HeadConfig(task="single_label_classification", num_outputs=1, input_dim=4)
    with pytest.raises(ValueError, match="task='nope'; expected one of single_label_classification, "):
        get_task("nope")

    class Again(Task):
        name = "regression"

    with pytest.raises(ValueError, match="a task named 'regression' is registered already"):
        register_task(Again)
