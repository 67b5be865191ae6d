"""mtransfer.speech.pretrain: continued self-supervised pretraining of a wav2vec2 encoder."""

import torch

import mtransfer as mt
from tests.test_speech import clip, ctc_data


def test_continued_pretraining_lowers_the_loss_resumes_exactly_and_trains_a_ctc_head(tiny_speech, tmp_path):
    from mtransfer.speech.pretrain import PretrainArguments, _Batches, continue_pretraining, load_for_pretraining

    clips = [clip(i, 1.0 + 0.1 * i) for i in range(8)]
    # the loss falls on a fixed batch (fixed masks and negatives)
    model, extractor = load_for_pretraining(str(tiny_speech("wav2vec2")))
    batch = _Batches(model, extractor, PretrainArguments(str(tmp_path / "x"), mask_time_length=2))(
        [(c, i) for i, c in enumerate(clips[:4])])
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    losses = []
    for _ in range(15):
        torch.manual_seed(0)  # the same Gumbel noise and dropout every step
        out = model(**batch)
        (out.loss / batch["mask_time_indices"].sum()).backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(out.loss.item())
    assert losses[-1] < 0.8 * losses[0]

    def args(out, **kw):
        return PretrainArguments(str(out), num_epochs=3, batch_size=4, learning_rate=1e-3, mask_time_length=2,
                                 progress_bar=False, **kw)

    whole = continue_pretraining(tiny_speech("wav2vec2"), clips, args(tmp_path / "a"))
    assert len(whole.history) == 3 and all(h["loss"] > 0 for h in whole.history)
    first = continue_pretraining(tiny_speech("wav2vec2"), clips, PretrainArguments(
        str(tmp_path / "b"), num_epochs=3, batch_size=4, learning_rate=1e-3, mask_time_length=2, progress_bar=False))
    import shutil

    shutil.rmtree(tmp_path / "b" / "checkpoints" / "epoch_3")  # as if killed during the last epoch
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "epoch_2")
    resumed = continue_pretraining(tiny_speech("wav2vec2"), clips, args(tmp_path / "b", resume_from_checkpoint="latest"))
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    from safetensors.torch import load_file

    a, b = load_file(f"{whole.model_dir}/model.safetensors"), load_file(f"{resumed.model_dir}/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert first.history[0] == whole.history[0]
    # the pretrained encoder is an audio backbone: a CTC head trains on it
    data = ctc_data()
    ctc = mt.TransferModel.from_backbone("audio", whole.model_dir, labels=data.vocabulary, task="ctc", seed=0)
    encoder = load_file(f"{whole.model_dir}/model.safetensors")
    key = next(k for k in encoder if k.startswith("wav2vec2.encoder.layers.0.") and k.endswith("weight"))
    assert torch.equal(ctc.adapter.backbone.state_dict()[key.removeprefix("wav2vec2.")], encoder[key])
    run = mt.TrainingArguments(output_dir=str(tmp_path / "ctc"), strategy="frozen", num_epochs=2, learning_rate=1e-2,
                               batch_size=3, progress_bar=False, report_to=[], plot=False)
    result = mt.Trainer(ctc, run, data).train()
    assert result.history[1]["train_loss"] < result.history[0]["train_loss"]
