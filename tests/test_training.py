"""The training loop: reproducibility, exact resume, checkpoints, the AdderNet step, evaluation and the sweep."""
import math
import os

import pytest
import torch

from circuits.errors import AxnetError
from dnn import workflow as T
from dnn.workflow.checkpoint import check_circuit, load_checkpoint, save_checkpoint
from dnn.data import load_mnist5k
from dnn.models import build_model

TINY = dict(model="mnist-addernet", train_limit=64, test_limit=32, batch_size=16, epochs=1)


@pytest.fixture(scope="module")
def digits():
    return load_mnist5k()


def run(tmp_path, name, digits, **kw):
    cfg = T.TrainConfig(**dict(TINY, **kw))
    data = digits.subset(cfg.train_limit, cfg.test_limit)
    return T.run_training(cfg, str(tmp_path / name), show=False, data=data)


def weights(summary):
    return {k: v.detach().cpu().clone() for k, v in summary["model_object"].state_dict().items()}  # CUDA too


def test_a_seeded_cpu_run_is_reproducible(tmp_path, digits):
    a = weights(run(tmp_path, "a", digits, seed=3))
    b = weights(run(tmp_path, "b", digits, seed=3))
    c = weights(run(tmp_path, "c", digits, seed=4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_resuming_from_a_checkpoint_reproduces_the_uninterrupted_run(tmp_path, digits):
    straight = run(tmp_path, "straight", digits, epochs=2, save_every=1)
    run(tmp_path, "cut", digits, epochs=2, save_every=1)
    cut = tmp_path / "cut"
    os.replace(cut / "epoch_0001.pt", cut / "last.pt")  # as if the run had died during epoch 2
    cfg = T.TrainConfig(**dict(TINY, epochs=2, save_every=1))
    resumed = T.run_training(cfg, str(cut), resume=True, show=False, data=digits.subset(64, 32))
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ckpt = load_checkpoint(cut / "last.pt")
    assert ckpt["epoch"] == 2 and len(ckpt["history"]["epoch"]) == 2


def test_checkpoint_holds_only_safe_types_and_the_run_files_exist(tmp_path, digits):
    run(tmp_path, "r", digits)
    raw = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert raw["model"] == "mnist-addernet" and raw["arith"] == "float" and raw["circuit_sha256"] is None
    assert raw["config"]["train_limit"] == 64
    for name in ("best.pt", "history.csv", "curves.png", "summary.json"):
        assert (tmp_path / "r" / name).stat().st_size > 0
    model = T.model_from_checkpoint(raw)
    assert torch.equal(model.conv2.weight, raw["state_dict"]["conv2.weight"])


def test_resume_refuses_changed_settings_and_missing_runs(tmp_path, digits):
    run(tmp_path, "r", digits)
    cfg = T.TrainConfig(**dict(TINY, train_limit=48))
    with pytest.raises(AxnetError, match="--limit 48 differs from the run's 64"):
        T.run_training(cfg, str(tmp_path / "r"), resume=True, show=False, data=digits.subset(64, 32))
    with pytest.raises(AxnetError, match="no last.pt"):
        T.run_training(cfg, str(tmp_path / "none"), resume=True, show=False)


def test_a_checkpoint_trained_on_one_circuit_refuses_another(tmp_path):
    ckpt = {"circuit_sha256": "a" * 64, "arith": "lut adder8"}
    check_circuit(ckpt, "a" * 64, "x.pt", "--resume")  # same circuit: fine
    check_circuit(ckpt, None, "x.pt", "--resume")  # float evaluation: fine
    with pytest.raises(AxnetError, match="x.pt: --resume refused.*aaaaaaaa"):
        check_circuit(ckpt, "b" * 64, "x.pt", "--resume")


def test_corrupt_or_foreign_checkpoints_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(AxnetError, match="bad.pt: not a checkpoint"):
        load_checkpoint(bad)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(AxnetError, match="not an axnet checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(AxnetError, match="no 'model' name"):
        save_checkpoint(tmp_path / "x.pt", {"x": 1})
        load_checkpoint(tmp_path / "x.pt")
    state = build_model("mnist-cnn").state_dict()
    save_checkpoint(tmp_path / "ok.pt", {"x": 1, "model": "mnist-cnn", "config": {}, "state_dict": state})
    assert load_checkpoint(tmp_path / "ok.pt")["x"] == 1


def test_two_ranks_split_each_global_batch_the_way_micro_batches_do():
    single = T.epoch_batches(40, 8, T.DistContext(), seed=1, epoch=2)
    ranks = [T.epoch_batches(40, 8, T.DistContext(rank=r, world=2), seed=1, epoch=2) for r in range(2)]
    assert len(single) == 5 and all(len(b) == 4 for b in ranks[0])
    for j, batch in enumerate(single):
        for r in range(2):
            assert torch.equal(ranks[r][j], batch[r::2])
    assert sorted(torch.cat(single).tolist()) == list(range(40))


def test_each_step_moves_adder_weights_by_lr_eta_sqrt_numel(tmp_path, digits):
    """The AdderNet adaptive scaling: with plain SGD the first step's update of an adder layer has norm
    lr * eta * sqrt(numel(W)) whatever the raw gradient's size; the ordinary classifier is not rescaled."""
    torch.manual_seed(0)
    cfg = T.TrainConfig(**dict(TINY, train_limit=16, momentum=0.0, weight_decay=0.0, lr=0.05, eta=0.2, augment=False))
    torch.manual_seed(cfg.seed)
    from dnn.models import build_model
    w0 = build_model(cfg.model).conv2.weight.detach().clone()
    w1 = run(tmp_path, "one", digits, **{k: getattr(cfg, k) for k in ("train_limit", "momentum", "weight_decay",
                                                                          "lr", "eta", "augment")})
    w1 = w1["model_object"].conv2.weight.detach().cpu()
    expected = 0.05 * 0.2 * math.sqrt(w0.numel())
    assert (w1 - w0).norm().item() == pytest.approx(expected, rel=1e-4)


def test_evaluate_counts_correct_predictions(digits):
    torch.manual_seed(0)
    from dnn.models import build_model
    model = build_model("mnist-cnn").eval()
    x, y = digits.test_x[:50], digits.test_y[:50]
    _, acc = T.evaluate(model, x, y, batch_size=7)
    with torch.no_grad():
        manual = sum(int(model(x[i:i + 1]).argmax(1).item() == y[i].item()) for i in range(50))
    assert acc == pytest.approx(100.0 * manual / 50)


def test_model_and_data_must_agree(tmp_path, digits):
    cfg = T.TrainConfig(**dict(TINY, model="resnet20-cnn"))
    with pytest.raises(AxnetError, match="--model resnet20-cnn expects 3x32x32 images but --data mnist5k"):
        T.run_training(cfg, str(tmp_path / "x"), show=False, data=digits.subset(64, 32))


def test_bad_settings_name_the_option(tmp_path):
    with pytest.raises(AxnetError, match="--epochs 0"):
        T.run_training(T.TrainConfig(epochs=0), str(tmp_path / "x"), show=False)
    with pytest.raises(AxnetError, match="--batch-size 1"):
        T.run_training(T.TrainConfig(batch_size=1), str(tmp_path / "x"), show=False)


def test_bits_range_and_first_drop():
    assert T.parse_bits_range("0:3", 32) == [0, 1, 2, 3] and T.parse_bits_range("5", 8) == [5]
    assert T.parse_bits_range("0:32:8", 32) == [0, 8, 16, 24, 32]
    for bad in ("3:1", "0:33", "x"):
        with pytest.raises(AxnetError, match="--approx-bits"):
            T.parse_bits_range(bad, 32)
    assert T.first_drop([0, 1, 2, 3], [98.0, 97.5, 96.9, 50.0], 98.0) == 2
    assert T.first_drop([0, 1], [98.0, 97.5], 98.0) is None


def test_batchnorm_reestimation_matches_float64_statistics_of_the_data():
    """The first BatchNorm's re-estimated statistics are the exact mean and unbiased variance of its inputs over
    all the images used, whatever the batch split; the second one's are those of its inputs when each batch is
    normalised by its own statistics (what training does), computed here the slow way."""
    torch.manual_seed(0)
    from dnn.models import build_model
    model = build_model("mnist-addernet")
    x = torch.randn(48, 1, 28, 28)
    T.reestimate_batchnorm(model, x, T.DistContext(), batches=3, batch_size=16)
    with torch.no_grad():
        c1 = model.conv1(x).double()
        assert torch.allclose(model.bn1.running_mean.double(), c1.mean((0, 2, 3)), rtol=1e-6, atol=1e-4)
        assert torch.allclose(model.bn1.running_var.double(), c1.var((0, 2, 3)), rtol=1e-5)
        inputs = []
        for s in range(0, 48, 16):
            c = c1[s:s + 16]
            mean, var = c.mean((0, 2, 3), keepdim=True), c.var((0, 2, 3), unbiased=False, keepdim=True)
            h = (c - mean) / torch.sqrt(var + model.bn1.eps) * model.bn1.weight.double().view(1, -1, 1, 1) \
                + model.bn1.bias.double().view(1, -1, 1, 1)
            inputs.append(model.conv2(torch.relu(h).float()).double())
        c2 = torch.cat(inputs)
    assert torch.allclose(model.bn2.running_mean.double(), c2.mean((0, 2, 3)), rtol=1e-5, atol=1e-3)
    assert torch.allclose(model.bn2.running_var.double(), c2.var((0, 2, 3)), rtol=1e-3)


def test_train_settings_pick_the_family_recipe_and_keep_what_is_given():
    assert T.train_settings("mnist-addernet") == dict(optimizer="adam", epochs=30, batch_size=16, lr=0.03,
                                                      weight_decay=0.0)
    assert T.train_settings("resnet20-addernet") == dict(optimizer="sgd", epochs=10, batch_size=64, lr=0.1,
                                                         weight_decay=5e-4)
    # another optimizer brings its own lr / batch / weight decay; the family keeps its epochs; given values win
    assert T.train_settings("mnist-addernet", optimizer="sgd", lr=0.2) == dict(
        optimizer="sgd", epochs=30, batch_size=64, lr=0.2, weight_decay=5e-4)
    with pytest.raises(AxnetError, match="--optimizer 'rmsprop'"):
        T.train_settings("mnist-cnn", optimizer="rmsprop")
    # checkpoints written before the optimizer option were SGD runs
    assert T.TrainConfig.from_dict({"model": "mnist-addernet", "lr": 0.2}).optimizer == "sgd"


def test_adam_steps_every_weight_by_about_lr_without_the_adaptive_scaling(tmp_path, digits):
    """Adam's first step moves each weight with a nonzero gradient by lr (up to eps): the AdderNet scaling, whose
    update norm would be lr * eta * sqrt(numel), is not applied on top."""
    from dnn.models import build_model
    torch.manual_seed(0)
    w0 = build_model("mnist-addernet").conv2.weight.detach().clone()
    w1 = run(tmp_path, "adam", digits, train_limit=16, optimizer="adam", lr=0.01, weight_decay=0.0, augment=False)
    step = (w1["model_object"].conv2.weight.detach().cpu() - w0).abs()
    assert step.max().item() == pytest.approx(0.01, rel=1e-3)
    assert (step > 0.009).float().mean().item() > 0.9
    with pytest.raises(AxnetError, match="--optimizer 'lbfgs'"):
        T.run_training(T.TrainConfig(optimizer="lbfgs"), str(tmp_path / "x"), show=False)


def test_distillation_loss_against_its_formula():
    """kd_alpha 0 is plain cross-entropy; otherwise (1-a) CE + a T^2 KL(teacher || student), here against a
    hand-written KL; a teacher that agrees with the student adds nothing."""
    torch.manual_seed(0)
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    student = torch.randn(6, 3)
    teacher = torch.nn.Linear(4, 3)
    ce = torch.nn.functional.cross_entropy(student, y)
    cfg = T.TrainConfig(kd_alpha=0.0)
    assert torch.allclose(T.training_loss(student, y, x, cfg, teacher), ce)
    cfg = T.TrainConfig(kd_alpha=0.6, kd_temperature=3.0)
    p = torch.softmax(teacher(x).detach() / 3, 1)
    q = torch.log_softmax(student / 3, 1)
    kl = (p * (p.log() - q)).sum(1).mean()
    torch.testing.assert_close(T.training_loss(student, y, x, cfg, teacher), 0.4 * ce + 0.6 * 9 * kl)
    agree = torch.nn.Linear(4, 3)
    same = agree(x).detach()
    torch.testing.assert_close(T.training_loss(same, y, x, T.TrainConfig(kd_alpha=1.0), agree), torch.tensor(0.0),
                               atol=1e-6, rtol=0)


def test_training_with_a_teacher_runs_and_checks_it(tmp_path, digits):
    run(tmp_path, "teacher", digits, model="mnist-cnn")
    student = run(tmp_path, "student", digits, teacher=str(tmp_path / "teacher" / "last.pt"))
    assert 0 <= student["final_test_acc"] <= 100
    stored = load_checkpoint(tmp_path / "student" / "last.pt")["config"]
    assert stored["teacher"].endswith("last.pt") and stored["kd_alpha"] == 0.7
    with pytest.raises(AxnetError, match="checkpoint file not found"):
        run(tmp_path, "orphan", digits, teacher=str(tmp_path / "nosuch.pt"))
    with pytest.raises(AxnetError, match="--kd-alpha 1.5"):
        run(tmp_path, "bad", digits, teacher=str(tmp_path / "teacher" / "last.pt"), kd_alpha=1.5)


def test_weight_average_follows_its_recurrence():
    """After steps t = 1..3 each averaged weight is avg += (1 - d_t)(w - avg), d_t = min(decay, (1+t)/(10+t))."""
    model = torch.nn.Linear(3, 2)
    avg = T.WeightAverage(model, decay=0.5)
    expected = model.weight.detach().clone()
    for t in range(1, 4):
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))
        avg.update(model)
        d = min(0.5, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * model.weight.detach()
    torch.testing.assert_close(avg.model.weight, expected)
    assert not avg.model.weight.requires_grad and avg.steps == 3


def test_averaged_run_saves_the_average_and_resumes_exactly(tmp_path, digits):
    straight = run(tmp_path, "straight", digits, epochs=2, save_every=1, ema=0.9)
    run(tmp_path, "cut", digits, epochs=2, save_every=1, ema=0.9)
    cut = tmp_path / "cut"
    os.replace(cut / "epoch_0001.pt", cut / "last.pt")
    cfg = T.TrainConfig(**dict(TINY, epochs=2, save_every=1, ema=0.9))
    resumed = T.run_training(cfg, str(cut), resume=True, show=False, data=digits.subset(64, 32))
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ckpt = load_checkpoint(cut / "last.pt")
    # state_dict is the average (what eval / retrain load); train_state_dict the weights the optimizer moves
    assert torch.equal(ckpt["state_dict"]["conv1.weight"], a["conv1.weight"])
    assert not torch.equal(ckpt["train_state_dict"]["conv1.weight"], a["conv1.weight"])
    assert ckpt["ema_steps"] == 2 * 64 // 16
    # the reported accuracy is the average's, with BatchNorm statistics measured for its weights
    model = T.model_from_checkpoint(ckpt)
    data = digits.subset(64, 32)
    assert T.evaluate(model, data.test_x, data.test_y)[1] == ckpt["history"]["test_acc"][-1]
    with pytest.raises(AxnetError, match="--ema 1.0"):
        run(tmp_path, "bad", digits, ema=1.0)
